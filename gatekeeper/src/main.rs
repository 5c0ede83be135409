//! The `gatekeeper` command line.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use gatekeeper::{
    datapath::{Datapath, DatapathError, Verdict, XDP_DROP},
    live::{self, DEFAULT_PIN_DIR, LiveView, XdpChoice},
    policy::{LoadOptions, Policy, PolicyError},
    replay::{CaptureReader, ReplayedFrame, replay_frame},
    run::RunConfig,
};
use serde_json::json;

/// An XDP allowlist for the SMTP port: only the connectors named in the policy
/// may open SMTP connections; SYNs from everywhere else are dropped (enforce)
/// or counted (monitor) before the kernel allocates anything for them.
#[derive(Debug, Parser)]
#[command(name = "gatekeeper", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the real XDP program over a packet capture and print, frame by
    /// frame, what gatekeeper would do with it under a policy.
    ///
    /// Loads the program into the kernel (needs root, or CAP_BPF and
    /// CAP_NET_ADMIN) without attaching it to any interface, and runs each
    /// frame through it with BPF_PROG_RUN. Verdicts: `pass` (not gated),
    /// `allow CONNECTOR`, `deny` (dropped in enforce mode) and `would-deny`
    /// (passed but counted in monitor mode).
    Replay(ReplayArgs),
    /// Attach the XDP program to live interfaces and enforce the policy.
    ///
    /// Loads the program, installs the policy, attaches to each interface
    /// and pins the links and maps under the pin directory, then runs until
    /// SIGINT or SIGTERM. When an earlier run left its program attached,
    /// this one takes over: it loads its own program with the policy, then
    /// switches each earlier link to it atomically, so the interface is
    /// never without a filter. On exit the program stays attached (see
    /// --detach-on-exit). The policy is reloaded on SIGHUP and whenever the
    /// file changes; a file that does not parse or load is rejected and the
    /// running policy stays.
    Run(RunArgs),
    /// Show the running gatekeeper: interfaces, policy and counters, read
    /// from the pinned maps.
    Status(StatusArgs),
    /// Tell which connector admits an address: exit 0 when one does, 1 when
    /// none does, 2 on error.
    Check(CheckAddrArgs),
    /// List the sources that sent gated SYNs, most attempts first, with the
    /// connector of the live policy that admits each (or `unauthorized`).
    ///
    /// The monitor-first workflow: run in monitor mode, list the sources
    /// with `--unauthorized`, review them, and append the connector that
    /// `--suggest` prints to the policy for those that are legitimate.
    Inventory(InventoryArgs),
    /// Remove a gatekeeper's links and pins: the program stops gating.
    ///
    /// `gatekeeper run` leaves its program attached when it stops (unless
    /// run with --detach-on-exit), so this is how gating ends. Stop a
    /// running `gatekeeper run` first: it holds its links open, and they
    /// stay attached until it exits.
    Detach(DetachArgs),
}

