//! Hostile policies at the reload of a running `gatekeeper run`, on a real
//! veth pair: a million prefixes and one past the limit, bytes that are not
//! UTF-8, duplicate keys, a directory, a FIFO nobody writes to, a file whose
//! read fails, a file past the size limit, a policy larger than the source
//! table, and a storm of replacements. Each bad file is rejected with a log
//! line that says where and what, and real connections show the running
//! policy still enforcing. `gatekeeper/tests/hostile_policy.rs` has the same
//! files at `policy check` and at `run` start.

use std::{
    ffi::CString,
    fmt::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use gatekeeper::policy::MAX_FILE_BYTES;
use gatekeeper_common::MAX_SOURCE_PREFIXES;
use gatekeeper_tests::{
    live::{
        ALLOWED_V4, Daemon, ENFORCE_POLICY, Pins, PolicyFile, STRANGER_V4, assert_admitted,
        assert_refused, gateway, pin_dir, status_json,
    },
    netns::Link,
};

/// How long a reload of a million prefixes may take in a debug build
/// before the test gives up on it.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// The running policy still enforces `generation`: the connector admitted,
/// the stranger refused, the generation unchanged.
#[track_caller]
fn assert_still_enforcing(link: &Link, pins: &Path, generation: u64) {
    assert_admitted(link, ALLOWED_V4);
    assert_refused(link, STRANGER_V4);
    assert_eq!(status_json(pins)["policy"]["generation"], generation);
}

/// An enforce policy with `prefixes` IPv4 source prefixes in all: the
/// connector's /24, the stranger's /24 when `admit_stranger`, and /32s
/// in 240.0.0.0/4 (reserved, nobody's address; these prefixes never
/// leave the file), one per line from line 11.
fn policy_text(admit_stranger: bool, prefixes: u32) -> String {
    let stranger = if admit_stranger {
        ", \"203.0.113.0/24\""
    } else {
        ""
    };
    let bulk = prefixes - 1 - u32::from(admit_stranger);
    let mut text = String::with_capacity(bulk as usize * 20 + 256);
    write!(
        text,
        "mode = \"enforce\"\nports = [25]\n\n[[connector]]\nname = \"upstream-filter\"\n\
         sources = [\"198.51.100.0/24\", \"2001:db8:100::/48\"{stranger}]\n\n\
         [[connector]]\nname = \"bulk\"\nsources = [\n"
    )
    .expect("writing to a String");
    for host in 0..bulk {
        let [_, b, c, d] = host.to_be_bytes();
        writeln!(text, "\"{}.{b}.{c}.{d}\",", 240 + (host >> 24)).expect("writing to a String");
    }
    text.push_str("]\n");
    text
}

/// `ENFORCE_POLICY` that also admits the stranger: what every hostile file
/// below would install if it were taken.
fn admitting_policy() -> String {
    ENFORCE_POLICY.replace(
        r#""2001:db8:100::/48"]"#,
        r#""2001:db8:100::/48", "203.0.113.0/24"]"#,
    )
}

/// The log lines containing `needle`.
fn lines_with(daemon: &Daemon, needle: &str) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Replaces the policy file with a symbolic link to `target`, atomically,
/// as an editor's rename would.
fn replace_with_link(policy: &PolicyFile, target: &Path) {
    let staged = policy.path().with_file_name(".policy.toml.link");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged).expect("creating a symbolic link");
    std::fs::rename(&staged, policy.path()).expect("renaming the link into place");
}

