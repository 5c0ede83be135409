//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/`, each for a fixed
//! time, from the committed seed corpus.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{describe, workspace_root},
    parse,
    setup::{Mode, setup},
};

/// The targets in `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: [&str; 2] = ["policy", "pcap"];

/// Seconds per target when `--seconds` is not given, and in the test suite.
pub const DEFAULT_SECONDS: u64 = 20;

/// Installs what is missing, then runs `target` (every target when `None`)
/// for `seconds` each.
///
/// # Errors
///
/// When setup fails, the target is unknown, or a target finds an input
/// that breaks its properties.
pub fn fuzz(seconds: u64, target: Option<&str>) -> Result<()> {
    setup(Mode::Install)?;
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(target) if TARGETS.contains(&target) => vec![target],
        Some(other) => bail!(
            "no fuzz target {other:?}; the targets are {}",
            TARGETS.join(", ")
        ),
    };
    for target in targets {
        run_target(target, seconds)?;
    }
    Ok(())
}

/// Every target for [`DEFAULT_SECONDS`], for `cargo xtask test`; setup has
/// run already.
///
/// # Errors
///
/// As for [`fuzz`].
pub fn smoke() -> Result<()> {
    for target in TARGETS {
        run_target(target, DEFAULT_SECONDS)?;
    }
    Ok(())
}

fn run_target(target: &str, seconds: u64) -> Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    // libFuzzer adds what it finds to the first corpus directory: a scratch
    // one under target/, so that the committed seeds stay as they are.
    let scratch = fuzz_dir.join("target").join("corpus").join(target);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating the scratch corpus {}", scratch.display()))?;
    let seeds: PathBuf = fuzz_dir.join("corpus").join(target);
    // What the fuzzers found before, so that each run starts by checking
    // that it stays fixed.
    let regressions = fuzz_dir.join("regressions").join(target);

    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "fuzz", "run", target])
        .arg(&scratch)
        .arg(&seeds)
        .arg(&regressions)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A single input that takes this long is a hang, kept as an artifact.
        .arg("-timeout=10")
        .current_dir(workspace_root())
        // The outer cargo's choices would pick the stable toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    println!(
        "==> fuzz target {target} for {seconds} s (`{}`)",
        describe(&command)
    );

    let line = describe(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut runs = None;
    let mut in_dictionary = false;
    for text in BufReader::new(stderr).lines() {
        let text = text.context("reading the fuzzer's output")?;
        // One line per new input found, and the byte strings libFuzzer
        // suggests as a dictionary at the end, are only noise here; the
        // rest (the build, the start, a crash and its input) is what a
        // reader needs.
        if text.starts_with("###### Recommended dictionary.") {
            in_dictionary = true;
        }
        if !in_dictionary && !parse::is_fuzz_progress(&text) {
            eprintln!("{text}");
        }
        if text.starts_with("###### End of recommended dictionary.") {
            in_dictionary = false;
        }
        runs = runs.or(parse::fuzz_runs(&text));
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}): an input that breaks its properties is \
             in fuzz/artifacts/{target}/; once it is fixed, keep the input in \
             fuzz/regressions/{target}/"
        );
    }
    let Some((runs, elapsed)) = runs else {
        bail!("fuzz target {target} ended without libFuzzer's `Done N runs` line");
    };
    println!("fuzz target {target}: {runs} runs in {elapsed} s, nothing found");
    Ok(())
}
