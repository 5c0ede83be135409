//! `gatekeeper run`: attach to live interfaces, reload the policy when it
//! changes, and clean up on the way out.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, RingBuf};
use gatekeeper_common::{DenyEvent, FAMILY_V4, MODE_MONITOR, table::DEFAULT_POOL_CHUNKS};
use notify::{RecursiveMode, Watcher as _};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    datapath::{Datapath, DatapathError, LoadSettings},
    live::{self, Attachment, LiveError, XdpChoice},
    metrics::{self, ControllerState, SharedState},
    policy::{LoadOptions, Policy, PolicyError},
};

/// What `gatekeeper run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Interfaces to attach to.
    pub ifaces: Vec<String>,
    /// The policy file.
    pub policy: PathBuf,
    /// How to attach.
    pub xdp: XdpChoice,
    /// Where to pin maps and links.
    pub pin_dir: PathBuf,
    /// Accept an enforce policy without sources.
    pub load: LoadOptions,
    /// Where to serve `/metrics` and `/healthz`; `None` serves nothing.
    pub metrics: Option<SocketAddr>,
    /// Sources the inventory remembers.
    pub inventory_size: u32,
    /// Child chunks of the source table per policy; `None` sizes it from
    /// the policy at start-up (see [`table_chunks_for`]).
    pub table_chunks: Option<u32>,
    /// Deny events each CPU may log per second.
    pub log_rate: u64,
    /// Keep the program's debug log statements and log them.
    pub ebpf_debug_log: bool,
    /// Leave the program attached and the maps pinned when the run ends,
    /// for the next run to take over without a gap; otherwise detach.
    pub keep_attached: bool,
}

