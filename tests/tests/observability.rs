//! The source inventory and the deny log of `gatekeeper run`, on a veth pair
//! between namespaces: real handshakes for exact counts, and a SYN flood from
//! thousands of sources, sent as raw frames, for the rate limit.

use std::{
    net::Ipv6Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use gatekeeper_tests::{
    frames::{Frame, TcpSeg},
    live::{
        Daemon, ENFORCE_POLICY, GATEWAY_ADDRS, OUTSIDE_ADDRS, PolicyFile, SmtpListener, gatekeeper,
        http_get, pin_dir, sample, smtp_connect,
    },
    netns::Link,
    support::require_root,
};

fn inventory(pins: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["inventory", "--pin-dir", pins.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = gatekeeper(&args);
    assert!(
        output.status.success(),
        "gatekeeper inventory failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn the_inventory_lists_exactly_the_sources_seen_and_suggest_admits_them() {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    let _listener = SmtpListener::start(&link);
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    for _ in 0..2 {
        assert!(smtp_connect(&link, "198.51.100.1:25").is_ok());
    }
    for _ in 0..3 {
        assert!(smtp_connect(&link, "203.0.113.1:25").is_err());
    }
    assert!(smtp_connect(&link, "[2001:db8:bad::1]:25").is_err());

    let entries: Vec<serde_json::Value> = inventory(&pins, &["--json"])
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    let summary: Vec<(String, u64, serde_json::Value, u64)> = entries
        .iter()
        .map(|entry| {
            (
                entry["source"].as_str().unwrap().to_owned(),
                entry["attempts"].as_u64().unwrap(),
                entry["connector"].clone(),
                entry["last_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("203.0.113.9".to_owned(), 3, serde_json::Value::Null, 25),
            ("198.51.100.7".to_owned(), 2, "upstream-filter".into(), 25),
            ("2001:db8:bad::9".to_owned(), 1, serde_json::Value::Null, 25),
        ]
    );
    let text = inventory(&pins, &["--unauthorized"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("SOURCE"));
    assert!(lines[1].starts_with("203.0.113.9 ") && lines[1].contains(" unauthorized "));
    assert!(lines[2].starts_with("2001:db8:bad::9 "));
    assert_eq!(inventory(&pins, &["--limit", "1"]).lines().count(), 2);

    // Appending the suggestion admits both unauthorized sources.
    let suggestion = inventory(&pins, &["--suggest"]);
    policy.replace(&format!("{ENFORCE_POLICY}\n{suggestion}"));
    daemon.wait_for_log("policy reloaded", Duration::from_secs(10));
    assert!(smtp_connect(&link, "203.0.113.1:25").is_ok());
    assert!(smtp_connect(&link, "[2001:db8:bad::1]:25").is_ok());
    let after = inventory(&pins, &["--unauthorized"]);
    assert_eq!(after.lines().count(), 1, "{after}");

    let metrics = http_get(&link, "/metrics").1;
    assert_eq!(sample(&metrics, "gatekeeper_inventory_sources"), 3.0);
}

/// Opens an AF_PACKET socket on `ifname` in the calling thread's namespace.
fn packet_socket(ifname: &str) -> (OwnedFd, libc::sockaddr_ll) {
    // SAFETY: plain socket creation; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).expect("an interface name");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain old data; zero is a valid start.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits");
    address.sll_halen = 6;
    (fd, address)
}

#[test]
fn the_deny_log_keeps_to_its_rate_and_counts_the_rest() {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    const RATE: u64 = 50;
    const INVENTORY: u64 = 2048;
    let mut daemon = Daemon::start(
        &link,
        policy.path(),
        &pins,
        &[
            "--log-rate",
            &RATE.to_string(),
            "--inventory-size",
            &INVENTORY.to_string(),
        ],
    );

    let gateway_mac: Vec<u8> = link
        .gateway
        .mac(&link.gateway_if)
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16).expect("a MAC byte"))
        .collect();
    let gateway_mac: [u8; 6] = gateway_mac.try_into().expect("six bytes");
    let outside_if = link.outside_if.clone();

    // SYNs to port 25 from 20,000 sources in 2001:db8:bad::/48, as fast as
    // one thread can send them.
    const FRAMES: u32 = 20_000;
    let started = Instant::now();
    link.outside.run(move || {
        let (socket, address) = packet_socket(&outside_if);
        let destination: Ipv6Addr = "2001:db8:bad::1".parse().unwrap();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..FRAMES {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let source = Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xbad,
                (state >> 48) as u16,
                (state >> 32) as u16,
                (state >> 16) as u16,
                state as u16,
                n as u16,
            );
            let frame = Frame::ipv6(source, destination)
                .dst_mac(gateway_mac)
                .tcp(TcpSeg::syn(1024 + (n % 60000) as u16, 25))
                .build();
            // SAFETY: the frame and the address outlive the call.
            let sent = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&address).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap(),
                )
            };
            assert_eq!(
                sent,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    });
    let flood_time = started.elapsed();

    // Let the program and the controller catch up, then read the counters.
    std::thread::sleep(Duration::from_millis(500));
    let metrics = http_get(&link, "/metrics").1;
    let denied = sample(
        &metrics,
        r#"gatekeeper_gated_syns_total{verdict="deny",family="ipv6"}"#,
    );
    let sent = sample(&metrics, "gatekeeper_deny_events_sent_total");
    let dropped = sample(&metrics, "gatekeeper_deny_events_dropped_total");
    let sources = sample(&metrics, "gatekeeper_inventory_sources");

    println!(
        "flood of {FRAMES} frames in {flood_time:?}: {denied} denied, {sent} logged, \
         {dropped} counted as dropped, {sources} sources in the inventory"
    );
    assert!(
        denied > 0.0 && denied <= f64::from(FRAMES),
        "denied {denied}"
    );
    assert_eq!(
        sent + dropped,
        denied,
        "every deny is either logged or counted as dropped"
    );
    assert!(
        dropped > 0.0,
        "a flood of {denied} denies must exceed the rate"
    );
    // Each CPU sends at most its burst plus the rate for the time elapsed
    // (with a second's slack for the time before and after the flood).
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let burst = (RATE / 10).max(1) as f64;
    let bound = cpus * (burst + RATE as f64 * (flood_time.as_secs_f64() + 1.0));
    assert!(sent <= bound, "{sent} events sent, the rate allows {bound}");
    assert!(
        sent >= burst,
        "{sent} events sent, less than one CPU's burst"
    );
    // Each CPU remembers at most INVENTORY sources; a source is counted
    // once however many CPUs saw it. Thousands of distinct sources hashed
    // into INVENTORY / 4 sets of four fill every set of a CPU that saw them.
    assert!(
        sources <= INVENTORY as f64 * cpus,
        "{sources} sources in {cpus} inventories of {INVENTORY}"
    );
    if denied >= 10_000.0 {
        assert!(
            sources >= INVENTORY as f64,
            "{sources} sources after {denied} distinct ones, less than one full inventory"
        );
    }
    assert!(sources > 0.0);

    // The controller logs exactly the events sent, one line each.
    daemon.wait_for_logs("gatekeeper::deny", sent as usize, Duration::from_secs(10));
    let logged = daemon
        .log()
        .lines()
        .filter(|line| line.contains("gatekeeper::deny"))
        .count();
    assert_eq!(logged as f64, sent);
    let sample_line = daemon
        .log()
        .lines()
        .find(|line| line.contains("gatekeeper::deny"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        sample_line.contains("destination=2001:db8:bad::1")
            && sample_line.contains("destination_port=25")
            && sample_line.contains(&format!("iface=\"{}\"", link.gateway_if))
            && sample_line.contains("family=\"ipv6\""),
        "{sample_line}"
    );
}

#[test]
fn the_programs_own_debug_log_is_off_unless_asked_for() {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    let policy = PolicyFile::new(ENFORCE_POLICY);

    for (extra, expect_lines) in [(&[][..], false), (&["--ebpf-log", "debug"][..], true)] {
        let pins = pin_dir();
        let mut daemon = Daemon::start(&link, policy.path(), &pins, extra);
        assert!(smtp_connect(&link, "203.0.113.1:25").is_err());
        daemon.wait_for_log("gatekeeper::deny", Duration::from_secs(10));
        let log = daemon.log();
        let line = log.lines().find(|line| line.contains("gatekeeper::ebpf"));
        if expect_lines {
            let line = line.unwrap_or_else(|| panic!("no eBPF log line in:\n{log}"));
            assert!(
                line.contains("gated SYN from 203.0.113.9 to port 25, connector id 4294967295"),
                "{line}"
            );
        } else {
            assert_eq!(line, None, "the eBPF log is on by default:\n{log}");
        }
        assert!(daemon.stop().success());
    }
}
