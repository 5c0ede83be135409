//! `cargo xtask setup`: checks each build and test prerequisite in turn and
//! installs only the missing ones.

use std::{
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{cargo, describe, probe, run, stdout_of},
    parse,
};

/// The bpf-linker release `cargo install` builds when none fits.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz release `cargo install` builds when none is installed.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Where the privileged tests pin maps and programs.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// What dpkg-query prints as the status of an installed package.
const DPKG_INSTALLED: &str = "install ok installed";

/// Whether setup may change the machine.
#[derive(Clone, Copy)]
pub enum Mode {
    Install,
    Check,
}

/// Checks every prerequisite; in [`Mode::Install`] installs each missing one,
/// in [`Mode::Check`] fails at the end if any is missing.
///
/// # Errors
///
/// When a check cannot run, an install fails, or (in check mode) something is
/// missing.
pub fn setup(mode: Mode) -> Result<()> {
    let mut report = Report {
        mode,
        missing: Vec::new(),
    };

    if nightly_toolchain(&mut report)? {
        rust_src(&mut report)?;
        let major = nightly_llvm_major()?;
        println!("ok: nightly rustc uses LLVM {major}");
        debian_packages(&mut report, major)?;
        bpf_linker(&mut report, major)?;
        cargo_fuzz(&mut report)?;
    } else {
        println!(
            "skipped: rust-src, the LLVM version, Debian packages, bpf-linker and \
             cargo-fuzz (each depends on the nightly toolchain)"
        );
    }
    bpffs(&mut report)?;
    warn_unless_root()?;

    report.finish()
}

/// Says, one line per check, what setup found missing and what it does.
struct Report {
    mode: Mode,
    missing: Vec<String>,
}

impl Report {
    /// Prints that `what` is missing and how `fix` deals with it; returns
    /// whether the caller should now run `fix`.
    fn needs(&mut self, what: &str, fix: &Command) -> bool {
        match self.mode {
            Mode::Install => {
                println!("installing: {what}: `{}`", describe(fix));
                true
            }
            Mode::Check => {
                println!("missing: {what} (fix: `{}`)", describe(fix));
                self.missing.push(what.to_owned());
                false
            }
        }
    }

    fn finish(self) -> Result<()> {
        if self.missing.is_empty() {
            return Ok(());
        }
        bail!(
            "missing: {}; `cargo xtask setup` installs them",
            self.missing.join(", ")
        )
    }
}

/// Returns whether the nightly toolchain is there by the end.
fn nightly_toolchain(report: &mut Report) -> Result<bool> {
    let list = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    if let Some(name) = parse::nightly_toolchain(&list) {
        println!("ok: nightly toolchain {name}");
        return Ok(true);
    }

    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
    if !report.needs("the nightly toolchain", &install) {
        return Ok(false);
    }
    run(&mut install).context(
        "could not install the nightly toolchain; the eBPF program only builds with \
         nightly; install it by hand if this machine cannot reach \
         static.rust-lang.org",
    )?;
    Ok(true)
}

fn rust_src(report: &mut Report) -> Result<()> {
    let list = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if parse::has_component(&list, "rust-src") {
        println!("ok: rust-src for nightly");
        return Ok(());
    }

    let mut install = Command::new("rustup");
    install.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    if !report.needs("rust-src for nightly", &install) {
        return Ok(());
    }
    run(&mut install)
}

/// The LLVM major version of the nightly rustc: the one place it is decided,
/// since the LLVM packages and bpf-linker must match it.
fn nightly_llvm_major() -> Result<u32> {
    let mut rustc = Command::new("rustc");
    rustc.args(["+nightly", "-vV"]);
    let version = stdout_of(&mut rustc)?;
    parse::rustc_llvm_major(&version).with_context(|| {
        format!(
            "`{}` printed no `LLVM version: MAJOR...` line",
            describe(&rustc)
        )
    })
}

/// The LLVM libraries bpf-linker builds against, and the tools the tests run.
fn debian_packages(report: &mut Report, major: u32) -> Result<()> {
    let wanted = [
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".to_owned(),
        "libzstd-dev".to_owned(),
        "iproute2".to_owned(),
        // The replay tests capture real handshakes with it, and use it as an
        // independent reader of the captures they write.
        "tcpdump".to_owned(),
        // The load test compares gatekeeper with an nftables netdev ingress
        // chain and with xdp-filter, the packaged XDP filter closest to it.
        "nftables".to_owned(),
        "xdp-tools".to_owned(),
        // The load test turns GRO on for the gateway's veth (a veth without an
        // XDP program takes redirected frames only then) and reads its
        // per-queue XDP counters.
        "ethtool".to_owned(),
        // The load test's smoke check lints the pktgen script with it.
        "shellcheck".to_owned(),
    ];
    let mut absent = Vec::new();
    for package in wanted {
        if dpkg_installed(&package)? {
            println!("ok: package {package}");
        } else {
            absent.push(package);
        }
    }
    if absent.is_empty() {
        return Ok(());
    }

    let mut install = apt_get();
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&absent);
    let what = format!("packages {}", absent.join(" "));
    if !report.needs(&what, &install) {
        return Ok(());
    }
    run(apt_get().arg("update"))?;
    run(&mut install).with_context(|| {
        format!(
            "could not install {what}; LLVM {major} comes from apt.llvm.org when \
             the configured apt sources lack it"
        )
    })
}

