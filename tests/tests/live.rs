//! `gatekeeper run` on a real veth pair between two network namespaces: real
//! TCP handshakes, the real policy file, and the live commands reading the
//! pins.

use std::{process::Command, time::Duration};

use gatekeeper_tests::{
    live::{
        ALLOWED_V4, ALLOWED_V6, Daemon, ENFORCE_POLICY, GATEWAY_ADDRS, OUTSIDE_ADDRS, PolicyFile,
        STRANGER_V4, STRANGER_V6, SmtpListener, assert_admitted, assert_refused, gatekeeper,
        gateway, pin_dir, status_json,
    },
    netns::Link,
    support::require_root,
};

fn verdict(status: &serde_json::Value, verdict: &str, family: &str) -> u64 {
    status["counters"]["verdicts"][verdict][family]
        .as_u64()
        .unwrap_or_else(|| panic!("no {verdict}/{family} counter in {status}"))
}

fn allowed_for(status: &serde_json::Value, connector: &str) -> u64 {
    status["connectors"]
        .as_array()
        .expect("a connector list")
        .iter()
        .find(|entry| entry["name"] == connector)
        .and_then(|entry| entry["allowed"].as_u64())
        .unwrap_or_else(|| panic!("no connector {connector} in {status}"))
}

#[test]
fn enforce_admits_connectors_and_drops_everyone_else() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    assert_admitted(&link, ALLOWED_V4);
    assert_admitted(&link, ALLOWED_V6);
    assert_refused(&link, STRANGER_V4);
    assert_refused(&link, STRANGER_V6);
    assert_admitted(&link, ALLOWED_V4);

    let status = status_json(&pins);
    assert_eq!(status["interfaces"][0]["name"], link.gateway_if.as_str());
    assert_eq!(status["interfaces"][0]["xdp_mode"], "native");
    assert_eq!(status["policy"]["mode"], "enforce");
    assert_eq!(status["policy"]["generation"], 1);
    assert_eq!(status["policy"]["ports"], serde_json::json!([25]));
    assert_eq!(verdict(&status, "allow", "ipv4"), 2);
    assert_eq!(verdict(&status, "allow", "ipv6"), 1);
    assert_eq!(verdict(&status, "deny", "ipv4"), 1);
    assert_eq!(verdict(&status, "deny", "ipv6"), 1);
    assert_eq!(verdict(&status, "would_deny", "ipv4"), 0);
    assert_eq!(allowed_for(&status, "upstream-filter"), 3);

    let text = gatekeeper(&["status", "--pin-dir", pins.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!(
        "interface {}: attached (native mode)",
        link.gateway_if
    )));
    assert!(
        text.contains("policy: generation 1, enforce mode"),
        "{text}"
    );

    assert!(daemon.stop().success());
    assert!(!pins.exists(), "gatekeeper run left pins behind");
    // Detached: the stranger gets through again.
    assert_admitted(&link, STRANGER_V4);
}

#[test]
fn monitor_admits_everyone_and_counts_would_deny() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(&ENFORCE_POLICY.replace("enforce", "monitor"));
    let pins = pin_dir();
    let _daemon = Daemon::start(&link, policy.path(), &pins, &["--xdp-mode", "skb"]);

    assert_admitted(&link, ALLOWED_V4);
    assert_admitted(&link, STRANGER_V4);
    assert_admitted(&link, STRANGER_V6);

    let status = status_json(&pins);
    assert_eq!(status["interfaces"][0]["xdp_mode"], "skb");
    assert_eq!(status["policy"]["mode"], "monitor");
    assert_eq!(verdict(&status, "allow", "ipv4"), 1);
    assert_eq!(verdict(&status, "would_deny", "ipv4"), 1);
    assert_eq!(verdict(&status, "would_deny", "ipv6"), 1);
    assert_eq!(verdict(&status, "deny", "ipv4"), 0);
    assert_eq!(verdict(&status, "deny", "ipv6"), 0);
}

#[test]
fn the_policy_reloads_live_and_a_broken_file_keeps_the_running_one() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    assert_refused(&link, STRANGER_V4);

    let admitting = ENFORCE_POLICY.replace(
        r#"sources = ["198.51.100.0/24", "2001:db8:100::/48"]"#,
        r#"sources = ["198.51.100.0/24", "2001:db8:100::/48", "203.0.113.0/24"]"#,
    );
    policy.replace(&admitting);
    daemon.wait_for_log("policy reloaded", Duration::from_secs(10));
    assert_admitted(&link, STRANGER_V4);
    assert_eq!(status_json(&pins)["policy"]["generation"], 2);

    policy.replace(ENFORCE_POLICY);
    daemon.wait_for_logs("policy reloaded", 2, Duration::from_secs(10));
    assert_refused(&link, STRANGER_V4);

    policy.replace("mode = \"enforce\"\nports = [25\n");
    daemon.wait_for_log("policy rejected", Duration::from_secs(10));
    assert_refused(&link, STRANGER_V4);
    assert_admitted(&link, ALLOWED_V4);

    // SIGHUP with the broken file still in place: rejected again.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_logs("policy rejected", 2, Duration::from_secs(10));
    let status = status_json(&pins);
    assert_eq!(status["policy"]["generation"], 3);
    assert_eq!(verdict(&status, "deny", "ipv4"), 3);
    assert_eq!(verdict(&status, "allow", "ipv4"), 2);

    // Deleting the file keeps the running policy too.
    std::fs::remove_file(policy.path()).expect("removing the policy file");
    daemon.wait_for_log("policy file deleted", Duration::from_secs(10));
    assert_refused(&link, STRANGER_V4);
}

