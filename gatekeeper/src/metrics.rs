//! The Prometheus endpoint of `gatekeeper run`: `/metrics` in the Prometheus
//! text format and `/healthz`.
//!
//! Frame counters are read from the pinned per-CPU maps at scrape time,
//! through descriptors of their own, so a scrape never waits for a reload
//! and a reload never waits for a scrape. What only the controller knows
//! (reload results, attachments, the connector ledger) comes from
//! [`ControllerState`], which the run loop updates under a short lock.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use gatekeeper_common::counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{datapath::ConnectorLedger, live::LiveView};

/// What the controller knows that the maps do not.
#[derive(Clone, Debug, Default)]
pub struct ControllerState {
    /// Generation of the running policy.
    pub generation: u64,
    /// `enforce` or `monitor`.
    pub mode: &'static str,
    /// Source prefixes of the running policy: IPv4, IPv6.
    pub prefixes: (usize, usize),
    /// Reloads that took effect.
    pub reloads_ok: u64,
    /// Reloads rejected (bad file) or failed (map writes).
    pub reloads_failed: u64,
    /// When the running policy was installed, seconds since the Unix epoch.
    pub last_reload_unix: f64,
    /// Interfaces and XDP modes.
    pub attached: Vec<(String, &'static str)>,
    /// Per-connector bookkeeping, copied after each install.
    pub ledger: ConnectorLedger,
}

/// Shared between the run loop and the endpoint.
pub type SharedState = Arc<Mutex<ControllerState>>;

#[derive(Debug)]
struct GatekeeperCollector {
    pin_dir: PathBuf,
    state: SharedState,
}

/// Encodes one metric family: a descriptor and one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(&[(&str, &str)], M)],
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for GatekeeperCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = LiveView::open(&self.pin_dir).map_err(|_| std::fmt::Error)?;
        let totals = view.counters().map_err(|_| std::fmt::Error)?;
        let per_id = view.connector_counts().map_err(|_| std::fmt::Error)?;
        let state = self.state.lock().map_err(|_| std::fmt::Error)?.clone();
        let c = |index| ConstCounter::new(totals.get(index));

