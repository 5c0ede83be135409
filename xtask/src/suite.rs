//! `cargo xtask test`: setup, then each test stage in turn.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{
    cmd::{cargo, describe, run},
    setup::{Mode, setup},
};

/// One `cargo test` run.
struct Stage {
    name: &'static str,
    cargo_args: &'static [&'static str],
    /// Arguments for the test binaries, before the operator's own.
    harness_args: &'static [&'static str],
}

const STAGES: [Stage; 2] = [
    Stage {
        // The workspace's default members: everything that needs no root.
        name: "unit tests",
        cargo_args: &["test"],
        harness_args: &[],
    },
    Stage {
        // They attach XDP programs and pin to bpffs, so one at a time.
        name: "privileged tests",
        cargo_args: &["test", "--package", "gatekeeper-tests"],
        harness_args: &["--test-threads=1"],
    },
];

/// Installs what is missing, then runs the stages in order and stops at the
/// first that fails. `test_args` go to every test binary.
///
/// # Errors
///
/// When setup fails or a stage does, naming which.
pub fn test(test_args: &[String]) -> Result<()> {
    setup(Mode::Install)?;

    for (index, stage) in STAGES.iter().enumerate() {
        let position = format!("stage {}/{}", index + 1, STAGES.len());
        let mut command = stage_command(stage, test_args);
        println!("==> {position}: {} (`{}`)", stage.name, describe(&command));
        run(&mut command).with_context(|| format!("{position} ({}) failed", stage.name))?;
    }
    if !test_args.is_empty() {
        println!(
            "==> the {} test stages passed (the demo runs only without a filter)",
            STAGES.len()
        );
        return Ok(());
    }
    // The README's first command is part of what CI vouches for. It checks
    // its own outcomes and fails when a connection goes the wrong way.
    println!("==> the demo (`cargo xtask demo`)");
    crate::demo::demo().context("the demo failed")?;
    println!("==> the benchmark in its quick mode (`cargo xtask bench --quick`)");
    crate::bench::smoke().context("the quick benchmark failed")?;
    println!("==> the load test in its quick mode (`cargo xtask loadtest --quick`)");
    crate::loadtest::smoke().context("the quick load test failed")?;
    println!(
        "==> the fuzz targets, {} s each (`cargo xtask fuzz`)",
        crate::fuzz::DEFAULT_SECONDS
    );
    crate::fuzz::smoke().context("fuzzing failed")?;
    println!(
        "==> all {} test stages, the demo, the quick benchmark, the quick load test and the \
         fuzz targets passed",
        STAGES.len()
    );
    Ok(())
}

fn stage_command(stage: &Stage, test_args: &[String]) -> Command {
    let mut command = cargo();
    command
        .args(stage.cargo_args)
        .arg("--")
        .args(stage.harness_args)
        .args(test_args);
    command
}