fn dpkg_installed(package: &str) -> Result<bool> {
    // An unknown package makes dpkg-query fail: that only means "not installed".
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f=${Status}", package]);
    let output = probe(&mut query)?;
    let status = String::from_utf8_lossy(&output.stdout);
    Ok(output.status.success() && status.trim() == DPKG_INSTALLED)
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

/// What setup learned about the bpf-linker it would use.
enum Linker {
    /// Fits: a line saying what was found.
    Fits(String),
    /// Needs (re)installing, and why.
    Unfit(String),
}

fn bpf_linker(report: &mut Report, major: u32) -> Result<()> {
    let reason = match inspect_bpf_linker(major)? {
        Linker::Fits(found) => {
            println!("ok: {found}");
            return Ok(());
        }
        Linker::Unfit(reason) => reason,
    };

    let mut install = cargo_install_bpf_linker(major);
    let what = format!("bpf-linker {BPF_LINKER_VERSION} for LLVM {major} ({reason})");
    if !report.needs(&what, &install) {
        return Ok(());
    }
    run(&mut install)?;

    match inspect_bpf_linker(major)? {
        Linker::Fits(found) => println!("ok: {found}"),
        Linker::Unfit(reason) => {
            bail!("bpf-linker is still unfit after installing it: {reason}")
        }
    }
    Ok(())
}

fn inspect_bpf_linker(major: u32) -> Result<Linker> {
    let on_path = find_on_path("bpf-linker");
    let Some(path) = on_path.clone().or_else(|| in_cargo_bin("bpf-linker")) else {
        return Ok(Linker::Unfit("not on PATH nor in ~/.cargo/bin".to_owned()));
    };

    let mut version = Command::new(&path);
    version.arg("--version");
    let output = probe(&mut version)?;
    if !output.status.success() {
        let problem = format!("`{}` failed with {}", describe(&version), output.status);
        return Ok(Linker::Unfit(problem));
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let release = parse::bpf_linker_version(&printed).unwrap_or("of unknown version");

    if on_path.is_none() {
        println!(
            "warning: {} is not on PATH, where the eBPF build looks for bpf-linker",
            path.parent().unwrap_or(&path).display()
        );
    }
    // bpf-linker --version says nothing about LLVM; the library it loads does.
    let found = format!("bpf-linker {release} at {}", path.display());
    let linker = match shared_llvm_major(&path)? {
        Some(linked) if linked == major => {
            Linker::Fits(format!("{found}, linked against LLVM {linked}"))
        }
        Some(linked) => Linker::Unfit(format!(
            "{found} is linked against LLVM {linked}, nightly rustc uses LLVM {major}"
        )),
        None => Linker::Fits(format!(
            "{found} (no shared libLLVM: LLVM is linked in statically, \
             so its version cannot be checked)"
        )),
    };
    Ok(linker)
}

/// The LLVM major of the libLLVM `binary` loads, or `None` when it loads none.
fn shared_llvm_major(binary: &Path) -> Result<Option<u32>> {
    // ldd fails on a statically linked binary: that also means "none".
    let output = probe(Command::new("ldd").arg(binary))?;
    if !output.status.success() {
        return Ok(None);
    }
    let libraries = String::from_utf8_lossy(&output.stdout);
    Ok(parse::ldd_llvm_major(&libraries))
}

fn cargo_install_bpf_linker(major: u32) -> Command {
    let llvm_prefix = format!("/usr/lib/llvm-{major}");
    // bpf-linker's build script reads LLVM_PREFIX; llvm-sys reads its own
    // variable, named after its version (MAJOR then 1). Without both, the
    // build looks for libLLVM under /usr and fails to link.
    let llvm_sys_prefix = format!("LLVM_SYS_{major}1_PREFIX");
    let mut install = cargo();
    install
        .env("LLVM_PREFIX", &llvm_prefix)
        .env(llvm_sys_prefix, &llvm_prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--force");
    install
}

/// cargo-fuzz runs the fuzz targets (`cargo xtask fuzz`); any release
/// will do, it only drives the nightly cargo and libFuzzer.
fn cargo_fuzz(report: &mut Report) -> Result<()> {
    if let Some(path) = find_on_path("cargo-fuzz").or_else(|| in_cargo_bin("cargo-fuzz")) {
        println!("ok: cargo-fuzz at {}", path.display());
        return Ok(());
    }

    let mut install = cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]);
    if !report.needs(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"), &install) {
        return Ok(());
    }
    run(&mut install)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// `name` in the directory `cargo install` puts binaries in.
fn in_cargo_bin(name: &str) -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    let candidate = cargo_home.join("bin").join(name);
    is_executable(&candidate).then_some(candidate)
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = fs::metadata(path) else {
        return false;
    };
    metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
}

fn bpffs(report: &mut Report) -> Result<()> {
    let mounts = read_proc("/proc/mounts")?;
    if parse::bpffs_mounted(&mounts, BPFFS_MOUNT_POINT) {
        println!("ok: bpffs mounted at {BPFFS_MOUNT_POINT}");
        return Ok(());
    }

    let mut mount = Command::new("mount");
    mount.args(["-t", "bpf", "bpf", BPFFS_MOUNT_POINT]);
    if !report.needs(&format!("bpffs at {BPFFS_MOUNT_POINT}"), &mount) {
        return Ok(());
    }
    run(&mut mount)
}

/// Only warns: setup itself may already be done, but the privileged tests
/// will not run without root.
fn warn_unless_root() -> Result<()> {
    let status = read_proc("/proc/self/status")?;
    match parse::effective_uid(&status) {
        Some(0) => println!("ok: running as root"),
        Some(uid) => println!(
            "warning: running as uid {uid}, not root; installing needs root, and so do \
             the privileged tests (gatekeeper-tests)"
        ),
        None => println!(
            "warning: /proc/self/status shows no effective uid; the privileged tests \
             (gatekeeper-tests) need root"
        ),
    }
    Ok(())
}

fn read_proc(path: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("could not read {path}"))
}
