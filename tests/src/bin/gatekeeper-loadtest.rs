//! `cargo xtask loadtest`: a SYN flood at port 25 over a veth pair between
//! two network namespaces, met on the gateway's side by one setup after
//! another: no filter (an XDP program that passes every frame), the floor
//! (an empty XDP_DROP program), gatekeeper, an nftables netdev ingress
//! chain with the same prefixes, and xdp-filter.
//!
//! The flood comes from the load test's generator, an XDP program run with
//! `BPF_PROG_RUN` in live-frames mode in the sending namespace. While it
//! runs, a legitimate client from an allowed source keeps connecting to an
//! SMTP listener on the gateway.
//!
//! A measurement, not a test: it asserts nothing about rates or times.
//! `--quick` runs each setup for a second, for CI to check that it runs and
//! prints a complete table. Everything it creates (namespaces, the veth
//! pair, XDP attachments, the nftables table, xdp-filter's pins, the
//! policy file) is removed when it ends, also when it fails, panics or is
//! interrupted; `kernel.bpf_stats_enabled` is set back as it was.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use gatekeeper::{
    datapath::{CounterTotals, Datapath, load_reference_program},
    generator::{DEFAULT_BATCH, Generator, GeneratorTotals},
    policy::{LoadOptions, Policy},
};
use gatekeeper_common::{FLOOR_PROGRAM_NAME, PASS_PROGRAM_NAME, counter};
use gatekeeper_tests::{
    live::{PolicyFile, SmtpListener},
    loadtest::{
        self, ALLOWED_PER_MILLE, ALLOWED_V4, BpfStats, CLIENT, CLIENT_CIDR, CLIENT_CONNECTOR,
        CLIENT_INTERVAL, ClientReport, DENIED_V4, FLOOD_CONNECTOR, GATEWAY, GATEWAY_CIDR, NftTable,
        PKTGEN_PROC, SMTP_PORT, SetupError, VethCounters, XdpFilter, XdpFilterCounts,
    },
    netns::{Link, Namespace},
};
use serde_json::json;

const USAGE: &str = "usage: gatekeeper-loadtest [--seconds N] [--quick] [--json FILE]";

struct Options {
    seconds: u64,
    quick: bool,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        seconds: 5,
        quick: false,
        json: None,
    };
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a number")?;
                let value = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=600).contains(n))
                    .ok_or(format!("--seconds takes 1 to 600, not {value:?}"))?;
                seconds = Some(value);
            }
            "--json" => {
                let path = args.next().ok_or("--json needs a file name")?;
                options.json = Some(PathBuf::from(path));
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    options.seconds = match (seconds, options.quick) {
        (Some(seconds), _) => seconds,
        (None, true) => 1,
        (None, false) => options.seconds,
    };
    Ok(options)
}

/// Set by SIGINT or SIGTERM: the flood stops, the remaining setups are
/// skipped, and the guards clean up on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, handler) };
    }
}

/// What meets the flood on the gateway's veth end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    NoFilter,
    Floor,
    Gatekeeper,
    Nftables,
    XdpFilter,
}

const SETUPS: [Setup; 5] = [
    Setup::NoFilter,
    Setup::Floor,
    Setup::Gatekeeper,
    Setup::Nftables,
    Setup::XdpFilter,
];

impl Setup {
    /// The row's name in the table and the JSON.
    fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no-filter",
            Setup::Floor => "floor",
            Setup::Gatekeeper => "gatekeeper",
            Setup::Nftables => "nftables",
            Setup::XdpFilter => "xdp-filter",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Setup::NoFilter => "an XDP program that passes every frame to the network stack",
            Setup::Floor => {
                "an empty XDP program that drops every frame: the least any XDP filter costs"
            }
            Setup::Gatekeeper => "gatekeeper's XDP program with the policy below, in enforce mode",
            Setup::Nftables => {
                "a netdev ingress chain dropping SYNs to port 25 from sources outside an \
                 interval set of the same prefixes"
            }
            Setup::XdpFilter => {
                "xdp-filter (xdp-tools) dropping all TCP to port 25: it has no allowlist, so it \
                 also drops the client"
            }
        }
    }
}

