//! `gatekeeper replay` end to end: the binary, the real XDP program, captures
//! written by the test and a capture of real handshakes written by tcpdump.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use gatekeeper_tests::{
    frames::{ACK, ETH_P_8021Q, Ext, Frame, TcpSeg, UdpDgram},
    netns::{Background, Link},
    pcap::{self, Format, LINKTYPE_RAW, Record},
    support::{gatekeeper_bin, require_root},
};

const POLICY: &str = r#"
mode = "enforce"
ports = [25]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]

[[connector]]
name = "printers"
sources = ["192.0.2.64/27"]
"#;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("writing a scratch file");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn replay(policy: &Path, capture: &Path, extra: &[&str]) -> Output {
    Command::new(gatekeeper_bin())
        .arg("replay")
        .arg("--policy")
        .arg(policy)
        .arg("--pcap")
        .arg(capture)
        .args(extra)
        .output()
        .expect("running gatekeeper replay")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "gatekeeper failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("output is UTF-8")
}

fn mixed_frames() -> Vec<Vec<u8>> {
    let syn = |src: Ipv4Addr| Frame::ipv4(src, GATEWAY).tcp(TcpSeg::syn(40000, 25));
    vec![
        syn(Ipv4Addr::new(198, 51, 100, 7)).build(),
        syn(Ipv4Addr::new(203, 0, 113, 9)).build(),
        syn(Ipv4Addr::new(192, 0, 2, 70))
            .vlan(ETH_P_8021Q, 20)
            .build(),
        Frame::ipv4(Ipv4Addr::new(203, 0, 113, 9), GATEWAY)
            .tcp(TcpSeg::new(40000, 25).flags(ACK))
            .build(),
        Frame::ipv4(Ipv4Addr::new(203, 0, 113, 9), GATEWAY)
            .udp(UdpDgram::new(53, 25))
            .build(),
        Frame::ipv6(
            Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1),
            GATEWAY_V6,
        )
        .tcp(TcpSeg::syn(40000, 25))
        .build(),
        Frame::ipv6(
            Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1),
            GATEWAY_V6,
        )
        .tcp(TcpSeg::syn(40000, 25))
        .build(),
        syn(Ipv4Addr::new(203, 0, 113, 9))
            .fragment(0, true)
            .l4_truncate(8)
            .pad_to_min()
            .build(),
        (0..9)
            .fold(
                Frame::ipv6(
                    Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 1),
                    GATEWAY_V6,
                )
                .tcp(TcpSeg::new(1, 25).flags(ACK)),
                |frame, _| frame.ext(Ext::destination_options(8)),
            )
            .build(),
        vec![0; 10],
    ]
}

const MIXED_EXPECTED: &str = "\
frame 1:     allow upstream-filter      tcp 198.51.100.7:40000 > 192.0.2.25:25 [S]
frame 2:     deny                       tcp 203.0.113.9:40000 > 192.0.2.25:25 [S]
frame 3:     allow printers             tcp 192.0.2.70:40000 > 192.0.2.25:25 [S]
frame 4:     pass                       tcp 203.0.113.9:40000 > 192.0.2.25:25 [.]
frame 5:     pass                       udp 203.0.113.9:53 > 192.0.2.25:25
frame 6:     allow upstream-filter      tcp [2001:db8:100::1]:40000 > [2001:db8:25::19]:25 [S]
frame 7:     deny                       tcp [2001:db8:bad::1]:40000 > [2001:db8:25::19]:25 [S]
frame 8:     deny                       tcp 203.0.113.9 > 192.0.2.25 fragment \
(first fragment without TCP flags, judged as a SYN)
frame 9:     deny                       tcp [2001:db8:bad::1]:1 > [2001:db8:25::19]:25 [.] \
(IPv6 extension headers past the bound, judged as a SYN)
frame 10:    skipped (10 bytes is shorter than an Ethernet header)
10 frames: 2 pass, 3 allow, 4 deny, 0 would-deny, 1 skipped
  allow printers: 1
  allow upstream-filter: 2
";

