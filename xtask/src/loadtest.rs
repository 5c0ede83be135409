//! `cargo xtask loadtest`: a SYN flood from the live-frames generator over a
//! veth pair, against no filter, the floor, gatekeeper, nftables and
//! xdp-filter in turn.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{describe, run, tests_binary, workspace_root},
    parse,
    setup::{Mode, setup},
};

/// The script the load test's smoke check lints.
const PKTGEN_SCRIPT: &str = "scripts/pktgen-udp.sh";

/// Installs what is missing, then builds the load test in release mode
/// (the generator's loop and the client run in user space) and runs it.
///
/// # Errors
///
/// When setup or the load test fails.
pub fn loadtest(seconds: Option<u64>, quick: bool, json: Option<PathBuf>) -> Result<()> {
    setup(Mode::Install)?;
    run(&mut command(seconds, quick, json))
}

fn command(seconds: Option<u64>, quick: bool, json: Option<PathBuf>) -> Command {
    let mut command = tests_binary("gatekeeper-loadtest");
    if let Some(seconds) = seconds {
        command.arg("--seconds").arg(seconds.to_string());
    }
    if quick {
        command.arg("--quick");
    }
    if let Some(path) = json {
        command.arg("--json").arg(path);
    }
    command
}

/// Lints the pktgen script, runs `loadtest --quick` and checks that it
/// printed a complete table: every setup's row, every figure a number. CI
/// runs the load test to see that it works, never to judge its rates.
///
/// # Errors
///
/// When shellcheck finds something, the load test fails, or its table is
/// incomplete.
pub fn smoke() -> Result<()> {
    setup(Mode::Install)?;
    let mut shellcheck = Command::new("shellcheck");
    shellcheck.arg(PKTGEN_SCRIPT).current_dir(workspace_root());
    run(&mut shellcheck)?;

    let mut command = command(None, true, None);
    let line = describe(&command);
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("`{line}` failed with {}", output.status);
    }
    let problems = parse::loadtest_table_problems(&stdout);
    if !problems.is_empty() {
        bail!(
            "the quick load test's table is incomplete: {}",
            problems.join("; ")
        );
    }
    Ok(())
}