/// The gateway side in place for one setup; dropping it takes it away.
enum Installed<'a> {
    /// One of the gatekeeper object's reference programs, attached.
    Reference(#[expect(dead_code, reason = "held to stay attached: dropping it detaches")] Ebpf),
    Gatekeeper(Box<Datapath>),
    Nftables(NftTable<'a>),
    XdpFilter(XdpFilter<'a>),
}

/// Counters read before and after a setup's flood.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    generator: GeneratorTotals,
    /// Run time and run count of the generator program.
    generator_runs: (Duration, u64),
    /// Run time and run count of the XDP program attached to the gateway.
    gateway_runs: Option<(Duration, u64)>,
    gateway: VethCounters,
    sender: VethCounters,
    /// nftables' `seen` and `dropped` counters.
    nft: Option<(u64, u64)>,
    /// gatekeeper's counters and its allowed counts per connector.
    gatekeeper: Option<(CounterTotals, Vec<(String, u64)>)>,
    /// xdp-filter's own statistics.
    xdp_filter: Option<XdpFilterCounts>,
}

/// What one setup showed.
struct Measured {
    /// How long the generator ran.
    elapsed: Duration,
    /// Frames the generator sent.
    generated: u64,
    /// Frames the gateway's first hook (its XDP program or nftables chain)
    /// saw.
    seen: u64,
    /// Of those, frames it dropped.
    dropped: u64,
    /// The gateway XDP program's own time per frame; none for nftables.
    program_ns: Option<f64>,
    /// The generator program's own time per frame.
    generator_ns: f64,
    client: ClientReport,
    /// What else is worth a line under the table.
    notes: Vec<String>,
    /// The raw counter deltas, for the JSON.
    detail: serde_json::Value,
}

impl Measured {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }
}

enum Outcome {
    Measured(Box<Measured>),
    /// Why the setup could not run; printed in its row.
    Skipped(String),
}

/// Everything the setups share.
struct Bench<'a> {
    link: &'a Link,
    generator: &'a Generator,
    template: Vec<u8>,
    /// The sending veth end's index, in the sending namespace.
    sender_ifindex: u32,
    policy_file: &'a Path,
    duration: Duration,
    warm_up: Duration,
}

/// Frames per `BPF_PROG_RUN` call: tens of milliseconds of flood, so that
/// the flood stops close to its deadline.
const FRAMES_PER_RUN: u32 = 1 << 16;

/// How long the flood runs before a setup's counters are read.
const WARM_UP: Duration = Duration::from_millis(300);

/// How long after the flood the counters are read: the gateway's ring is
/// drained by then.
const SETTLE: Duration = Duration::from_millis(100);