/// Why `gatekeeper run` could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy file is invalid at start-up.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Loading the program or installing the policy failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Pins or attachments failed.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// Signal handlers or the file watcher could not be set up.
    #[error("setting up {what}")]
    Setup {
        /// What.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Removes the map pins when the run ends with no link left in the pin
/// directory (a start that failed before attaching, or a run told to
/// detach), so that nothing unused stays in the kernel. While a link is
/// pinned, its maps stay pinned with it.
struct MapPins(PathBuf);

impl Drop for MapPins {
    fn drop(&mut self) {
        if live::pinned_links(&self.0).is_empty() {
            live::remove_map_pins(&self.0);
        } else {
            live::remove_staging(&self.0);
        }
    }
}

/// The table size `run` picks without `--table-chunks`: twice what the
/// starting policy needs, so that it can grow, and never less than the
/// default pool.
pub fn table_chunks_for(policy: &Policy) -> u32 {
    table_chunks_reserved(crate::table::chunks_needed(
        policy
            .connectors
            .iter()
            .flat_map(|connector| &connector.sources),
    ))
}

/// [`table_chunks_for`] a policy that needs `needed` chunks.
pub fn table_chunks_reserved(needed: usize) -> u32 {
    u32::try_from(needed.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .clamp(DEFAULT_POOL_CHUNKS, MAX_TABLE_CHUNKS)
}

/// Largest table `run` accepts: 1 GiB per policy slot.
pub const MAX_TABLE_CHUNKS: u32 = 1 << 20;

/// Runs until SIGINT or SIGTERM.
///
/// # Errors
///
/// Start-up failures: an invalid policy, pins in the way, an interface that
/// cannot take the program. Reload failures are logged, never returned.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    // Nothing is touched before the policy is known to be good: a bad file
    // leaves an earlier run's program enforcing what it enforced.
    let policy = Policy::load(&config.policy, config.load)?;
    live::prepare_pin_dir(&config.pin_dir)?;
    let _lock = live::PinDirLock::acquire(&config.pin_dir)?;
    let earlier_links = live::pinned_links(&config.pin_dir);
    let earlier_maps = live::has_map_pins(&config.pin_dir);

    let settings = LoadSettings {
        inventory_size: config.inventory_size,
        ebpf_debug_log: config.ebpf_debug_log,
        table_chunks: config
            .table_chunks
            .unwrap_or_else(|| table_chunks_for(&policy)),
        ..LoadSettings::default()
    };
    // The new program and its maps are made ready beside the earlier run's,
    // which keep running until the links switch over.
    let _map_pins = MapPins(config.pin_dir.clone());
    let staging = live::staging_dir(&config.pin_dir)?;
    let mut datapath = Datapath::load_pinned(&staging, settings)?;
    if config.ebpf_debug_log
        && let Some(logger) = datapath.take_ebpf_logger(TracingLog)
    {
        // SAFETY: the logger owns its ring buffer's descriptor and keeps it
        // open, unchanged, for as long as the AsyncFd holds the logger.
        let logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
            .map_err(|error| RunError::Setup {
                what: "the eBPF log reader",
                source: Box::new(error.into_parts().1),
            })?;
        tokio::spawn(forward_ebpf_log(logger));
    }
    let generation = datapath.install(&policy)?;
    log_policy(&policy, generation, "policy loaded");
    // A burst of a tenth of a second's worth, at least one event.
    let burst = (config.log_rate / 10).max(1);
    datapath.set_log_rate(config.log_rate, burst)?;
    if earlier_maps {
        match datapath.carry_inventory(&config.pin_dir.join(gatekeeper_common::INVENTORY_MAP)) {
            Ok(sources) => tracing::info!(sources, "inventory carried over from the earlier run"),
            Err(error) => tracing::warn!(
                error = %crate::error_chain(&error),
                "the earlier run's inventory could not be carried over; it starts empty"
            ),
        }
    }
    if let Some(events) = datapath.take_events() {
        // SAFETY: the ring buffer owns its descriptor and keeps it open,
        // unchanged, until it is dropped, which happens only with the AsyncFd.
        let events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|error| RunError::Setup {
                what: "the deny-event reader",
                source: Box::new(error.into_parts().1),
            })?;
        tokio::spawn(log_deny_events(events));
    }
    live::promote_pins(&staging, &config.pin_dir)?;
    let state: SharedState = Arc::new(Mutex::new(ControllerState::default()));
    record_install(&state, &datapath, &policy);

    let mut attachments: Vec<Attachment> = Vec::new();
    for iface in &config.ifaces {
        let earlier = earlier_links
            .iter()
            .find(|(name, _, _)| name == iface)
            .map(|(_, mode, pin)| (mode.clone(), pin.clone()));
        let attachment = match earlier {
            Some((mode, pin)) => {
                let attachment = live::adopt(&mut datapath, iface, &mode, &pin)?;
                if !config.xdp.allows(attachment.mode) {
                    tracing::warn!(
                        iface = %iface,
                        xdp_mode = attachment.mode,
                        "kept the earlier run's attach mode: a link cannot change modes \
                         without detaching; `gatekeeper detach --iface` it to change"
                    );
                }
                tracing::info!(
                    iface = %iface,
                    xdp_mode = attachment.mode,
                    "took over the earlier run's link: switched to the new program atomically"
                );
                attachment
            }
            None => {
                let attachment = live::attach(&mut datapath, iface, config.xdp, &config.pin_dir)?;
                if let Some(reason) = &attachment.fallback_reason {
                    tracing::warn!(
                        iface = %attachment.iface,
                        reason = %reason,
                        "native XDP unavailable, attached in skb mode (after the kernel \
                         allocates a socket buffer)"
                    );
                }
                tracing::info!(iface = %attachment.iface, xdp_mode = attachment.mode, "attached");
                attachment
            }
        };
        if let Ok(mut state) = state.lock() {
            state
                .attached
                .push((attachment.iface.clone(), attachment.mode));
        }
        attachments.push(attachment);
    }
    // An interface the earlier run was attached to and this one is not told
    // to gate is let go: what runs is what the command line says.
    for (iface, _, _) in &earlier_links {
        if !config.ifaces.contains(iface) {
            live::detach(&config.pin_dir, Some(iface))?;
            tracing::warn!(iface = %iface, "detached: attached by an earlier run, not given as --iface now");
        }
    }

    if let Some(addr) = config.metrics {
        let server = metrics::bind(addr, config.pin_dir.clone(), Arc::clone(&state))
            .await
            .map_err(|source| RunError::Setup {
                what: "the metrics endpoint",
                source: Box::new(source),
            })?;
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(error = %error, "the metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "serving /metrics and /healthz");
    }

    let (changes, mut changed) = mpsc::unbounded_channel();
    let _watcher = watch(&config.policy, changes)?;
    let setup = |what, source: std::io::Error| RunError::Setup {
        what,
        source: Box::new(source),
    };
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| setup("the SIGHUP handler", e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| setup("the SIGINT handler", e))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| setup("the SIGTERM handler", e))?;
    tracing::info!(pin_dir = %config.pin_dir.display(), "gatekeeper running");

    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&mut datapath, &config, &state, "SIGHUP").await,
            Some(()) = changed.recv() => {
                // Editors write in several steps; let them finish.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while changed.try_recv().is_ok() {}
                if config.policy.exists() {
                    reload(&mut datapath, &config, &state, "file changed").await;
                } else {
                    tracing::warn!(
                        policy = %config.policy.display(),
                        generation = datapath.generation(),
                        "policy file deleted; keeping the running policy"
                    );
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }

    for attachment in attachments {
        let iface = attachment.iface.clone();
        if config.keep_attached {
            attachment.keep();
            tracing::info!(
                iface = %iface,
                "left attached, enforcing the last policy; the next `gatekeeper run` takes \
                 over, `gatekeeper detach` removes it"
            );
        } else {
            attachment.detach();
            tracing::info!(iface = %iface, "detached");
        }
    }
    tracing::info!("gatekeeper stopped");
    Ok(())
}