#[derive(Debug, Args)]
struct PinDirArg {
    /// Where the maps and links are pinned (on a bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum XdpModeArg {
    /// Native mode, falling back to skb mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic mode only.
    Skb,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EbpfLog {
    /// No log statements in the program.
    Off,
    /// One debug line per gated SYN.
    Debug,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// An interface to attach to; repeat for several.
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// The policy file (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// How to attach the XDP program.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    #[command(flatten)]
    pins: PinDirArg,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Where to serve Prometheus metrics (/metrics) and /healthz, as
    /// ADDRESS:PORT; `off` serves nothing.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9925", value_parser = parse_metrics)]
    metrics: MetricsAddr,
    /// Sources each CPU's inventory remembers, rounded up to a power of two.
    /// Each CPU keeps its own, in sets of four sources picked by a keyed
    /// hash; a source new to a full set replaces the one seen least recently
    /// there. 48 bytes per source per CPU.
    #[arg(long, value_name = "N", default_value_t = gatekeeper::datapath::DEFAULT_INVENTORY_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=(1 << 22)))]
    inventory_size: u32,
    /// Chunks of 1 KiB in the source table of each of the two policy slots
    /// (the live one and the one a reload writes). A reload whose policy
    /// needs more is refused and the running policy stays. Without it, twice
    /// what the starting policy needs, and at least 4096.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(gatekeeper::run::MAX_TABLE_CHUNKS)))]
    table_chunks: Option<u32>,
    /// Deny and would-deny events each CPU may log per second (with a burst
    /// of a tenth of that); the rest are counted, not logged. 0 logs none.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    log_rate: u64,
    /// The XDP program's own log: `debug` logs one line per gated SYN (for
    /// troubleshooting; it costs a ring-buffer write per SYN), `off` compiles
    /// the log statements out at load.
    #[arg(long, value_enum, default_value = "off")]
    ebpf_log: EbpfLog,
    /// When the run ends (SIGTERM, SIGINT), leave the program attached and
    /// its maps pinned, enforcing the last policy, for the next `gatekeeper
    /// run` to take over without a gap. The default: a crash leaves it
    /// attached anyway, and a clean stop behaves the same, so restarts and
    /// upgrades never leave the port open. `gatekeeper detach` removes it.
    #[arg(long, overrides_with = "detach_on_exit")]
    keep_attached: bool,
    /// When the run ends, detach from every interface and remove the pins:
    /// the port is open to everyone until the next run.
    #[arg(long, overrides_with = "keep_attached")]
    detach_on_exit: bool,
    #[command(flatten)]
    load: LoadArgs,
}

/// `--metrics`: an address, or `off`.
#[derive(Clone, Debug)]
struct MetricsAddr(Option<std::net::SocketAddr>);

fn parse_metrics(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr(None));
    }
    text.parse()
        .map(|addr| MetricsAddr(Some(addr)))
        .map_err(|_| format!("{text:?} is neither ADDRESS:PORT (such as 127.0.0.1:9925) nor off"))
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pins: PinDirArg,
}

#[derive(Debug, Args)]
struct CheckAddrArgs {
    /// An IPv4 or IPv6 address.
    addr: std::net::IpAddr,
    /// Judge by this policy file instead of the live policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    pins: PinDirArg,
}

#[derive(Debug, Args)]
struct InventoryArgs {
    /// Only sources no connector admits.
    #[arg(long)]
    unauthorized: bool,
    /// Print one JSON object per source, one per line.
    #[arg(long, conflicts_with = "suggest")]
    json: bool,
    /// At most this many sources.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print a [[connector]] table admitting the unauthorized sources, to
    /// review and append to the policy.
    #[arg(long)]
    suggest: bool,
    #[command(flatten)]
    pins: PinDirArg,
}