/// `gatekeeper run`'s default `--log-rate` (deny events logged per second),
/// and the burst it derives from it.
const LOG_RATE: u64 = 100;
const LOG_BURST: u64 = LOG_RATE / 10;

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "error: the load test creates network namespaces and attaches XDP programs: \
             run it as root (`cargo xtask loadtest` does)"
        );
        return ExitCode::FAILURE;
    }
    catch_signals();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(options: &Options) -> Result<()> {
    let _stats = BpfStats::enable().context("turning on kernel.bpf_stats_enabled")?;
    let link = Link::new(&[CLIENT_CIDR], &[GATEWAY_CIDR]);
    // The nftables setup leaves the gateway's veth end without an XDP
    // program; it takes the generator's frames only with GRO on. On for
    // every setup, so that they differ in the filter alone.
    loadtest::enable_gro(&link.gateway, &link.gateway_if)?;
    let _listener = SmtpListener::start(&link);

    let policy = loadtest::policy(options.quick);
    let policy_file = PolicyFile::new(&loadtest::policy_file_text(&policy));
    let generator = Generator::load(&loadtest::flood()).context("loading the generator")?;
    let template = loadtest::template(
        mac(&link.outside, &link.outside_if)?,
        mac(&link.gateway, &link.gateway_if)?,
    );
    let sender_ifindex = ifindex(&link.outside, &link.outside_if)?;
    let bench = Bench {
        link: &link,
        generator: &generator,
        template,
        sender_ifindex,
        policy_file: policy_file.path(),
        duration: Duration::from_secs(options.seconds),
        warm_up: if options.quick { WARM_UP / 3 } else { WARM_UP },
    };

    let (v4, v6) = policy.source_counts();
    println!(
        "load test: {} s per setup; flood of TCP SYNs to {GATEWAY}:{SMTP_PORT}, {}% from \
         allowed sources; policy of {v4} IPv4 and {v6} IPv6 prefixes",
        options.seconds,
        f64::from(ALLOWED_PER_MILLE) / 10.0,
    );
    let pktgen = pktgen_available();
    if let Err(reason) = &pktgen {
        println!("pktgen: skipped: {reason}");
    }

    let mut results = Vec::new();
    for setup in SETUPS {
        if interrupted() {
            bail!("interrupted");
        }
        println!("-- {}: {}", setup.name(), setup.description());
        let with_pktgen = setup == Setup::Gatekeeper && pktgen.is_ok();
        let outcome = measure(&bench, setup, with_pktgen)
            .with_context(|| format!("the {} setup", setup.name()))?;
        results.push((setup, outcome));
    }
    if interrupted() {
        bail!("interrupted");
    }

    println!();
    print_table(&results);
    println!();
    print_notes(&results, &policy, options, bench.policy_file);
    if let Some(path) = &options.json {
        let json = to_json(&results, &policy, options);
        std::fs::write(path, format!("{json:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn mac(namespace: &Namespace, interface: &str) -> Result<[u8; 6]> {
    let text = namespace.mac(interface);
    loadtest::parse_mac(&text)
        .with_context(|| format!("{interface} has MAC address {text:?}, not six hex bytes"))
}

fn ifindex(namespace: &Namespace, interface: &str) -> Result<u32> {
    let name = CString::new(interface).context("an interface name with a NUL")?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    let index = namespace.run(move || unsafe { libc::if_nametoindex(name.as_ptr()) });
    if index == 0 {
        bail!("no interface {interface} in {}", namespace.name());
    }
    Ok(index)
}

/// Whether pktgen can add background UDP load, or why not.
fn pktgen_available() -> Result<(), String> {
    if Path::new(PKTGEN_PROC).exists() {
        return Ok(());
    }
    Err(format!(
        "{PKTGEN_PROC} does not exist, so there is no background UDP load: this kernel has no \
         pktgen loaded (`modprobe pktgen` where it is built with CONFIG_NET_PKTGEN); \
         scripts/pktgen-udp.sh is for gateways that have it"
    ))
}

fn program_id(program: &Xdp) -> Result<u32> {
    Ok(program.info().context("reading a program's info")?.id())
}

/// Attaches `program` in native mode to the gateway's veth end.
fn attach(link: &Link, program: &mut Xdp) -> Result<u32> {
    let interface = link.gateway_if.clone();
    link.gateway
        .run_scoped(|| program.attach(&interface, XdpMode::Driver))
        .with_context(|| format!("attaching an XDP program to {interface}"))?;
    program_id(program)
}

/// Whether `tool` is on PATH.
fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Puts `setup` in place on the gateway: what to keep alive, and the id
/// of the XDP program attached, if any.
fn install<'a>(
    bench: &Bench<'a>,
    setup: Setup,
) -> Result<Result<(Installed<'a>, Option<u32>), String>> {
    let link = bench.link;
    let reference = |name: &'static str| -> Result<(Installed<'a>, Option<u32>)> {
        let mut ebpf = load_reference_program(name).context("loading a reference program")?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .context("the object lacks a reference program")?
            .try_into()
            .context("a reference program that is not XDP")?;
        let id = attach(link, program)?;
        Ok((Installed::Reference(ebpf), Some(id)))
    };
    let installed = match setup {
        Setup::NoFilter => reference(PASS_PROGRAM_NAME)?,
        Setup::Floor => reference(FLOOR_PROGRAM_NAME)?,
        Setup::Gatekeeper => {
            // The file, read as `gatekeeper run --policy` reads it.
            let policy = Policy::load(bench.policy_file, LoadOptions::default())
                .context("reading the load test's policy file")?;
            let mut datapath = Datapath::load().context("loading gatekeeper's XDP program")?;
            datapath.install(&policy).context("installing the policy")?;
            datapath
                .set_log_rate(LOG_RATE, LOG_BURST)
                .context("setting the deny log's rate")?;
            let id = attach(link, datapath.program())?;
            (Installed::Gatekeeper(Box::new(datapath)), Some(id))
        }
        Setup::Nftables => {
            if !has_tool("nft") {
                return Ok(Err(
                    "skipped: nft is not installed (`cargo xtask setup` installs nftables)"
                        .to_owned(),
                ));
            }
            let policy = Policy::load(bench.policy_file, LoadOptions::default())
                .context("reading the load test's policy file")?;
            let table = format!("gk_loadtest_{}", std::process::id());
            let ruleset = loadtest::nft_ruleset(&table, &policy, &link.gateway_if);
            let nft = NftTable::create(&link.gateway, &table, &ruleset)?;
            (Installed::Nftables(nft), None)
        }
        Setup::XdpFilter => {
            if !has_tool("xdp-filter") {
                return Ok(Err(
                    "skipped: xdp-filter is not installed (`cargo xtask setup` \
                     installs Debian's xdp-tools)"
                        .to_owned(),
                ));
            }
            let filter = match XdpFilter::load(&link.gateway, &link.gateway_if, SMTP_PORT) {
                Ok(filter) => filter,
                Err(SetupError::InTheWay(reason)) => return Ok(Err(format!("skipped: {reason}"))),
                Err(error) => return Err(error).context("loading xdp-filter"),
            };
            let id = loadtest::attached_program_id(&link.gateway, &link.gateway_if)?;
            (Installed::XdpFilter(filter), Some(id))
        }
    };
    Ok(Ok(installed))
}

fn snapshot(
    bench: &Bench<'_>,
    installed: &Installed<'_>,
    gateway_program: Option<u32>,
) -> Result<Snapshot> {
    let link = bench.link;
    let generator_id = program_id(bench.generator.program())?;
    let mut snapshot = Snapshot {
        generator: bench.generator.totals()?,
        generator_runs: loadtest::program_stats(generator_id)?,
        gateway_runs: gateway_program.map(loadtest::program_stats).transpose()?,
        gateway: VethCounters::read(&link.gateway, &link.gateway_if)?,
        sender: VethCounters::read(&link.outside, &link.outside_if)?,
        ..Snapshot::default()
    };
    match installed {
        Installed::Nftables(table) => snapshot.nft = Some(table.counters()?),
        Installed::Gatekeeper(datapath) => {
            let counts = datapath.connector_counts()?;
            snapshot.gatekeeper =
                Some((datapath.counters()?, datapath.allowed_by_connector(&counts)));
        }
        Installed::XdpFilter(filter) => snapshot.xdp_filter = Some(filter.counts()?),
        Installed::Reference(_) => {}
    }
    Ok(snapshot)
}

/// The CPU the flood is sent from. The gateway's receive path runs there
/// too, in the softirq the generator's transmissions raise; pinning keeps
/// every setup on the same CPU instead of wherever the scheduler moved the
/// thread, and leaves the other CPUs to the client and the listener.
const FLOOD_CPU: usize = 0;

fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only read and write the set passed to them.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        bail!(
            "pinning the flood to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends the flood out of the sending veth end until `duration` has
/// passed; returns how long it ran. Runs on the calling thread, which must
/// be in the sending namespace, and pins it to [`FLOOD_CPU`].
fn flood_for(bench: &Bench<'_>, duration: Duration) -> Result<Duration> {
    pin_to(FLOOD_CPU)?;
    let started = Instant::now();
    while started.elapsed() < duration && !interrupted() {
        if let Err(error) = bench.generator.send(
            &bench.template,
            bench.sender_ifindex,
            FRAMES_PER_RUN,
            DEFAULT_BATCH,
        ) {
            // A signal ends the run early with EINTR.
            if interrupted() {
                break;
            }
            return Err(error).context("sending the flood");
        }
    }
    Ok(started.elapsed())
}

/// The flood from a thread in the sending namespace, with the legitimate
/// client beside it on another.
fn flood_with_client(bench: &Bench<'_>) -> Result<(Duration, ClientReport)> {
    let stop = AtomicBool::new(false);
    let outside = &bench.link.outside;
    thread::scope(|scope| {
        let client = scope.spawn(|| {
            outside.enter();
            loadtest::run_client(loadtest::smtp_server(), &stop)
        });
        let flood = scope
            .spawn(|| {
                outside.enter();
                flood_for(bench, bench.duration)
            })
            .join();
        stop.store(true, Ordering::Relaxed);
        let client = client.join();
        let flood = flood.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let client = client.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((flood, client))
    })
}

fn measure(bench: &Bench<'_>, setup: Setup, with_pktgen: bool) -> Result<Outcome> {
    let (installed, gateway_program) = match install(bench, setup)? {
        Ok(installed) => installed,
        Err(reason) => {
            println!("   {reason}");
            return Ok(Outcome::Skipped(reason));
        }
    };
    bench
        .link
        .outside
        .run_scoped(|| flood_for(bench, bench.warm_up))?;
    thread::sleep(SETTLE);

    let pktgen = if with_pktgen {
        Some(Pktgen::start(bench)?)
    } else {
        None
    };
    let before = snapshot(bench, &installed, gateway_program)?;
    let (elapsed, client) = flood_with_client(bench)?;
    thread::sleep(SETTLE);
    let after = snapshot(bench, &installed, gateway_program)?;
    let pktgen = pktgen.map(Pktgen::finish).transpose()?;
    drop(installed);

    let generated = after.generator.since(&before.generator);
    let (generator_time, generator_runs) = runs_since(after.generator_runs, before.generator_runs);
    let gateway = after.gateway.since(&before.gateway);
    let sender = after.sender.since(&before.sender);
    let gateway_runs = after
        .gateway_runs
        .zip(before.gateway_runs)
        .map(|(after, before)| runs_since(after, before));

    let (seen, dropped) = match (after.nft, before.nft, gateway_runs) {
        (Some(after), Some(before), _) => (after.0 - before.0, after.1 - before.1),
        (_, _, Some((_, runs))) => (runs, gateway.xdp_drops),
        _ => bail!("neither an XDP program nor an nftables chain counted frames"),
    };
    let program_ns = gateway_runs
        .filter(|(_, runs)| *runs > 0)
        .map(|(time, runs)| time.as_nanos() as f64 / runs as f64);
    let generator_ns = if generator_runs == 0 {
        0.0
    } else {
        generator_time.as_nanos() as f64 / generator_runs as f64
    };

    let mut notes = Vec::new();
    let mut detail = json!({
        "generator": {
            "sent": generated.sent,
            "allowed": generated.allowed,
            "denied": generated.denied,
            "aborted": generated.aborted,
        },
        "gateway_veth": veth_json(&gateway),
        "sender_veth": veth_json(&sender),
    });
    if let (Some((after, allowed_after)), Some((before, allowed_before))) =
        (&after.gatekeeper, &before.gatekeeper)
    {
        let delta = after.since(before);
        let allowed = allowed_after
            .iter()
            .zip(allowed_before)
            .map(|((name, after), (_, before))| (name.clone(), after - before))
            .collect::<Vec<_>>();
        let allowed_text = allowed
            .iter()
            .map(|(name, count)| format!("{count} for {name}"))
            .collect::<Vec<_>>()
            .join(", ");
        notes.push(format!(
            "gatekeeper counted {} gated SYNs: {} allowed ({allowed_text}), {} denied; {} frames \
             passed without being gated",
            delta.allowed() + delta.denied(),
            delta.allowed(),
            delta.denied(),
            delta.passed(),
        ));
        detail["gatekeeper"] = json!({
            "seen": delta.seen(),
            "passed": delta.passed(),
            "allowed": delta.allowed(),
            "denied": delta.denied(),
            "events_dropped": delta.get(counter::EVENTS_DROPPED),
            "allowed_by_connector": allowed
                .iter()
                .map(|(name, count)| (name.clone(), json!(count)))
                .collect::<serde_json::Map<_, _>>(),
        });
        if let Some(sent) = &pktgen {
            notes.push(format!(
                "pktgen's background UDP load: {sent}; gatekeeper passed {} frames it does not \
                 gate in the same time",
                delta.passed()
            ));
            detail["pktgen"] = json!(sent);
        }
    }
    if let (Some(after), Some(before)) = (after.xdp_filter, before.xdp_filter) {
        let (pass, drop) = (after.pass - before.pass, after.drop - before.drop);
        notes.push(format!(
            "xdp-filter's own statistics: {drop} dropped, {pass} passed"
        ));
        detail["xdp_filter"] =
            json!({ "pass": pass, "drop": drop, "aborted": after.aborted - before.aborted });
    }
    if let Some(sent) = pktgen
        && setup != Setup::Gatekeeper
    {
        notes.push(format!("pktgen: {sent}"));
    }

    Ok(Outcome::Measured(Box::new(Measured {
        elapsed,
        generated: generated.sent,
        seen,
        dropped,
        program_ns,
        generator_ns,
        client,
        notes,
        detail,
    })))
}

fn runs_since(after: (Duration, u64), before: (Duration, u64)) -> (Duration, u64) {
    (after.0.saturating_sub(before.0), after.1 - before.1)
}

fn veth_json(counters: &VethCounters) -> serde_json::Value {
    json!({
        "rx_packets": counters.rx_packets,
        "rx_dropped": counters.rx_dropped,
        "xdp_packets": counters.xdp_packets,
        "xdp_drops": counters.xdp_drops,
        "xdp_xmit": counters.xdp_xmit,
        "xdp_xmit_errors": counters.xdp_xmit_errors,
    })
}

/// scripts/pktgen-udp.sh sending UDP from the sending namespace while the
/// flood runs; killed on drop.
struct Pktgen {
    child: Option<Child>,
}

impl Pktgen {
    fn start(bench: &Bench<'_>) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pktgen-udp.sh");
        let gateway_mac = bench.link.gateway.mac(&bench.link.gateway_if);
        let seconds = bench.duration.as_secs().to_string();
        let client = CLIENT.to_string();
        let gateway = GATEWAY.to_string();
        let mut command = bench.link.outside.command("bash");
        command
            .arg(&script)
            .args([
                "-i",
                &bench.link.outside_if,
                "-d",
                &gateway,
                "-m",
                &gateway_mac,
            ])
            .args(["-s", &client, "-t", &seconds])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        Ok(Self { child: Some(child) })
    }

    /// Waits for the script and returns its summary line, or what went
    /// wrong: background load that fails is a note, not a failed run.
    fn finish(mut self) -> Result<String> {
        let child = self.child.take().context("pktgen already finished")?;
        let output = child.wait_with_output().context("waiting for pktgen")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            return Ok(stdout.lines().last().unwrap_or_default().to_owned());
        }
        Ok(format!(
            "pktgen-udp.sh failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Drop for Pktgen {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Mega-frames per second, three decimals.
fn mpps(rate: f64) -> String {
    format!("{:.3}", rate / 1e6)
}

fn micros(duration: Option<Duration>) -> String {
    duration.map_or("n/a".to_owned(), |d| {
        format!("{:.0}", d.as_secs_f64() * 1e6)
    })
}

fn floor_of(results: &[(Setup, Outcome)]) -> Option<&Measured> {
    results.iter().find_map(|(setup, outcome)| match outcome {
        Outcome::Measured(measured) if *setup == Setup::Floor => Some(measured.as_ref()),
        _ => None,
    })
}

const HEADER: [&str; 10] = [
    "setup",
    "generated Mpps",
    "seen Mpps",
    "dropped Mpps",
    "seen / floor",
    "ns/frame",
    "ns / floor",
    "client ok %",
    "connect p50 µs",
    "connect p99 µs",
];

/// The table, in Markdown: one row per setup, every cell a number or
/// `n/a`, or the reason a setup was skipped.
fn print_table(results: &[(Setup, Outcome)]) {
    let floor = floor_of(results);
    println!("| {} |", HEADER.join(" | "));
    println!("|---|{}", "---:|".repeat(HEADER.len() - 1));
    for (setup, outcome) in results {
        let measured = match outcome {
            Outcome::Measured(measured) => measured,
            Outcome::Skipped(reason) => {
                let blanks = vec!["-"; HEADER.len() - 2];
                println!("| {} | {reason} | {} |", setup.name(), blanks.join(" | "));
                continue;
            }
        };
        let seen_rate = measured.per_second(measured.seen);
        let seen_ratio = floor.map_or("n/a".to_owned(), |floor| {
            format!("{:.2}", seen_rate / floor.per_second(floor.seen))
        });
        let ns = measured
            .program_ns
            .map_or("n/a".to_owned(), |ns| format!("{ns:.1}"));
        let ns_ratio = match (
            measured.program_ns,
            floor.and_then(|floor| floor.program_ns),
        ) {
            (Some(ns), Some(floor_ns)) => format!("{:.2}", ns / floor_ns),
            _ => "n/a".to_owned(),
        };
        let client = &measured.client;
        let ok = if client.attempts == 0 {
            "n/a".to_owned()
        } else {
            format!(
                "{:.1}",
                100.0 * client.succeeded as f64 / client.attempts as f64
            )
        };
        let cells = [
            setup.name().to_owned(),
            mpps(measured.per_second(measured.generated)),
            mpps(seen_rate),
            mpps(measured.per_second(measured.dropped)),
            seen_ratio,
            ns,
            ns_ratio,
            ok,
            micros(client.quantile(0.5)),
            micros(client.quantile(0.99)),
        ];
        println!("| {} |", cells.join(" | "));
    }
}

fn print_notes(results: &[(Setup, Outcome)], policy: &Policy, options: &Options, file: &Path) {
    let (v4, v6) = policy.source_counts();
    println!(
        "flood: TCP SYNs with an MSS option to {GATEWAY}:{SMTP_PORT}, {}% from {ALLOWED_V4}, \
         the rest from {}; random source ports and sequence numbers; {DEFAULT_BATCH} frames a \
         batch, {} s per setup",
        f64::from(ALLOWED_PER_MILLE) / 10.0,
        DENIED_V4.map(|net| net.to_string()).join(" and "),
        options.seconds,
    );
    println!(
        "policy: enforce mode, port {SMTP_PORT}, {v4} IPv4 and {v6} IPv6 prefixes in connectors \
         {FLOOD_CONNECTOR} and {CLIENT_CONNECTOR} ({})",
        file.display()
    );
    println!(
        "client: connects from {CLIENT} to {GATEWAY}:{SMTP_PORT} every {} ms during every \
         setup's flood and reads the 220 banner; ok % counts those that did within 1 s",
        CLIENT_INTERVAL.as_millis()
    );
    println!(
        "seen: frames the gateway's first hook (its XDP program, or the nftables chain) ran on; \
         ns/frame: that XDP program's own run time per frame from kernel.bpf_stats_enabled"
    );
    for (setup, outcome) in results {
        let Outcome::Measured(measured) = outcome else {
            continue;
        };
        let lost = measured.generated.saturating_sub(measured.seen);
        println!(
            "{}: {} frames generated ({:.1} ns/frame in the generator), {} seen, {} not taken \
             by the gateway's veth ring; client {} of {} ({} timed out)",
            setup.name(),
            measured.generated,
            measured.generator_ns,
            measured.seen,
            lost,
            measured.client.succeeded,
            measured.client.attempts,
            measured.client.timed_out,
        );
        for note in &measured.notes {
            println!("  {note}");
        }
    }
}

fn to_json(results: &[(Setup, Outcome)], policy: &Policy, options: &Options) -> serde_json::Value {
    let floor = floor_of(results);
    let (v4, v6) = policy.source_counts();
    let rows = results
        .iter()
        .map(|(setup, outcome)| match outcome {
            Outcome::Skipped(reason) => json!({ "setup": setup.name(), "skipped": reason }),
            Outcome::Measured(measured) => {
                let client = &measured.client;
                let seen_rate = measured.per_second(measured.seen);
                json!({
                    "setup": setup.name(),
                    "description": setup.description(),
                    "seconds": measured.elapsed.as_secs_f64(),
                    "generated_per_second": measured.per_second(measured.generated),
                    "seen_per_second": seen_rate,
                    "dropped_per_second": measured.per_second(measured.dropped),
                    "seen_ratio_to_floor": floor.map(|floor| seen_rate / floor.per_second(floor.seen)),
                    "ns_per_frame": measured.program_ns,
                    "ns_ratio_to_floor": measured
                        .program_ns
                        .zip(floor.and_then(|floor| floor.program_ns))
                        .map(|(ns, floor_ns)| ns / floor_ns),
                    "generator_ns_per_frame": measured.generator_ns,
                    "frames": {
                        "generated": measured.generated,
                        "seen": measured.seen,
                        "dropped": measured.dropped,
                    },
                    "client": {
                        "attempts": client.attempts,
                        "succeeded": client.succeeded,
                        "timed_out": client.timed_out,
                        "failed": client.failed,
                        "connect_p50_us": client.quantile(0.5).map(|d| d.as_secs_f64() * 1e6),
                        "connect_p99_us": client.quantile(0.99).map(|d| d.as_secs_f64() * 1e6),
                    },
                    "counters": measured.detail,
                })
            }
        })
        .collect::<Vec<_>>();
    json!({
        "seconds_per_setup": options.seconds,
        "quick": options.quick,
        "allowed_per_mille": ALLOWED_PER_MILLE,
        "batch": DEFAULT_BATCH,
        "policy": { "ipv4_prefixes": v4, "ipv6_prefixes": v6, "mode": "enforce" },
        "pktgen": pktgen_available().err().map_or(json!("used"), |reason| json!({ "skipped": reason })),
        "setups": rows,
    })
}
