//! The properties the fuzz targets check, one function per target. Each
//! panics when a property fails, which libFuzzer reports as a crash.
//!
//! `gatekeeper/tests/fuzz_regressions.rs` includes this file as a module and
//! runs it over `fuzz/regressions/` and `fuzz/corpus/` on every `cargo test`,
//! so this file uses nothing but `gatekeeper` and that crate's own
//! dependencies.

use std::{collections::HashSet, fmt::Write as _, io::Cursor, path::Path, time::Duration};

use gatekeeper::{
    policy::{LoadOptions, MAX_NAME_CHARS, Mode, Policy, PolicyError, Problem},
    replay::{CaptureError, CaptureReader, CapturedFrame},
};
use ipnet::IpNet;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

/// What errors print in place of a file name.
const POLICY_ORIGIN: &str = "fuzz.toml";
const CAPTURE_PATH: &str = "fuzz.pcap";

/// The map limits of the XDP program, as the policy module documents them.
const MAX_PORTS: usize = 16;
const MAX_CONNECTORS: usize = 1024;
const MAX_SOURCE_PREFIXES: usize = 1 << 20;
const MAX_DESTINATION_PREFIXES: usize = 4096;

/// `data` as a policy file, with and without `--allow-empty`:
///
/// - what parses keeps every rule of the policy module, and written back
///   as TOML it parses to the same policy;
/// - `--allow-empty` only ever accepts more, and accepts the same policy;
/// - what is refused is refused with at least one problem, each at a line
///   and column inside the file, in file order, one line of text each.
pub fn check_policy(data: &[u8]) {
    let strict = Policy::from_bytes(data, POLICY_ORIGIN, LoadOptions::default());
    let lenient = Policy::from_bytes(data, POLICY_ORIGIN, LoadOptions { allow_empty: true });

    match (&strict, &lenient) {
        (Ok(strict), Ok(lenient)) => assert_eq!(strict, lenient, "allow_empty changed the policy"),
        (Err(_), Ok(_)) | (Err(_), Err(_)) => {}
        (Ok(policy), Err(error)) => {
            panic!("accepted without --allow-empty, refused with it:\n{error}\n{policy:?}")
        }
    }
    for (result, allow_empty) in [(strict, false), (lenient, true)] {
        match result {
            Ok(policy) => {
                check_rules(&policy, allow_empty);
                check_round_trip(&policy);
            }
            Err(error) => check_problems(data, &error),
        }
    }
}

fn check_rules(policy: &Policy, allow_empty: bool) {
    let ports = &policy.ports;
    assert!(
        (1..=MAX_PORTS).contains(&ports.len()),
        "{} ports",
        ports.len()
    );
    assert!(!ports.contains(&0), "port 0 in {ports:?}");
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        ports.len(),
        "a port twice in {ports:?}"
    );

    check_networks(
        &policy.destinations,
        MAX_DESTINATION_PREFIXES,
        "destinations",
    );

    assert!(policy.connectors.len() <= MAX_CONNECTORS);
    let mut names = HashSet::new();
    for connector in &policy.connectors {
        let name = &connector.name;
        let length = name.chars().count();
        assert!((1..=MAX_NAME_CHARS).contains(&length), "name {name:?}");
        assert!(
            name.bytes().all(|byte| byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || b"._-".contains(&byte)),
            "name {name:?}"
        );
        assert!(names.insert(name), "connector {name:?} twice");
    }
    let sources: Vec<IpNet> = policy
        .connectors
        .iter()
        .flat_map(|connector| connector.sources.iter().copied())
        .collect();
    // Distinct across connectors too: a prefix belongs to one connector.
    check_networks(&sources, MAX_SOURCE_PREFIXES, "sources");

    if policy.mode == Mode::Enforce && sources.is_empty() {
        assert!(allow_empty, "enforce without sources accepted");
    }
}

/// Truncated, distinct, and within the per-family limit.
fn check_networks(nets: &[IpNet], limit: usize, what: &str) {
    for net in nets {
        assert_eq!(*net, net.trunc(), "{what}: {net} has host bits set");
    }
    assert_eq!(
        nets.iter().collect::<HashSet<_>>().len(),
        nets.len(),
        "{what}: a prefix twice"
    );
    let v4 = nets
        .iter()
        .filter(|net| matches!(net, IpNet::V4(_)))
        .count();
    assert!(v4 <= limit, "{what}: {v4} IPv4 prefixes");
    assert!(nets.len() - v4 <= limit, "{what}: too many IPv6 prefixes");
}

/// Writes the policy as TOML and parses it again.
fn check_round_trip(policy: &Policy) {
    let text = policy_toml(policy);
    let again = Policy::parse(&text, POLICY_ORIGIN, LoadOptions { allow_empty: true })
        .unwrap_or_else(|error| panic!("written back, the policy is refused:\n{error}\n{text}"));
    assert_eq!(&again, policy, "written back, the policy changed:\n{text}");
}