#[test]
fn replay_prints_each_frames_verdict_for_pcap_and_pcapng() {
    require_root();
    let scratch = Scratch::new("replay");
    let policy = scratch.file("policy.toml", POLICY);
    let records = pcap::records(mixed_frames());

    let classic = scratch.path("mixed.pcap");
    pcap::write_pcap(&classic, &records).expect("writing pcap");
    assert_eq!(stdout(&replay(&policy, &classic, &[])), MIXED_EXPECTED);

    let next_gen = scratch.path("mixed.pcapng");
    pcap::write_pcapng(&next_gen, &records).expect("writing pcapng");
    assert_eq!(stdout(&replay(&policy, &next_gen, &[])), MIXED_EXPECTED);

    let monitor = scratch.file(
        "monitor.toml",
        &POLICY.replace(r#"mode = "enforce""#, r#"mode = "monitor""#),
    );
    let expected_monitor = MIXED_EXPECTED
        .replace("  deny                 ", "  would-deny           ")
        .replace(
            "2 pass, 3 allow, 4 deny, 0 would-deny",
            "2 pass, 3 allow, 0 deny, 4 would-deny",
        );
    assert_eq!(stdout(&replay(&monitor, &classic, &[])), expected_monitor);
}

#[test]
fn replay_json_has_one_object_per_frame_and_a_summary() {
    require_root();
    let scratch = Scratch::new("replay-json");
    let policy = scratch.file("policy.toml", POLICY);
    let capture = scratch.path("mixed.pcap");
    pcap::write_pcap(&capture, &pcap::records(mixed_frames())).expect("writing pcap");

    let out = stdout(&replay(&policy, &capture, &["--json"]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "frame": 1, "verdict": "allow", "connector": "upstream-filter", "action": "pass",
            "length": 54, "tiny_fragment": false, "long_v6_chain": false,
            "packet": {
                "protocol": "tcp", "source": "198.51.100.7", "destination": "192.0.2.25",
                "source_port": 40000, "destination_port": 25, "flags": "S", "fragment": false,
            },
        })
    );
    assert_eq!(lines[1]["verdict"], "deny");
    assert_eq!(lines[1]["action"], "drop");
    assert_eq!(lines[1]["connector"], serde_json::Value::Null);
    assert_eq!(lines[7]["tiny_fragment"], true);
    assert_eq!(lines[8]["long_v6_chain"], true);
    assert_eq!(lines[9]["verdict"], "skipped");
    assert_eq!(
        lines[10],
        serde_json::json!({"summary": {
            "frames": 10, "pass": 2, "allow": 3, "deny": 4, "would_deny": 0, "skipped": 1,
            "allow_by_connector": {"printers": 1, "upstream-filter": 2},
        }})
    );
}