#[test]
fn check_answers_from_the_live_policy_and_from_a_file() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let _daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    let dir = pins.to_str().unwrap();
    let file = policy.path().to_str().unwrap();

    for (addr, code, words) in [
        ("198.51.100.200", 0, "admitted by connector upstream-filter"),
        (
            "2001:db8:100:ffff::1",
            0,
            "admitted by connector upstream-filter",
        ),
        ("203.0.113.9", 1, "not admitted by any connector"),
        ("2001:db8:bad::9", 1, "not admitted by any connector"),
    ] {
        for source in [["--pin-dir", dir], ["--policy", file]] {
            let output = gatekeeper(&["check", addr, source[0], source[1]]);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                output.status.code(),
                Some(code),
                "check {addr} {source:?}: {stdout}"
            );
            assert!(stdout.contains(words), "check {addr} {source:?}: {stdout}");
        }
    }
    let nothing = gatekeeper(&[
        "check",
        "192.0.2.1",
        "--pin-dir",
        "/sys/fs/bpf/gk-nothing-here",
    ]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no gatekeeper is loaded"));
}

#[test]
fn a_second_run_refuses_and_detach_removes_an_orphan() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    let second = Daemon::start_expecting_failure(&link, policy.path(), &pins, &[]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "another gatekeeper run is using {}; stop it first",
            pins.display()
        )),
        "{stderr}"
    );
    // The first one is untouched.
    assert_refused(&link, STRANGER_V4);

    // A crash leaves the program attached through its pinned link: still
    // enforcing, and an orphan.
    daemon.crash();
    assert_refused(&link, STRANGER_V4);
    let dir = pins.to_str().unwrap();
    let detached = gatekeeper(&["detach", "--pin-dir", dir]);
    assert!(detached.status.success());
    assert_eq!(
        String::from_utf8_lossy(&detached.stdout),
        format!("detached from {}\n", link.gateway_if)
    );
    assert!(!pins.exists(), "detach left pins behind");
    assert_admitted(&link, STRANGER_V4);
    let xdp = Command::new("ip")
        .args([
            "-n",
            link.gateway.name(),
            "-d",
            "link",
            "show",
            &link.gateway_if,
        ])
        .output()
        .expect("ip link show");
    assert!(!String::from_utf8_lossy(&xdp.stdout).contains("prog/xdp"));

    let status = gatekeeper(&["status", "--pin-dir", dir]);
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stderr).contains("no gatekeeper is loaded"));
}

#[test]
fn a_vlan_tagged_path_is_judged_the_same() {
    require_root();
    let Some(link) = Link::with_vlan(100, &OUTSIDE_ADDRS, &GATEWAY_ADDRS) else {
        // The BPF_PROG_RUN tests in datapath.rs cover tagged frames either way.
        println!("skipped: this kernel cannot create VLAN devices (CONFIG_VLAN_8021Q is off)");
        return;
    };
    let _listener = SmtpListener::start(&link);
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    // Attached to the veth itself: the frames it sees carry the tag.
    let _daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    assert_admitted(&link, ALLOWED_V4);
    assert_admitted(&link, ALLOWED_V6);
    assert_refused(&link, STRANGER_V4);
    assert_refused(&link, STRANGER_V6);

    let status = status_json(&pins);
    assert_eq!(verdict(&status, "allow", "ipv4"), 1);
    assert_eq!(verdict(&status, "allow", "ipv6"), 1);
    assert_eq!(verdict(&status, "deny", "ipv4"), 1);
    assert_eq!(verdict(&status, "deny", "ipv6"), 1);
}

#[test]
fn syns_to_addresses_outside_destinations_are_not_gated() {
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(&ENFORCE_POLICY.replace(
        "ports = [25]",
        "ports = [25]\ndestinations = [\"198.51.100.1\", \"2001:db8:100::1\"]",
    ));
    let pins = pin_dir();
    let _daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    // 203.0.113.1 and 2001:db8:bad::1 are the gateway's too, but not listed.
    assert_admitted(&link, STRANGER_V4);
    assert_admitted(&link, STRANGER_V6);
    assert_admitted(&link, ALLOWED_V4);

    let status = status_json(&pins);
    assert_eq!(status["policy"]["destinations"], 2);
    assert_eq!(verdict(&status, "allow", "ipv4"), 1);
    assert_eq!(verdict(&status, "deny", "ipv4"), 0);
    assert_eq!(verdict(&status, "deny", "ipv6"), 0);
}