fn policy_toml(policy: &Policy) -> String {
    let quoted = |nets: &[IpNet]| {
        let items: Vec<String> = nets.iter().map(|net| format!("\"{net}\"")).collect();
        format!("[{}]", items.join(", "))
    };
    let ports: Vec<String> = policy.ports.iter().map(u16::to_string).collect();
    let mut text = format!(
        "mode = \"{}\"\nports = [{}]\ndestinations = {}\n",
        policy.mode,
        ports.join(", "),
        quoted(&policy.destinations)
    );
    for connector in &policy.connectors {
        // Names hold only characters that need no escaping.
        write!(
            text,
            "\n[[connector]]\nname = \"{}\"\nsources = {}\n",
            connector.name,
            quoted(&connector.sources)
        )
        .expect("writing to a String");
    }
    text
}

fn check_problems(data: &[u8], error: &PolicyError) {
    let PolicyError::Invalid { origin, problems } = error else {
        panic!("bytes can only be invalid, not {error:?}");
    };
    assert_eq!(origin, POLICY_ORIGIN);
    assert!(!problems.is_empty(), "refused without a problem");

    let lines: Vec<&[u8]> = data.split(|byte| *byte == b'\n').collect();
    for Problem {
        line,
        column,
        message,
    } in problems
    {
        assert!(
            (1..=lines.len()).contains(line),
            "line {line} of {}: {message}",
            lines.len()
        );
        // Columns count characters: at most one past the line's last.
        let characters = lines[line - 1]
            .iter()
            .filter(|byte| **byte & 0xc0 != 0x80)
            .count();
        assert!(
            (1..=characters + 1).contains(column),
            "column {column} of a line of {characters} characters: {message}"
        );
        assert!(!message.is_empty(), "an empty message at {line}:{column}");
        assert!(
            !message.contains('\n'),
            "a message of several lines: {message:?}"
        );
    }
    let positions: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.column)).collect();
    assert!(
        positions.is_sorted(),
        "problems out of file order: {positions:?}"
    );

    let shown = error.to_string();
    let shown: Vec<&str> = shown.split('\n').collect();
    assert_eq!(shown.len(), problems.len(), "{shown:#?}");
    for (line, problem) in shown.iter().zip(problems) {
        let prefix = format!("{POLICY_ORIGIN}:{}:{}: ", problem.line, problem.column);
        assert!(
            line.starts_with(&prefix),
            "{line:?} does not start with {prefix:?}"
        );
    }
}

/// `data` as a capture:
///
/// - frames are numbered 1, 2, 3...; an error ends the capture, and the
///   reader yields nothing after it;
/// - every frame is at most as long as on the wire, and each took at
///   least 12 bytes of the file (the smallest pcapng block);
/// - every error names the capture;
/// - the frames read, written as a new pcap, read back the same.
pub fn check_capture(data: &[u8]) {
    let mut reader =
        match CaptureReader::from_reader(Path::new(CAPTURE_PATH), Cursor::new(data.to_vec())) {
            Ok(reader) => reader,
            Err(error) => return check_capture_error(&error),
        };

    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame() {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                check_capture_error(&error);
                assert!(reader.next_frame().is_none(), "a frame after {error}");
                break;
            }
        };
        assert_eq!(frame.number, frames.len() as u64 + 1, "frames out of order");
        assert!(
            frame.data.len() <= frame.original_len as usize,
            "frame {}: {} bytes captured of {} on the wire",
            frame.number,
            frame.data.len(),
            frame.original_len
        );
        frames.push(frame);
        assert!(
            frames.len() * 12 <= data.len(),
            "{} frames from {} bytes",
            frames.len(),
            data.len()
        );
    }

    let written = pcap_of(&frames);
    let again: Vec<CapturedFrame> =
        CaptureReader::from_reader(Path::new(CAPTURE_PATH), Cursor::new(written))
            .unwrap_or_else(|error| panic!("the rewritten capture: {error}"))
            .map(|frame| frame.unwrap_or_else(|error| panic!("the rewritten capture: {error}")))
            .collect();
    assert_eq!(again, frames, "the frames changed when written again");
}

fn check_capture_error(error: &CaptureError) {
    let shown = error.to_string();
    assert!(
        shown.contains(CAPTURE_PATH),
        "the error does not name the capture: {shown}"
    );
}

/// A little-endian, microsecond pcap of Ethernet frames holding `frames`.
fn pcap_of(frames: &[CapturedFrame]) -> Vec<u8> {
    let header = PcapHeader {
        snaplen: u32::MAX,
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header).expect("writing to a Vec");
    for frame in frames {
        let packet = PcapPacket::new(Duration::ZERO, frame.original_len, &frame.data);
        writer.write_packet(&packet).expect("writing to a Vec");
    }
    writer.into_writer()
}
