//! Developer tasks for gatekeeper, run as `cargo xtask TASK`.

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod loadtest;
mod parse;
mod setup;
mod suite;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer tasks for gatekeeper: prepare a machine, show the datapath at
/// work, run every test.
#[derive(Parser)]
#[command(bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check the build and test prerequisites and install the missing ones.
    ///
    /// Checks, in order, and prints one line for each: the nightly toolchain;
    /// its rust-src component; the LLVM major version of the nightly rustc;
    /// the Debian packages for that LLVM (llvm-MAJOR-dev, libpolly-MAJOR-dev,
    /// zlib1g-dev, libzstd-dev), iproute2 and tcpdump for the tests, and
    /// nftables, xdp-tools, ethtool and shellcheck for the load test; a
    /// bpf-linker linked against that LLVM; cargo-fuzz for the fuzz targets;
    /// bpffs mounted at /sys/fs/bpf; and whether it
    /// runs as root. Only what is missing gets installed, through rustup,
    /// apt-get, `cargo install` or mount, which need root and a network.
    /// Not running as root is only a warning: the privileged tests need it.
    Setup {
        /// Report what is missing without installing anything, and exit with
        /// status 1 if something is.
        #[arg(long)]
        check: bool,
    },
    /// Install what is missing (as `setup` does), build gatekeeper and show
    /// it enforcing the example policy on a live link.
    ///
    /// Creates two network namespaces joined by a veth pair (the internet
    /// side and the gateway), runs an SMTP listener on the gateway and
    /// `gatekeeper run` on its veth with examples/policy.toml, connects from
    /// an address inside the connector range and from one outside it in
    /// monitor mode, switches the file to enforce mode (reloaded live), and
    /// connects again, printing what happened and `gatekeeper status` each
    /// time. Then replays examples/sample.pcap under the same policy.
    /// Removes everything it created, also when interrupted. Needs root.
    Demo,
    /// Install what is missing (as `setup` does), then measure the XDP
    /// program's cost per frame.
    ///
    /// Runs each traffic class (non-IP, IPv4 UDP, TCP to another port, a
    /// gated ACK, gated SYNs allowed and denied, IPv6, VLAN-tagged) through
    /// the real program with BPF_PROG_RUN, at allowlist sizes of 10, 1k, 100k
    /// and 1M IPv4 prefixes and 10 and 10k IPv6 prefixes, over many source
    /// addresses, and prints nanoseconds per frame (median of several runs)
    /// and the ratio to an empty XDP_DROP program measured in the same run.
    /// Needs root.
    Bench {
        /// Small sizes and few repetitions: checks that the benchmark runs.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
        /// Also write the results as the Markdown tables of BENCHMARKS.md.
        #[arg(long, value_name = "FILE")]
        markdown: Option<std::path::PathBuf>,
    },
    /// Install what is missing (as `setup` does), then flood a gateway
    /// with SYNs and compare how each filter copes.
    ///
    /// Creates two network namespaces joined by a veth pair. The load test's
    /// generator, an XDP program run with BPF_PROG_RUN in live-frames mode,
    /// sends TCP SYNs to port 25 from random sources (10% of them allowed by
    /// the policy) out of one end as fast as it can. On the gateway's end,
    /// one after another: no filter (an XDP program that passes every
    /// frame), an empty XDP_DROP program (the floor), gatekeeper with a
    /// policy file in enforce mode, an nftables netdev ingress chain with
    /// the same prefixes, and xdp-filter dropping port 25. Meanwhile a
    /// client from an allowed source connects to an SMTP listener on the
    /// gateway. Prints, per setup, frames generated, seen and dropped per
    /// second, the ratios to the floor, the XDP program's own ns/frame
    /// (kernel.bpf_stats_enabled, restored afterwards) and the client's
    /// success rate and connect times. Adds background UDP load through
    /// scripts/pktgen-udp.sh when the kernel has pktgen. Removes everything
    /// it created, also when it fails or is interrupted. Needs root.
    Loadtest {
        /// Seconds of flood per setup (default 5; 1 with --quick).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: Option<u64>,
        /// One second per setup and a smaller policy: checks that it runs.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
    /// Install what is missing (as `setup` does), then run the fuzz
    /// targets in fuzz/ with cargo-fuzz.
    ///
    /// `policy` feeds arbitrary bytes to the policy loader, `pcap` to the
    /// capture reader of `gatekeeper replay`; each checks properties (a
    /// policy that parses keeps every rule and reads back the same when
    /// written out again; every problem has a place inside the file; a
    /// capture's frames, written out again, read back the same) besides
    /// not crashing. Starts from the seed corpus in fuzz/corpus/TARGET/ and
    /// adds what it finds to fuzz/target/corpus/TARGET/, so the seeds stay
    /// as committed. An input that breaks a property lands in
    /// fuzz/artifacts/TARGET/; once fixed, keep it in
    /// fuzz/regressions/TARGET/, which `cargo test` replays. Prints the
    /// number of runs per target.
    Fuzz {
        /// Seconds per target.
        #[arg(long, value_name = "N", default_value_t = fuzz::DEFAULT_SECONDS,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: u64,
        /// Only this target (policy or pcap); every target when left out.
        target: Option<String>,
    },
    /// Install what is missing (as `setup` does), then run every test.
    ///
    /// Stage 1 runs `cargo test` on the default workspace members (the
    /// controller, the shared types and xtask). Stage 2 runs the privileged
    /// tests in gatekeeper-tests one at a time: they load the XDP program and
    /// need root and bpffs. Then the demo runs, as `cargo xtask demo` does
    /// (it checks its own outcomes), `bench --quick` and `loadtest --quick`,
    /// each checked for a complete table and never for its times or rates,
    /// after shellcheck on scripts/pktgen-udp.sh, and last each fuzz target
    /// for 20 seconds (`cargo xtask fuzz`). Stops at the first stage that fails,
    /// naming it, with a non-zero exit status.
    ///
    /// Arguments after `--` go to the test binaries of both stages, for
    /// example a test name filter: `cargo xtask test -- allow`; the demo is
    /// then skipped.
    Test {
        /// Arguments for the test binaries, such as a test name filter.
        #[arg(last = true, value_name = "TEST_ARGS")]
        test_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let Cli { task } = Cli::parse();
    // One line with the whole chain of causes, and no backtrace even when
    // RUST_BACKTRACE is set: the failing command already says enough.
    if let Err(err) = run(task) {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup { check: false } => setup::setup(setup::Mode::Install),
        Task::Setup { check: true } => setup::setup(setup::Mode::Check),
        Task::Demo => demo::demo(),
        Task::Bench {
            quick,
            json,
            markdown,
        } => bench::bench(quick, json, markdown),
        Task::Loadtest {
            seconds,
            quick,
            json,
        } => loadtest::loadtest(seconds, quick, json),
        Task::Fuzz { seconds, target } => fuzz::fuzz(seconds, target.as_deref()),
        Task::Test { test_args } => suite::test(&test_args),
    }
}