#[test]
fn bad_captures_get_errors_that_say_where() {
    require_root();
    let scratch = Scratch::new("replay-bad");
    let policy = scratch.file("policy.toml", POLICY);
    let records = pcap::records(mixed_frames().into_iter().take(3));

    let cases: Vec<(&str, PathBuf, String)> = vec![
        (
            "not a capture",
            scratch.file("text.pcap", "hello, world\n"),
            {
                format!(
                    "{} is not a pcap or pcapng file (it starts with 68656c6c",
                    scratch.path("text.pcap").display()
                )
            },
        ),
        (
            "empty",
            scratch.file("empty.pcap", ""),
            "it starts with nothing".to_owned(),
        ),
        (
            "truncated pcap",
            {
                let path = scratch.path("cut.pcap");
                pcap::write_truncated(&path, Format::Pcap, &records).expect("writing");
                path
            },
            "the capture is truncated inside frame 3".to_owned(),
        ),
        (
            "truncated pcapng",
            {
                let path = scratch.path("cut.pcapng");
                pcap::write_truncated(&path, Format::PcapNg, &records).expect("writing");
                path
            },
            "the capture is truncated inside frame 3".to_owned(),
        ),
        (
            "raw IP pcap",
            {
                let path = scratch.path("raw.pcap");
                let raw = vec![Record::new(pcap::FIRST_TIMESTAMP, vec![0x45; 40])];
                pcap::write_capture(&path, Format::Pcap, LINKTYPE_RAW, &raw).expect("writing");
                path
            },
            "frame 1 has link type".to_owned(),
        ),
        (
            "raw IP pcapng",
            {
                let path = scratch.path("raw.pcapng");
                let raw = vec![Record::new(pcap::FIRST_TIMESTAMP, vec![0x45; 40])];
                pcap::write_capture(&path, Format::PcapNg, LINKTYPE_RAW, &raw).expect("writing");
                path
            },
            "frame 1 has link type".to_owned(),
        ),
        (
            "missing",
            scratch.path("nowhere.pcap"),
            "No such file or directory".to_owned(),
        ),
    ];
    for (what, capture, expected) in cases {
        let output = replay(&policy, &capture, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{what}: exit code; stderr: {stderr}"
        );
        assert!(
            stderr.contains(&expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
    }

    // The policy is checked first, with its own errors.
    let bad_policy = scratch.file("bad.toml", "mode = \"enforce\"\nports = [0]\n");
    let capture = scratch.path("ok.pcap");
    pcap::write_pcap(&capture, &records).expect("writing pcap");
    let output = replay(&bad_policy, &capture, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("bad.toml:2:10: "),
        "policy error location in:\n{stderr}"
    );
}

/// Real handshakes, made by the kernel's TCP stack over a veth pair and
/// captured by tcpdump: replay must judge exactly the SYNs tcpdump shows.
#[test]
fn replay_judges_a_tcpdump_capture_of_real_connections() {
    require_root();
    let scratch = Scratch::new("replay-real");
    let link = Link::new(
        &["198.51.100.7/24", "203.0.113.9/24", "2001:db8:100::7/64"],
        &["198.51.100.1/24", "203.0.113.1/24", "2001:db8:100::1/64"],
    );
    let capture = scratch.path("real.pcap");

    let listener = link
        .gateway
        .run(|| TcpListener::bind("[::]:25").expect("binding port 25 in the gateway namespace"));
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut stream, _) = listener.accept().expect("accepting");
            stream
                .write_all(b"220 gateway ESMTP\r\n")
                .expect("greeting");
        }
    });

    let mut tcpdump = link.gateway.command("tcpdump");
    tcpdump
        .args([
            "-i",
            &link.gateway_if,
            "-U",
            "--immediate-mode",
            "-n",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&capture)
        .arg("tcp port 25");
    let tcpdump = Background::start(tcpdump, "listening on", Duration::from_secs(10));

    for server_addr in ["198.51.100.1:25", "203.0.113.1:25", "[2001:db8:100::1]:25"] {
        let banner = link.outside.run(move || {
            let mut stream = TcpStream::connect_timeout(
                &server_addr.parse().expect("a socket address"),
                Duration::from_secs(5),
            )
            .expect("connecting to the gateway");
            let mut banner = String::new();
            stream
                .read_to_string(&mut banner)
                .expect("reading the banner");
            banner
        });
        assert_eq!(banner, "220 gateway ESMTP\r\n");
    }
    server.join().expect("the listener thread");
    // Let the closing segments reach the capture before stopping it.
    std::thread::sleep(Duration::from_millis(200));
    tcpdump.interrupt();

    // tcpdump's own reading of the capture is the independent oracle.
    let dump = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&capture)
        .output()
        .expect("reading the capture with tcpdump");
    let dump = String::from_utf8_lossy(&dump.stdout);
    let mut expected = Vec::new();
    for (index, line) in dump.lines().enumerate() {
        let verdict = if !line.contains("Flags [S],") {
            "pass"
        } else if line.contains(" 198.51.100.7.") || line.contains(" 2001:db8:100::7.") {
            "allow upstream-filter"
        } else if line.contains(" 203.0.113.9.") {
            "deny"
        } else {
            panic!("unexpected SYN in the capture: {line}");
        };
        expected.push(format!("frame {}: {verdict}", index + 1));
    }
    assert_eq!(
        expected
            .iter()
            .filter(|line| !line.ends_with("pass"))
            .count(),
        3,
        "SYNs in the capture:\n{dump}"
    );

    let policy = scratch.file("policy.toml", POLICY);
    let out = stdout(&replay(&policy, &capture, &[]));
    let frames: Vec<String> = out
        .lines()
        .take(expected.len())
        .map(|line| {
            // "frame N:     VERDICT    DESCRIPTION": keep the first two columns.
            let (number, rest) = line.split_once(':').expect("a frame line");
            let verdict = rest.trim_start().split("  ").next().expect("a verdict");
            format!("{number}: {verdict}")
        })
        .collect();
    assert_eq!(frames, expected);
    let total = expected.len();
    assert_eq!(
        out.lines().nth(total),
        Some(
            format!(
                "{total} frames: {} pass, 2 allow, 1 deny, 0 would-deny, 0 skipped",
                total - 3
            )
            .as_str()
        )
    );
}