#[test]
fn a_million_prefixes_reload_and_one_past_the_limit_keeps_the_running_policy() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    // A million /32s in 16 /16s take 4,112 chunks, more than the 4,096 the
    // daemon would size for its small starting policy.
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &["--table-chunks", "8192"]);

    policy.replace(&policy_text(false, MAX_SOURCE_PREFIXES));
    daemon.wait_for_log("policy reloaded", RELOAD_TIMEOUT);
    let status = status_json(&pins);
    assert_eq!(status["policy"]["ipv4_prefixes"], MAX_SOURCE_PREFIXES);
    assert_still_enforcing(&link, &pins, 2);

    // Were it taken, it would admit the stranger.
    policy.replace(&policy_text(true, MAX_SOURCE_PREFIXES + 1));
    daemon.wait_for_log("policy rejected", RELOAD_TIMEOUT);
    let rejected = lines_with(&daemon, "policy rejected");
    // The /24s come first, so bulk entry 1,048,575, on line 10 + 1,048,575,
    // is the one past the limit.
    let problem = format!(
        "{}:1048585:1: the connectors list 1048577 IPv4 source prefixes; at most 1048576 per \
         address family are allowed",
        policy.path().display()
    );
    assert!(rejected[0].contains(&problem), "{rejected:#?}");
    assert!(
        rejected[0].contains("the running policy stays"),
        "{rejected:#?}"
    );
    assert_eq!(
        status_json(&pins)["policy"]["ipv4_prefixes"],
        MAX_SOURCE_PREFIXES
    );
    assert_still_enforcing(&link, &pins, 2);
}

#[test]
fn hostile_files_at_reload_are_rejected_and_the_running_policy_stays() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    let path = policy.path().display().to_string();
    let dir = policy
        .path()
        .parent()
        .expect("the policy file has a directory");

    let directory = dir.join("a-directory");
    std::fs::create_dir(&directory).expect("creating a directory");
    let fifo = dir.join("a-fifo");
    let c_fifo = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL in a temporary path");
    // SAFETY: c_fifo is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let huge = dir.join("huge.toml");
    // Sparse: no disk space, and nothing but zeros if it were read.
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len(MAX_FILE_BYTES + 1))
        .expect("creating a sparse file");

    let admitting = admitting_policy();
    let mut not_utf8 = admitting.clone().into_bytes();
    not_utf8.extend_from_slice(b"# caf\xe9 in Latin-1\n");
    let last_line = admitting.lines().count() + 1;

    type Replace<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Replace, String)> = vec![
        (
            "not UTF-8",
            Box::new(|| {
                let staged = dir.join(".latin1");
                std::fs::write(&staged, &not_utf8).expect("writing the file");
                std::fs::rename(&staged, policy.path()).expect("renaming it into place");
            }),
            format!("{path}:{last_line}:6: byte 0xe9 is not valid UTF-8"),
        ),
        (
            "a duplicate key",
            Box::new(|| policy.replace(&format!("{admitting}name = \"again\"\n"))),
            format!("{path}:{last_line}:1: duplicate key"),
        ),
        (
            "a directory",
            Box::new(|| replace_with_link(&policy, &directory)),
            format!("reading policy {path}: it is a directory, not a regular file"),
        ),
        (
            "a FIFO without a writer",
            Box::new(|| replace_with_link(&policy, &fifo)),
            format!("reading policy {path}: it is a FIFO, not a regular file"),
        ),
        (
            "a file whose read fails",
            Box::new(|| replace_with_link(&policy, Path::new("/proc/self/mem"))),
            format!("reading policy {path}: Input/output error (os error 5)"),
        ),
        (
            "a file past the size limit",
            Box::new(|| replace_with_link(&policy, &huge)),
            format!("reading policy {path}: it is larger than 268435456 bytes (256 MiB)"),
        ),
    ];

    for (count, (what, replace, error)) in cases.iter().enumerate() {
        replace();
        daemon.wait_for_logs("policy rejected", count + 1, Duration::from_secs(20));
        let rejected = lines_with(&daemon, "policy rejected");
        assert!(
            rejected[count].contains(error.as_str()),
            "{what}: the rejection does not say {error:?}:\n{}",
            rejected[count]
        );
        assert_still_enforcing(&link, &pins, 1);
    }

    // Still reloading: none of them stopped the daemon.
    policy.replace(&admitting);
    daemon.wait_for_log("policy reloaded", Duration::from_secs(20));
    assert_admitted(&link, STRANGER_V4);
    assert_eq!(status_json(&pins)["policy"]["generation"], 2);
}