#[derive(Debug, Args)]
struct DetachArgs {
    /// Only this interface; every interface when left out.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    #[command(flatten)]
    pins: PinDirArg,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and summarize it; exit 0 when valid, 1 with
    /// every problem found otherwise.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The policy file (TOML).
    file: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Accept an enforce-mode policy without any source, which drops every
    /// gated SYN.
    #[arg(long)]
    allow_empty: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The policy file (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The capture: pcap or pcapng, Ethernet link type (as `tcpdump -w`
    /// writes on an Ethernet interface).
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
    /// Print one JSON object per frame and a summary object, one per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    load: LoadArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(PolicyCommand::Check(args)) => policy_check(&args),
        Command::Replay(args) => replay(&args),
        Command::Run(args) => run(args),
        Command::Status(args) => status(&args),
        Command::Check(args) => return check(&args),
        Command::Inventory(args) => inventory(&args),
        Command::Detach(args) => detach(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_policy(path: &Path, load: &LoadArgs) -> Result<Policy, PolicyError> {
    Policy::load(
        path,
        LoadOptions {
            allow_empty: load.allow_empty,
        },
    )
}

fn policy_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let policy = match load_policy(&args.file, &args.load) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };

    let mut out = io::stdout().lock();
    writeln!(out, "{}: valid", args.file.display())?;
    write_summary(&mut out, &policy)?;
    Ok(ExitCode::SUCCESS)
}

fn write_summary(out: &mut impl io::Write, policy: &Policy) -> io::Result<()> {
    let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
    writeln!(out, "  mode:         {}", policy.mode)?;
    writeln!(out, "  ports:        {}", ports.join(", "))?;
    let (dest_v4, dest_v6) = policy.destination_counts();
    if policy.destinations.is_empty() {
        writeln!(out, "  destinations: every local address")?;
    } else {
        writeln!(out, "  destinations: {dest_v4} IPv4, {dest_v6} IPv6")?;
    }
    let (v4, v6) = policy.source_counts();
    writeln!(
        out,
        "  connectors:   {} ({v4} IPv4 and {v6} IPv6 source prefixes)",
        policy.connectors.len()
    )?;
    for connector in &policy.connectors {
        let v4 = connector
            .sources
            .iter()
            .filter(|net| net.addr().is_ipv4())
            .count();
        let v6 = connector.sources.len() - v4;
        writeln!(out, "    {:<24} {v4} IPv4, {v6} IPv6", connector.name)?;
    }
    let needed = gatekeeper::table::chunks_needed(
        policy
            .connectors
            .iter()
            .flat_map(|connector| &connector.sources),
    );
    let reserved = gatekeeper::run::table_chunks_reserved(needed);
    writeln!(
        out,
        "  table:        {needed} chunks of 1 KiB per policy slot; `run` reserves {reserved} \
         ({:.1} MiB for both slots)",
        gatekeeper::datapath::table_bytes(reserved) as f64 / (1024.0 * 1024.0)
    )?;
    Ok(())
}

/// Running totals of a replay.
#[derive(Default)]
struct Totals {
    frames: u64,
    skipped: u64,
    by_verdict: BTreeMap<&'static str, u64>,
    by_connector: BTreeMap<String, u64>,
}

fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let policy = match load_policy(&args.policy, &args.load) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let frames = CaptureReader::open(&args.pcap)?;
    let mut datapath = Datapath::load().map_err(explain_load_error)?;
    datapath
        .install(&policy)
        .context("installing the policy into the XDP program's maps")?;

    let mut out = io::stdout().lock();
    let mut totals = Totals::default();
    for frame in frames {
        let frame = frame?;
        let replayed = replay_frame(&mut datapath, &frame)
            .with_context(|| format!("replaying frame {}", frame.number))?;
        totals.count(&replayed);
        if args.json {
            writeln!(out, "{}", frame_json(&replayed))?;
        } else {
            writeln!(out, "{}", frame_line(&replayed))?;
        }
    }
    if args.json {
        writeln!(out, "{}", summary_json(&totals))?;
    } else {
        write_totals(&mut out, &totals)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn explain_load_error(error: DatapathError) -> anyhow::Error {
    anyhow::Error::new(error).context(
        "loading the XDP program (replay runs it in the kernel: run as root, \
         or with CAP_BPF and CAP_NET_ADMIN)",
    )
}

impl Totals {
    fn count(&mut self, frame: &ReplayedFrame) {
        self.frames += 1;
        match &frame.outcome {
            Some(outcome) => {
                *self.by_verdict.entry(outcome.verdict.name()).or_default() += 1;
                if let Verdict::Allow(name) = &outcome.verdict {
                    *self.by_connector.entry(name.clone()).or_default() += 1;
                }
            }
            None => self.skipped += 1,
        }
    }

    fn verdict(&self, name: &str) -> u64 {
        self.by_verdict.get(name).copied().unwrap_or(0)
    }
}

fn frame_line(frame: &ReplayedFrame) -> String {
    let Some(outcome) = &frame.outcome else {
        let number = format!("{}:", frame.number);
        return format!(
            "frame {number:<6} skipped ({} bytes is shorter than an Ethernet header)",
            frame.length
        );
    };
    let number = format!("{}:", frame.number);
    let mut line = format!("frame {number:<6} {:<26}", outcome.verdict.to_string());
    if let Some(summary) = &frame.summary {
        line.push_str(&format!(" {summary}"));
    }
    if outcome.tiny_fragment {
        line.push_str(" (first fragment without TCP flags, judged as a SYN)");
    }
    if outcome.long_chain {
        line.push_str(" (IPv6 extension headers past the bound, judged as a SYN)");
    }
    line.trim_end().to_owned()
}

fn frame_json(frame: &ReplayedFrame) -> serde_json::Value {
    let Some(outcome) = &frame.outcome else {
        return json!({
            "frame": frame.number,
            "verdict": "skipped",
            "reason": "shorter than an Ethernet header",
            "length": frame.length,
        });
    };
    json!({
        "frame": frame.number,
        "verdict": outcome.verdict.name(),
        "connector": outcome.verdict.connector(),
        "action": if outcome.action == XDP_DROP { "drop" } else { "pass" },
        "length": frame.length,
        "tiny_fragment": outcome.tiny_fragment,
        "long_v6_chain": outcome.long_chain,
        "packet": frame.summary,
    })
}

fn summary_json(totals: &Totals) -> serde_json::Value {
    json!({
        "summary": {
            "frames": totals.frames,
            "pass": totals.verdict("pass"),
            "allow": totals.verdict("allow"),
            "deny": totals.verdict("deny"),
            "would_deny": totals.verdict("would-deny"),
            "skipped": totals.skipped,
            "allow_by_connector": totals.by_connector,
        }
    })
}

fn write_totals(out: &mut impl io::Write, totals: &Totals) -> io::Result<()> {
    writeln!(
        out,
        "{} frames: {} pass, {} allow, {} deny, {} would-deny, {} skipped",
        totals.frames,
        totals.verdict("pass"),
        totals.verdict("allow"),
        totals.verdict("deny"),
        totals.verdict("would-deny"),
        totals.skipped,
    )?;
    for (name, count) in &totals.by_connector {
        writeln!(out, "  allow {name}: {count}")?;
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let level = if matches!(args.ebpf_log, EbpfLog::Debug) {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match args.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    let config = RunConfig {
        ifaces: args.ifaces,
        policy: args.policy,
        xdp: match args.xdp_mode {
            XdpModeArg::Auto => XdpChoice::Auto,
            XdpModeArg::Native => XdpChoice::Native,
            XdpModeArg::Skb => XdpChoice::Skb,
        },
        pin_dir: args.pins.pin_dir,
        load: LoadOptions {
            allow_empty: args.load.allow_empty,
        },
        metrics: args.metrics.0,
        inventory_size: args.inventory_size,
        table_chunks: args.table_chunks,
        log_rate: args.log_rate,
        ebpf_debug_log: matches!(args.ebpf_log, EbpfLog::Debug),
        keep_attached: !args.detach_on_exit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(gatekeeper::run::run(config)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            tracing::error!(error = %gatekeeper::error_chain(&error), "gatekeeper run failed");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let view = LiveView::open(&args.pins.pin_dir)?;
    let interfaces = view.interfaces();
    let policy = view.policy()?;
    let counters = view.counters()?;
    let per_connector = view.connector_counts()?;
    let connectors: Vec<(String, u64)> = policy
        .as_ref()
        .map(|policy| {
            policy
                .connectors
                .iter()
                .map(|(id, name)| (name.clone(), per_connector[*id as usize]))
                .collect()
        })
        .unwrap_or_default();
    let rows = live::verdict_rows(&counters);

    let mut out = io::stdout().lock();
    if args.json {
        let verdicts: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, v4, v6)| (name.replace('-', "_"), json!({"ipv4": v4, "ipv6": v6})))
            .collect();
        let value = json!({
            "interfaces": interfaces
                .iter()
                .map(|(iface, mode)| json!({"name": iface, "xdp_mode": mode}))
                .collect::<Vec<_>>(),
            "policy": policy.as_ref().map(|policy| json!({
                "mode": policy.mode,
                "generation": policy.generation,
                "loaded_at_unix_ns": policy.loaded_at_ns,
                "ports": policy.ports,
                "ipv4_prefixes": policy.sources_v4,
                "ipv6_prefixes": policy.sources_v6,
                "destinations": policy.destinations,
            })),
            "counters": {
                "seen": counters.seen(),
                "pass": counters.passed(),
                "verdicts": verdicts,
            },
            "connectors": connectors
                .iter()
                .map(|(name, allowed)| json!({"name": name, "allowed": allowed}))
                .collect::<Vec<_>>(),
        });
        writeln!(out, "{value}")?;
        return Ok(ExitCode::SUCCESS);
    }

    if interfaces.is_empty() {
        writeln!(out, "interfaces: none attached")?;
    }
    for (iface, mode) in &interfaces {
        writeln!(out, "interface {iface}: attached ({mode} mode)")?;
    }
    match &policy {
        None => writeln!(out, "policy: none installed (everything passes)")?,
        Some(policy) => {
            let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
            let age = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|now| {
                    now.as_nanos()
                        .saturating_sub(u128::from(policy.loaded_at_ns))
                })
                .unwrap_or(0)
                / 1_000_000_000;
            writeln!(
                out,
                "policy: generation {}, {} mode, loaded {age} s ago",
                policy.generation, policy.mode
            )?;
            writeln!(out, "  ports: {}", ports.join(", "))?;
            writeln!(
                out,
                "  connectors: {} ({} IPv4 and {} IPv6 source prefixes)",
                policy.connectors.len(),
                policy.sources_v4,
                policy.sources_v6
            )?;
            if policy.destinations == 0 {
                writeln!(out, "  destinations: every local address")?;
            } else {
                writeln!(out, "  destinations: {} prefixes", policy.destinations)?;
            }
        }
    }
    writeln!(
        out,
        "frames: {} seen, {} passed without being gated",
        counters.seen(),
        counters.passed()
    )?;
    writeln!(out, "gated SYNs:       IPv4       IPv6")?;
    for (name, v4, v6) in rows {
        writeln!(out, "  {name:<12} {v4:>10} {v6:>10}")?;
    }
    if !connectors.is_empty() {
        writeln!(out, "allowed per connector:")?;
        for (name, allowed) in &connectors {
            writeln!(out, "  {name:<32} {allowed:>10}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckAddrArgs) -> ExitCode {
    let verdict = match &args.policy {
        Some(path) => match Policy::load(path, LoadOptions { allow_empty: true }) {
            Ok(policy) => Ok(policy
                .connector_for(args.addr)
                .map(|(connector, prefix)| format!("{} (by {prefix})", connector.name))),
            Err(error) => Err(anyhow::Error::new(error)),
        },
        None => LiveView::open(&args.pins.pin_dir)
            .and_then(|view| view.connector_for(args.addr))
            .map_err(anyhow::Error::new),
    };
    match verdict {
        Ok(Some(connector)) => {
            println!("{} is admitted by connector {connector}", args.addr);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{} is not admitted by any connector", args.addr);
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn detach(args: &DetachArgs) -> anyhow::Result<ExitCode> {
    let detached = live::detach(&args.pins.pin_dir, args.iface.as_deref())?;
    if detached.is_empty() {
        match &args.iface {
            Some(iface) => println!("no gatekeeper link on {iface}; nothing detached"),
            None => println!("no links were pinned; removed the leftover map pins"),
        }
    }
    for iface in detached {
        println!("detached from {iface}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inventory(args: &InventoryArgs) -> anyhow::Result<ExitCode> {
    let view = LiveView::open(&args.pins.pin_dir)?;
    let mut entries = view.inventory()?;
    if args.unauthorized || args.suggest {
        entries.retain(|entry| entry.connector.is_none());
    }
    if let Some(limit) = args.limit {
        entries.truncate(limit);
    }

    let mut out = io::stdout().lock();
    if args.suggest {
        write!(
            out,
            "{}",
            live::suggest_connector(&entries, std::time::SystemTime::now())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let time = |at| humantime::format_rfc3339_seconds(at).to_string();
    if args.json {
        for entry in &entries {
            let value = json!({
                "source": entry.source,
                "attempts": entry.attempts,
                "connector": entry.connector,
                "last_port": entry.last_port,
                "first_seen": time(entry.first_seen),
                "last_seen": time(entry.last_seen),
            });
            writeln!(out, "{value}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<40} {:>9} {:>5}  {:<24} {:<20}  LAST SEEN",
        "SOURCE", "ATTEMPTS", "PORT", "CONNECTOR", "FIRST SEEN"
    )?;
    for entry in &entries {
        writeln!(
            out,
            "{:<40} {:>9} {:>5}  {:<24} {:<20}  {}",
            entry.source.to_string(),
            entry.attempts,
            entry.last_port,
            entry.connector.as_deref().unwrap_or("unauthorized"),
            time(entry.first_seen),
            time(entry.last_seen),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
