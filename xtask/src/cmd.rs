//! Running the tools setup and the test stages depend on, with errors that
//! name the command line and how it ended.

use std::{
    env,
    ffi::OsString,
    path::Path,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The cargo that started this xtask, so nested builds use the same toolchain.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// `cargo run` of `bin`, a binary of the tests crate, built with
/// optimizations; arguments for it go after this.
pub fn tests_binary(bin: &str) -> Command {
    let mut command = cargo();
    command.args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "gatekeeper-tests",
        "--bin",
        bin,
        "--",
    ]);
    command
}

/// The workspace root: cargo commands started from here cover the whole
/// workspace wherever `cargo xtask` was typed.
pub fn workspace_root() -> &'static Path {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir)
}

/// The command line as an operator would type it: the variables it sets, then
/// the program by name (the path of cargo's own binary is only noise).
pub fn describe(command: &Command) -> String {
    let variables = command
        .get_envs()
        .filter_map(|(key, value)| Some((key, value?)))
        .map(|(key, value)| format!("{}={}", key.display(), value.display()));
    let program = Path::new(command.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    let args = command.get_args().map(|arg| arg.display().to_string());

    variables
        .chain([name.display().to_string()])
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` with its output going straight to the terminal, and fails
/// unless it exits with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// Runs `command` for what it prints. Only failing to start it is an error:
/// for a probe, a non-zero exit is an answer.
pub fn probe(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", describe(command)))
}

/// Runs `command` for its standard output, and fails, quoting its standard
/// error, unless it exits with status 0.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let output = probe(command)?;
    let line = describe(command);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("`{line}` failed with {}: {}", output.status, stderr.trim());
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{line}` printed text that is not UTF-8"))
}
