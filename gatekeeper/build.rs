//! Builds the XDP program for the BPF target and leaves the object in
//! `OUT_DIR`, where `src/datapath.rs` embeds it.

use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the crate has no parent directory")?
        .join("gatekeeper-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("the eBPF crate's path is not UTF-8")?;
    let package = Package {
        name: "gatekeeper-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
