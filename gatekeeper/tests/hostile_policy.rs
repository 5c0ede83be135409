//! Hostile policy files at `gatekeeper policy check` and at `gatekeeper run`
//! start: a million prefixes, one past the limit, bytes that are not UTF-8,
//! duplicate keys, a directory, a FIFO nobody writes to, a file whose read
//! fails, a file past the size limit. Each must end with an error that says
//! where and what, and never hang. Needs no privileges: `run` reads its
//! policy before it touches an interface or a pin (the interface and pin
//! directory named here do not exist). Reloads of a running daemon are in
//! `tests/tests/hostile.rs`.

use std::{
    ffi::CString,
    fmt::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use gatekeeper::policy::MAX_FILE_BYTES;
use gatekeeper_common::MAX_SOURCE_PREFIXES;

/// A scratch directory of its own, removed on drop with all it holds.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gk-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("writing a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs gatekeeper and waits for it; a run that has not ended after a
/// minute is killed and fails the test, since hanging is the failure some
/// of these inputs provoke.
fn gatekeeper(args: &[&Path]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gatekeeper");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("polling gatekeeper").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatekeeper {args:?} did not end: it hangs");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collecting gatekeeper's output")
}

fn policy_check(file: &Path) -> Output {
    gatekeeper(&[Path::new("policy"), Path::new("check"), file])
}

/// `gatekeeper run` on an interface that does not exist, with pins in a
/// directory that does not exist: the policy is read first.
fn run_start(file: &Path) -> Output {
    let pins = std::env::temp_dir().join(format!("gk-hostile-{}-no-pins", std::process::id()));
    let args = [
        Path::new("run"),
        Path::new("--iface"),
        Path::new("gk-hostile0"),
        Path::new("--policy"),
        file,
        Path::new("--pin-dir"),
        &pins,
        Path::new("--metrics"),
        Path::new("off"),
    ];
    let output = gatekeeper(&args);
    assert!(!pins.exists(), "run created its pin directory");
    output
}

/// Asserts that `policy check` and `run` both fail on `file`, and that
/// `policy check` prints exactly `error` and `run` logs it.
#[track_caller]
fn assert_refused(file: &Path, error: &str) {
    let checked = policy_check(file);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "policy check: {stderr}");
    assert!(checked.stdout.is_empty(), "policy check printed a summary");
    assert_eq!(stderr, format!("{error}\n"), "policy check");

    let started = run_start(file);
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(1), "run: {stderr}");
    assert!(
        stderr.contains("gatekeeper run failed") && stderr.contains(error),
        "run does not log {error:?}:\n{stderr}"
    );
    assert!(!stderr.contains("attached"), "run attached:\n{stderr}");
}

/// A policy with `prefixes` IPv4 source prefixes in all: the allowed /24 of
/// the live tests and, one per line from line 11, /32s in 240.0.0.0/4
/// (reserved, nobody's address; these prefixes never leave the file).
fn large_policy(prefixes: u32) -> String {
    let mut text = String::with_capacity(prefixes as usize * 20 + 256);
    text.push_str(
        "mode = \"enforce\"\nports = [25]\n\n[[connector]]\nname = \"upstream-filter\"\n\
         sources = [\"198.51.100.0/24\", \"2001:db8:100::/48\"]\n\n\
         [[connector]]\nname = \"bulk\"\nsources = [\n",
    );
    for host in 0..prefixes - 1 {
        let [_, b, c, d] = host.to_be_bytes();
        writeln!(text, "\"{}.{b}.{c}.{d}\",", 240 + (host >> 24)).expect("writing to a String");
    }
    text.push_str("]\n");
    text
}

#[test]
fn a_policy_with_the_most_prefixes_allowed_is_valid() {
    let scratch = Scratch::new("at-limit");
    let file = scratch.file("policy.toml", large_policy(MAX_SOURCE_PREFIXES).as_bytes());
    let output = policy_check(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("connectors:   2 (1048576 IPv4 and 1 IPv6 source prefixes)"),
        "{stdout}"
    );
}

#[test]
fn one_prefix_past_the_limit_is_refused_where_it_goes_past() {
    let scratch = Scratch::new("past-limit");
    let file = scratch.file(
        "policy.toml",
        large_policy(MAX_SOURCE_PREFIXES + 1).as_bytes(),
    );
    // The /24 is the first IPv4 prefix, so bulk entry 1,048,576, on line
    // 10 + 1,048,576, is the one past the limit.
    assert_refused(
        &file,
        &format!(
            "{}:1048586:1: the connectors list 1048577 IPv4 source prefixes; at most 1048576 \
             per address family are allowed",
            file.display()
        ),
    );
}

#[test]
fn bytes_that_are_not_utf8_are_refused_at_the_first_bad_byte() {
    let scratch = Scratch::new("latin1");
    let file = scratch.file(
        "policy.toml",
        b"mode = \"enforce\"\nports = [25]\n[[connector]]\nname = \"caf\xe9\"\nsources = []\n",
    );
    assert_refused(
        &file,
        &format!(
            "{}:4:12: byte 0xe9 is not valid UTF-8; a policy must be UTF-8 text",
            file.display()
        ),
    );
}

#[test]
fn duplicate_keys_are_refused_at_the_second() {
    let scratch = Scratch::new("duplicates");
    let top = scratch.file(
        "top.toml",
        b"mode = \"enforce\"\nports = [25]\nmode = \"monitor\"\n",
    );
    assert_refused(&top, &format!("{}:3:1: duplicate key", top.display()));

    let inner = scratch.file(
        "connector.toml",
        b"mode = \"monitor\"\nports = [25]\n[[connector]]\nname = \"a\"\nsources = []\n\
          name = \"b\"\n",
    );
    assert_refused(&inner, &format!("{}:6:1: duplicate key", inner.display()));
}

#[test]
fn a_directory_is_refused() {
    let scratch = Scratch::new("directory");
    assert_refused(
        &scratch.0,
        &format!(
            "reading policy {}: it is a directory, not a regular file",
            scratch.0.display()
        ),
    );
}

#[test]
fn a_fifo_without_a_writer_is_refused_without_waiting_for_one() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.0.join("policy.toml");
    let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL in a temporary path");
    // SAFETY: c_path is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    assert_refused(
        &fifo,
        &format!(
            "reading policy {}: it is a FIFO, not a regular file",
            fifo.display()
        ),
    );
}

#[test]
fn a_file_whose_read_fails_is_refused_with_the_cause() {
    // A regular file by its type that root cannot read either: offset 0 of
    // the reading process's memory is never mapped, so read() fails.
    assert_refused(
        Path::new("/proc/self/mem"),
        "reading policy /proc/self/mem: Input/output error (os error 5)",
    );
}

#[test]
fn a_file_past_the_size_limit_is_refused_before_it_is_read() {
    let scratch = Scratch::new("huge");
    let file = scratch.file("policy.toml", b"");
    // Sparse: it takes no disk space, and a loader that read it first would
    // spend gigabytes on it.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|handle| handle.set_len(MAX_FILE_BYTES + 1))
        .expect("growing the file");
    assert_refused(
        &file,
        &format!(
            "reading policy {}: it is larger than 268435456 bytes (256 MiB), the most a policy \
             file may hold",
            file.display()
        ),
    );
}