async fn reload(datapath: &mut Datapath, config: &RunConfig, state: &SharedState, trigger: &str) {
    let running = datapath.generation();
    // Reading and parsing a large file takes a while (about 0.7 s for a
    // million prefixes), and a file on a network file system may block: off
    // the runtime's one thread, so that /metrics and /healthz keep answering.
    let (path, load) = (config.policy.clone(), config.load);
    let loaded = tokio::task::spawn_blocking(move || Policy::load(&path, load)).await;
    let policy = match loaded {
        Ok(Ok(policy)) => policy,
        Err(panic) => {
            record_failure(state);
            tracing::error!(
                trigger,
                generation = running,
                error = %panic,
                "reading the policy failed; the running policy stays"
            );
            return;
        }
        Ok(Err(error)) => {
            record_failure(state);
            tracing::error!(
                trigger,
                generation = running,
                error = %error,
                "policy rejected; the running policy stays"
            );
            return;
        }
    };
    match datapath.install(&policy) {
        Ok(generation) => {
            log_policy(&policy, generation, "policy reloaded");
            record_install(state, datapath, &policy);
            if let Ok(mut state) = state.lock() {
                state.reloads_ok += 1;
            }
        }
        Err(error) => {
            record_failure(state);
            tracing::error!(
                trigger,
                generation = running,
                error = %crate::error_chain(&error),
                "policy could not be installed; the running policy stays"
            );
        }
    }
}

/// Updates what the metrics endpoint reports about the running policy.
fn record_install(state: &SharedState, datapath: &Datapath, policy: &Policy) {
    let Ok(mut state) = state.lock() else {
        return;
    };
    state.generation = datapath.generation();
    state.mode = match policy.mode {
        crate::policy::Mode::Enforce => "enforce",
        crate::policy::Mode::Monitor => "monitor",
    };
    state.prefixes = policy.source_counts();
    state.last_reload_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    state.ledger = datapath.ledger();
}

fn record_failure(state: &SharedState) {
    if let Ok(mut state) = state.lock() {
        state.reloads_failed += 1;
    }
}

fn log_policy(policy: &Policy, generation: u64, message: &str) {
    let (v4, v6) = policy.source_counts();
    tracing::info!(
        generation,
        mode = %policy.mode,
        connectors = policy.connectors.len(),
        ipv4_prefixes = v4,
        ipv6_prefixes = v6,
        "{message}"
    );
}

/// Watches the policy file's directory (so that a file replaced by rename,
/// as editors save, is still seen) and sends a unit for each event that
/// touches the file.
fn watch(
    policy: &Path,
    changes: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, RunError> {
    let setup = |source: notify::Error| RunError::Setup {
        what: "the policy file watcher",
        source: Box::new(source),
    };
    let file_name = policy.file_name().map(ToOwned::to_owned);
    let dir = match policy.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|path| path.file_name() == file_name.as_deref())
        {
            let _ = changes.send(());
        }
    })
    .map_err(setup)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(setup)?;
    Ok(watcher)
}

/// Logs each deny event the program sends, one line each.
async fn log_deny_events(mut events: AsyncFd<RingBuf<MapData>>) {
    loop {
        let Ok(mut guard) = events.readable_mut().await else {
            tracing::error!("the deny-event ring buffer cannot be read; deny logging stops");
            return;
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if let Some(event) = parse_event(&item) {
                log_event(&event);
            }
        }
        guard.clear_ready();
    }
}

fn parse_event(bytes: &[u8]) -> Option<DenyEvent> {
    if bytes.len() < size_of::<DenyEvent>() {
        return None;
    }
    // SAFETY: the length is checked; DenyEvent is plain old data and the
    // read tolerates any alignment.
    Some(unsafe { bytes.as_ptr().cast::<DenyEvent>().read_unaligned() })
}

fn log_event(event: &DenyEvent) {
    let (family, source, destination) = if event.family == FAMILY_V4 {
        let v4 =
            |bytes: &[u8; 16]| std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]);
        ("ipv4", v4(&event.source), v4(&event.destination))
    } else {
        (
            "ipv6",
            std::net::IpAddr::from(event.source),
            std::net::IpAddr::from(event.destination),
        )
    };
    let iface = interface_name(event.ifindex);
    let (verdict, mode) = if event.mode == MODE_MONITOR {
        ("would-deny", "monitor")
    } else {
        ("deny", "enforce")
    };
    tracing::info!(
        target: "gatekeeper::deny",
        %source,
        source_port = event.source_port,
        %destination,
        destination_port = event.destination_port,
        iface,
        family,
        mode,
        "{verdict}"
    );
}

fn interface_name(ifindex: u32) -> String {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname needs.
    let name = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Forwards the program's aya-log records to tracing, under the target
/// `gatekeeper::ebpf`.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(target: "gatekeeper::ebpf", "{}", record.args());
    }

    fn flush(&self) {}
}

async fn forward_ebpf_log(mut logger: AsyncFd<aya_log::EbpfLogger<TracingLog>>) {
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            tracing::error!("the eBPF log ring buffer cannot be read; eBPF logging stops");
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
