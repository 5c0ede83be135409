//! `examples/sample.pcap`, the capture `cargo xtask demo` replays: it must be
//! what `gatekeeper_tests::sample` generates, and replaying it under
//! `examples/policy.toml` must print exactly the verdicts the README shows.

use std::{path::PathBuf, process::Command};

use gatekeeper_tests::{
    pcap,
    sample::{self, SAMPLE_PCAP},
    support::{gatekeeper_bin, require_root},
};

fn workspace_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[test]
fn the_sample_capture_is_generated_from_the_sample_frames() {
    let frames = sample::frames().into_iter().map(|(_, frame)| frame);
    let records = pcap::records(frames);
    let expected = pcap::capture_bytes(pcap::Format::Pcap, pcap::LINKTYPE_ETHERNET, &records)
        .expect("encoding the sample capture");
    let path = workspace_file(SAMPLE_PCAP);
    if std::env::var_os("GATEKEEPER_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("writing the sample capture");
    }
    let committed = std::fs::read(&path).expect("reading the sample capture");
    assert!(
        committed == expected,
        "{SAMPLE_PCAP} is out of date: rerun this test with GATEKEEPER_BLESS=1"
    );
}

#[test]
fn the_sample_replays_as_documented() {
    require_root();
    let expected = "\
frame 1:     pass                       arp
frame 2:     allow upstream-filter      tcp 198.51.100.20:51000 > 192.0.2.25:25 [S]
frame 3:     pass                       tcp 192.0.2.25:25 > 198.51.100.20:51000 [S.]
frame 4:     pass                       tcp 198.51.100.20:51000 > 192.0.2.25:25 [.]
frame 5:     would-deny                 tcp 203.0.113.66:51000 > 192.0.2.25:25 [S]
frame 6:     pass                       tcp 203.0.113.66:51000 > 192.0.2.25:443 [S]
frame 7:     allow printers             tcp 192.0.2.70:51000 > 192.0.2.25:25 [S]
frame 8:     allow erp-app              tcp 192.0.2.10:51000 > 192.0.2.25:25 [S]
frame 9:     allow upstream-filter      tcp [2001:db8:100::14]:51001 > [2001:db8:25::19]:25 [S]
frame 10:    would-deny                 tcp [2001:db8:bad::42]:51002 > [2001:db8:25::19]:25 [S]
frame 11:    would-deny                 tcp 203.0.113.66 > 192.0.2.25 fragment \
(first fragment without TCP flags, judged as a SYN)
frame 12:    pass                       udp 203.0.113.66:53000 > 192.0.2.25:53
12 frames: 5 pass, 4 allow, 0 deny, 3 would-deny, 0 skipped
  allow erp-app: 1
  allow printers: 1
  allow upstream-filter: 2
";
    assert_eq!(sample::frames().len(), 12);

    let output = Command::new(gatekeeper_bin())
        .arg("replay")
        .arg("--policy")
        .arg(workspace_file("examples/policy.toml"))
        .arg("--pcap")
        .arg(workspace_file(SAMPLE_PCAP))
        .output()
        .expect("running gatekeeper replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}
