//! The command line as an operator meets it: `policy check` output and exit
//! codes, and usage errors. Needs no privileges.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

fn gatekeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(args)
        .output()
        .expect("running gatekeeper")
}

fn example_policy() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// A file in the temporary directory, removed on drop.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;

    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch_file(name: &str, contents: &[u8]) -> Scratch {
    let path = std::env::temp_dir().join(format!("gk-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("writing a scratch file");
    Scratch(path)
}

#[test]
fn policy_check_summarizes_a_valid_policy() {
    let path = example_policy();
    let output = gatekeeper(&["policy", "check", &path]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert_eq!(
        stdout,
        format!(
            "{path}: valid
  mode:         monitor
  ports:        25
  destinations: every local address
  connectors:   3 (3 IPv4 and 2 IPv6 source prefixes)
    upstream-filter          1 IPv4, 1 IPv6
    printers                 1 IPv4, 0 IPv6
    erp-app                  1 IPv4, 1 IPv6
  table:        18 chunks of 1 KiB per policy slot; `run` reserves 4096 (9.0 MiB for both slots)
"
        )
    );
}

#[test]
fn policy_check_lists_every_problem_with_its_place() {
    let path = scratch_file(
        "bad.toml",
        b"mode = \"enforce\"\nports = [25, 25]\n\n[[connector]]\nname = \"Relay\"\nsources = [\"198.51.100.7/24\"]\n",
    );
    let output = gatekeeper(&["policy", "check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 output");
    let file = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:2:14: duplicate port 25")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:5:8: connector name \"Relay\"")),
        "{stderr}"
    );
    assert_eq!(
        lines[2],
        format!(
            "{file}:6:12: 198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24 \
             (or 198.51.100.7/32 for the single host)?"
        )
    );
}

#[test]
fn policy_check_refuses_an_empty_enforce_policy_unless_allowed() {
    let path = scratch_file("empty.toml", b"mode = \"enforce\"\nports = [25]\n");
    let path = path.to_str().unwrap();
    let refused = gatekeeper(&["policy", "check", path]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-empty"));

    let allowed = gatekeeper(&["policy", "check", "--allow-empty", path]);
    assert_eq!(allowed.status.code(), Some(0));
}

#[test]
fn policy_check_reports_unreadable_files() {
    let dir = std::env::temp_dir();
    let output = gatekeeper(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("reading policy {}", dir.display())),
        "{stderr}"
    );

    let not_utf8 = scratch_file(
        "latin1.toml",
        b"mode = \"monitor\"\nports = [25]\n# caf\xe9\n",
    );
    let output = gatekeeper(&["policy", "check", not_utf8.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":3:6: byte 0xe9 is not valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn nonsense_arguments_get_a_usage_error() {
    for args in [
        &["policy"][..],
        &["policy", "check"],
        &["policy", "frobnicate", "x"],
        &["replay", "--policy", "p.toml"],
        &["replay", "--pcap"],
        &["--no-such-flag"],
        &["teleport"],
    ] {
        let output = gatekeeper(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error:") || stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
