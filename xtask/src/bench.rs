//! `cargo xtask bench`: the XDP program's cost per frame, through
//! BPF_PROG_RUN, against an empty XDP_DROP program measured in the same run.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{run, tests_binary},
    setup::{Mode, setup},
};

/// Installs what is missing, then runs the benchmark binary of the tests
/// crate, built with optimizations: the kernel measures the program's
/// times, but installing a policy is the controller's work, timed as a
/// gateway runs it.
///
/// # Errors
///
/// When setup or the benchmark fails.
pub fn bench(quick: bool, json: Option<PathBuf>, markdown: Option<PathBuf>) -> Result<()> {
    setup(Mode::Install)?;
    let mut command = tests_binary("gatekeeper-bench");
    if quick {
        command.arg("--quick");
    }
    if let Some(path) = json {
        command.arg("--json").arg(path);
    }
    if let Some(path) = markdown {
        command.arg("--markdown").arg(path);
    }
    run(&mut command)
}

/// Runs `bench --quick` and checks that it printed a complete table: CI runs
/// the benchmark to see that it works, never to judge its times.
///
/// # Errors
///
/// When the benchmark fails or its JSON lacks rows.
pub fn smoke() -> Result<()> {
    let json = std::env::temp_dir().join(format!("gatekeeper-bench-{}.json", std::process::id()));
    bench(true, Some(json.clone()), None)?;
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("reading the benchmark's JSON at {}", json.display()))?;
    let _ = std::fs::remove_file(&json);
    let rows = text.matches("\"ratio_to_floor\"").count();
    // Two allowlist sizes times nine traffic classes times two lookups
    // (the table and the LPM trie) in quick mode.
    if rows != 36 {
        bail!("the quick benchmark printed {rows} rows instead of 36:\n{text}");
    }
    // serde_json writes a time that is not a number (an empty run) as null.
    if text.contains("null") {
        bail!("the quick benchmark's JSON has a missing figure:\n{text}");
    }
    Ok(())
}
