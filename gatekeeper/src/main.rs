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
    policy::{LoadOptions, Policy, PolicyError},
    replay::{CaptureReader, ReplayedFrame, replay_frame},
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
