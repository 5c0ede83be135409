//! Builds the XDP programs for the BPF target and leaves their objects in
//! `OUT_DIR`, where `src/datapath.rs` embeds them.
//!
//! This does what `aya_build::build_ebpf` does (a nested `cargo build` of
//! the eBPF crate with the nightly toolchain and `-Z build-std=core`), plus
//! one code-generation flag that aya-build 0.2.0 offers no way to pass:
//! `+allows-misaligned-mem-access`. Without it LLVM reads every header field
//! that is not naturally aligned (an IPv4 address two bytes past a four-byte
//! boundary, say) one byte at a time and shifts the bytes together; with it,
//! one load each. The kernel's verifier accepts misaligned packet and map
//! value reads on architectures with efficient unaligned access (x86-64 and
//! arm64 among them) and the compiler keeps stack slots aligned, which the
//! verifier insists on.

use std::{
    env,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The nightly toolchain the eBPF crate builds with (rustup's name).
const TOOLCHAIN: &str = "nightly";

fn main() -> anyhow::Result<()> {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the crate has no parent directory")?
        .join("gatekeeper-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);

    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("little") => "bpfel-unknown-none",
        Ok("big") => "bpfeb-unknown-none",
        other => bail!("unsupported target endianness {other:?}"),
    };
    // aya-ebpf reads registers by the architecture it runs on.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH is not set")?;

    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-feature=+allows-misaligned-mem-access".to_owned(),
    ];
    let target_dir = out_dir.join("ebpf-target");
    let mut command = Command::new("rustup");
    command
        .args(["run", TOOLCHAIN, "cargo", "build", "--package", "gatekeeper-ebpf"])
        .args(["--bins", "--release", "--message-format=json"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        // The outer build's compiler is the stable one; the nested build
        // must pick the nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?} (is rustup installed?)"))?;

    // The nested cargo's progress lines, kept to be shown if it fails.
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let progress = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut executables = Vec::new();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the nested cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            println!("cargo:warning={line}");
            continue;
        };
        match message["reason"].as_str() {
            Some("compiler-artifact") => {
                if let (Some(name), Some(path)) = (
                    message["target"]["name"].as_str(),
                    message["executable"].as_str(),
                ) {
                    executables.push((name.to_owned(), PathBuf::from(path)));
                }
            }
            Some("compiler-message") => {
                let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
                // Expected: the flag above is a nightly-only feature.
                if rendered.contains("allows-misaligned-mem-access") {
                    continue;
                }
                for line in rendered.lines() {
                    println!("cargo:warning={line}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the nested cargo")?;
    let progress = progress.join().unwrap_or_default();
    if !status.success() {
        for line in progress {
            println!("cargo:warning={line}");
        }
        bail!("building the eBPF crate failed ({status}): {command:?}");
    }
    if executables.is_empty() {
        bail!("building the eBPF crate produced no object");
    }
    for (name, path) in executables {
        let destination = out_dir.join(&name);
        std::fs::copy(&path, &destination).with_context(|| {
            format!("copying {} to {}", path.display(), destination.display())
        })?;
    }
    Ok(())
}