/// Five /32s in five /16s besides ENFORCE_POLICY's own prefixes, which
/// take 1 chunk (the /24) and 4 (the /48).
fn needing_more_chunks() -> String {
    let hosts: Vec<String> = (1..=5).map(|n| format!("\"203.{n}.113.1\"")).collect();
    admitting_policy().replace(
        r#""203.0.113.0/24"]"#,
        &format!(r#""203.0.113.0/24", {}]"#, hosts.join(", ")),
    )
}

#[test]
fn a_reload_larger_than_the_table_is_refused_and_the_running_policy_stays() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &["--table-chunks", "8"]);
    assert_still_enforcing(&link, &pins, 1);

    policy.replace(&needing_more_chunks());
    daemon.wait_for_log("policy could not be installed", Duration::from_secs(20));
    let failed = lines_with(&daemon, "policy could not be installed");
    assert!(
        failed[0].contains(
            "the policy's sources compile to 16 table chunks; the table holds 8 per policy \
             (raise it with --table-chunks)"
        ) && failed[0].contains("the running policy stays"),
        "{failed:#?}"
    );
    assert_still_enforcing(&link, &pins, 1);
}

#[test]
fn a_start_larger_than_the_table_fails_and_attaches_nothing() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = Pins(pin_dir());
    let output =
        Daemon::start_expecting_failure(&link, policy.path(), &pins.0, &["--table-chunks", "4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gatekeeper run failed")
            && stderr.contains(
                "the policy's sources compile to 5 table chunks; the table holds 4 per policy"
            ),
        "{stderr}"
    );
    assert!(!pins.0.exists(), "the failed start left pins behind");
    // Nothing attached: the stranger gets through.
    assert_admitted(&link, STRANGER_V4);
}

/// Prefixes of the three policies the storm below switches between; a
/// reload reading a mix of two files would report another count or fail.
const STORM_A: u32 = 20_000;
const STORM_B: u32 = 30_001;
const STORM_C: u32 = 25_002;

/// Reloads the storm lasts for.
const STORM_RELOADS: usize = 20;

#[test]
fn a_reload_during_rapid_replacements_ends_with_a_whole_policy() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(&policy_text(true, STORM_A));
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &["--log-format", "json"]);
    let texts = [policy_text(true, STORM_A), policy_text(false, STORM_B)];

    // Replacements as fast as they go, and SIGHUPs beside them, so that
    // reloads start while the next rename lands.
    let stop = Arc::new(AtomicBool::new(false));
    let hangups = {
        let stop = Arc::clone(&stop);
        let pid = daemon.pid();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: signalling our own child, which is not reaped
                // before this thread is joined.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                thread::sleep(Duration::from_millis(3));
            }
        })
    };
    // Until the daemon has reloaded STORM_RELOADS times while files kept
    // landing, so that the storm is sure to overlap reloads.
    let mut round = 0;
    while lines_with(&daemon, "policy reloaded").len() < STORM_RELOADS {
        assert!(
            round < 100_000,
            "{round} replacements caused only {} reloads:\n{}",
            lines_with(&daemon, "policy reloaded").len(),
            daemon.log()
        );
        policy.replace(&texts[round % 2]);
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    hangups.join().expect("the SIGHUP thread");

    // The last word: once a reload reports C's count, every later one
    // reads C too.
    policy.replace(&policy_text(true, STORM_C));
    daemon.wait_for_log(
        &format!("\"ipv4_prefixes\":{STORM_C}"),
        Duration::from_secs(60),
    );

    let reloads: Vec<serde_json::Value> = lines_with(&daemon, "policy reloaded")
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    // The storm's own and C's.
    assert!(reloads.len() > STORM_RELOADS, "{reloads:#?}");
    println!(
        "{round} replacements; {} reloads during the storm and after it",
        reloads.len()
    );
    for line in &reloads {
        let prefixes = &line["fields"]["ipv4_prefixes"];
        assert!(
            [STORM_A, STORM_B, STORM_C]
                .iter()
                .any(|count| *prefixes == *count),
            "a reload installed {prefixes} prefixes: {line}"
        );
    }
    for failure in ["policy rejected", "policy could not be installed"] {
        let failed = lines_with(&daemon, failure);
        assert!(failed.is_empty(), "{failed:#?}");
    }
    assert_eq!(status_json(&pins)["policy"]["ipv4_prefixes"], STORM_C);
    assert_admitted(&link, STRANGER_V4);
    assert_admitted(&link, ALLOWED_V4);
}
