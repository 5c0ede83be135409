//! `cargo xtask demo`: gatekeeper's datapath on the sample capture, under the
//! example policy, in monitor mode and then in enforce mode.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{
    cmd::{cargo, run, workspace_root},
    setup::{Mode, setup},
};

const POLICY: &str = "examples/policy.toml";
const CAPTURE: &str = "examples/sample.pcap";

/// Installs what is missing, builds the binary and replays the sample
/// capture through the real XDP program.
///
/// # Errors
///
/// When setup, the build or a gatekeeper command fails.
pub fn demo() -> Result<()> {
    setup(Mode::Install)?;
    let root = workspace_root();

    println!("\n==> building gatekeeper");
    run(cargo().args(["build", "--package", "gatekeeper", "--bin", "gatekeeper"]))?;
    let gatekeeper = target_dir(root).join("debug").join("gatekeeper");

    println!("\n==> the example policy: gatekeeper policy check {POLICY}");
    run(Command::new(&gatekeeper)
        .args(["policy", "check", POLICY])
        .current_dir(root))?;

    println!(
        "\n==> the sample capture under it, in monitor mode \
         (gatekeeper replay --policy {POLICY} --pcap {CAPTURE})"
    );
    run(Command::new(&gatekeeper)
        .args(["replay", "--policy", POLICY, "--pcap", CAPTURE])
        .current_dir(root))?;

    let scratch = env::temp_dir().join(format!("gatekeeper-demo-{}", std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let enforce = scratch.join("policy-enforce.toml");
    let result = write_enforce_copy(&root.join(POLICY), &enforce).and_then(|()| {
        println!("\n==> the same capture with mode = \"enforce\": would-deny becomes deny");
        run(Command::new(&gatekeeper)
            .arg("replay")
            .arg("--policy")
            .arg(&enforce)
            .args(["--pcap", CAPTURE])
            .current_dir(root))
    });
    let _ = fs::remove_dir_all(&scratch);
    result?;

    println!(
        "\n==> try it on your own gateway's traffic:\n\
         \x20   tcpdump -i eth0 -w gateway.pcap 'tcp port 25'      # capture a while\n\
         \x20   {bin} policy check my-policy.toml\n\
         \x20   {bin} replay --policy my-policy.toml --pcap gateway.pcap\n\
         Every `would-deny` or `deny` line is a source that no connector admits.",
        bin = gatekeeper.display()
    );
    Ok(())
}

fn write_enforce_copy(policy: &Path, copy: &Path) -> Result<()> {
    let text =
        fs::read_to_string(policy).with_context(|| format!("reading {}", policy.display()))?;
    let enforce = text.replace("mode = \"monitor\"", "mode = \"enforce\"");
    anyhow::ensure!(
        enforce != text,
        "{} has no `mode = \"monitor\"` line to switch",
        policy.display()
    );
    fs::write(copy, enforce).with_context(|| format!("writing {}", copy.display()))
}

fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}