        family(
            &mut encoder,
            "gatekeeper_frames",
            "Frames the XDP program judged, by verdict (pass: not gated).",
            &[
                (&[("verdict", "pass")], ConstCounter::new(totals.passed())),
                (&[("verdict", "allow")], ConstCounter::new(totals.allowed())),
                (&[("verdict", "deny")], ConstCounter::new(totals.denied())),
                (
                    &[("verdict", "would_deny")],
                    ConstCounter::new(totals.would_deny()),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "gatekeeper_gated_syns",
            "Gated SYNs by verdict and address family.",
            &[
                (
                    &[("verdict", "allow"), ("family", "ipv4")],
                    c(counter::ALLOW_V4),
                ),
                (
                    &[("verdict", "allow"), ("family", "ipv6")],
                    c(counter::ALLOW_V6),
                ),
                (
                    &[("verdict", "deny"), ("family", "ipv4")],
                    c(counter::DENY_V4),
                ),
                (
                    &[("verdict", "deny"), ("family", "ipv6")],
                    c(counter::DENY_V6),
                ),
                (
                    &[("verdict", "would_deny"), ("family", "ipv4")],
                    c(counter::WOULD_DENY_V4),
                ),
                (
                    &[("verdict", "would_deny"), ("family", "ipv6")],
                    c(counter::WOULD_DENY_V6),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "gatekeeper_tiny_fragments",
            "First fragments without TCP flags, judged as SYNs (RFC 1858).",
            &[(&[], c(counter::TINY_FRAGMENT))],
        )?;
        family(
            &mut encoder,
            "gatekeeper_long_ipv6_chains",
            "IPv6 frames whose extension headers run past the bound, judged as SYNs.",
            &[(&[], c(counter::LONG_V6_CHAIN))],
        )?;

        family(
            &mut encoder,
            "gatekeeper_deny_events_sent",
            "Deny and would-deny events sent to the deny log.",
            &[(&[], c(counter::EVENTS_SENT))],
        )?;
        family(
            &mut encoder,
            "gatekeeper_deny_events_dropped",
            "Deny and would-deny events not logged: over the --log-rate limit, or the ring \
             buffer full.",
            &[(&[], c(counter::EVENTS_DROPPED))],
        )?;
        let sources = view.inventory_len().map_err(|_| std::fmt::Error)?;
        let sources = i64::try_from(sources).unwrap_or(i64::MAX);
        family(
            &mut encoder,
            "gatekeeper_inventory_sources",
            "Sources in the inventory (every source that sent a gated SYN, up to \
             --inventory-size).",
            &[(&[], ConstGauge::new(sources))],
        )?;

        let allowed = state.ledger.allowed(&per_id);
        let connector_labels: Vec<[(&str, &str); 1]> = allowed
            .iter()
            .map(|(name, _)| [("connector", name.as_str())])
            .collect();
        let connector_samples: Vec<(&[(&str, &str)], ConstCounter)> = connector_labels
            .iter()
            .zip(&allowed)
            .map(|(labels, (_, count))| (&labels[..], ConstCounter::new(*count)))
            .collect();
        family(
            &mut encoder,
            "gatekeeper_connector_allowed",
            "Gated SYNs allowed, by the connector whose prefix matched.",
            &connector_samples,
        )?;

        let generation = i64::try_from(state.generation).unwrap_or(i64::MAX);
        family(
            &mut encoder,
            "gatekeeper_policy_generation",
            "Generation of the running policy; grows by one per install.",
            &[(&[], ConstGauge::new(generation))],
        )?;
        let prefixes = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        family(
            &mut encoder,
            "gatekeeper_policy_prefixes",
            "Source prefixes in the running policy, by address family.",
            &[
                (&[("family", "ipv4")], prefixes(state.prefixes.0)),
                (&[("family", "ipv6")], prefixes(state.prefixes.1)),
            ],
        )?;
        family(
            &mut encoder,
            "gatekeeper_policy_reloads",
            "Policy reloads, by result (success, or failure: rejected or not installed).",
            &[
                (
                    &[("result", "success")],
                    ConstCounter::new(state.reloads_ok),
                ),
                (
                    &[("result", "failure")],
                    ConstCounter::new(state.reloads_failed),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "gatekeeper_policy_last_reload_timestamp_seconds",
            "When the running policy was installed, in seconds since the Unix epoch.",
            &[(&[], ConstGauge::new(state.last_reload_unix))],
        )?;
        let mode = |name: &str| ConstGauge::new(i64::from(state.mode == name));
        family(
            &mut encoder,
            "gatekeeper_policy_mode",
            "1 for the running policy's mode, 0 for the other.",
            &[
                (&[("mode", "enforce")], mode("enforce")),
                (&[("mode", "monitor")], mode("monitor")),
            ],
        )?;
        let attached_labels: Vec<[(&str, &str); 2]> = state
            .attached
            .iter()
            .map(|(iface, xdp_mode)| [("iface", iface.as_str()), ("xdp_mode", *xdp_mode)])
            .collect();
        let attached: Vec<(&[(&str, &str)], ConstGauge)> = attached_labels
            .iter()
            .map(|labels| (&labels[..], ConstGauge::new(1)))
            .collect();
        family(
            &mut encoder,
            "gatekeeper_attached",
            "1 for each interface the XDP program is attached to, with its mode.",
            &attached,
        )?;
        Ok(())
    }
}

#[derive(Clone)]
struct Endpoint {
    registry: Arc<Registry>,
}

/// Binds `addr`, so that a taken port fails at start-up, and returns the
/// server to run.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    pin_dir: PathBuf,
    state: SharedState,
) -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GatekeeperCollector { pin_dir, state }));
    let endpoint = Endpoint {
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(endpoint);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(async move { axum::serve(listener, app).await })
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &endpoint.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(_) => {
            let mut message = String::new();
            let _ = writeln!(message, "reading the pinned maps failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
        }
    }
}
