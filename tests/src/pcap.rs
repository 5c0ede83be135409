//! Capture files of crafted frames, for the tools that read them.
//!
//! Files are written little-endian with microsecond (pcap) or nanosecond
//! (pcapng) timestamps, so their bytes do not depend on the host.
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use std::path::Path;
//! use gatekeeper_tests::frames::{Frame, TcpSeg};
//! use gatekeeper_tests::pcap::{records, write_pcap};
//!
//! let syn = Frame::ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 25))
//!     .tcp(TcpSeg::syn(40000, 25))
//!     .build();
//! write_pcap(Path::new("/tmp/syn.pcap"), &records([syn])).unwrap();
//! ```

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

/// Frames start with an Ethernet header.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Frames start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;

/// Timestamp of the first record from [`records`]: 2025-01-01T00:00:00Z.
pub const FIRST_TIMESTAMP: Duration = Duration::from_secs(1_735_689_600);
/// Time between consecutive records from [`records`].
pub const RECORD_INTERVAL: Duration = Duration::from_millis(1);

/// libpcap's largest snapshot length; no crafted frame comes near it.
const SNAPLEN: u32 = 262_144;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Time since the Unix epoch.
    pub timestamp: Duration,
    /// The captured bytes.
    pub data: Vec<u8>,
    /// Length of the frame on the wire; more than `data` holds when the
    /// capture cut the frame short.
    pub orig_len: u32,
}

impl Record {
    /// A record of a frame captured whole.
    ///
    /// # Panics
    ///
    /// If `data` is longer than a capture file can describe (4 GiB).
    pub fn new(timestamp: Duration, data: Vec<u8>) -> Self {
        let orig_len = u32::try_from(data.len()).expect("a crafted frame is far below 4 GiB");
        Self {
            timestamp,
            data,
            orig_len,
        }
    }

    /// Claims the frame was `orig_len` bytes on the wire, as a capture with
    /// a small snapshot length records it. Writing fails if `orig_len` is
    /// less than the captured bytes.
    pub fn orig_len(mut self, orig_len: u32) -> Self {
        self.orig_len = orig_len;
        self
    }
}

/// Records of `frames`, the first at [`FIRST_TIMESTAMP`] and each later one
/// [`RECORD_INTERVAL`] after the one before.
pub fn records(frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<Record> {
    let mut timestamp = FIRST_TIMESTAMP;
    let mut out = Vec::new();
    for frame in frames {
        out.push(Record::new(timestamp, frame));
        timestamp += RECORD_INTERVAL;
    }
    out
}

/// A capture file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic libpcap format.
    Pcap,
    /// pcapng, with one section and one interface.
    PcapNg,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Pcap => f.write_str("pcap"),
            Format::PcapNg => f.write_str("pcapng"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot encode the {format} file header")]
    Header {
        format: Format,
        #[source]
        source: PcapError,
    },
    #[error("cannot encode record {index} of the {format} file")]
    Record {
        format: Format,
        index: usize,
        #[source]
        source: PcapError,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a {format} file without records has no record to cut")]
    NothingToCut { format: Format },
}

/// The bytes of a capture file in `format` holding `records`, whose frames
/// start with a `linktype` header.
///
/// # Errors
///
/// If a record cannot be encoded, e.g. its `orig_len` is less than its data.
pub fn capture_bytes(
    format: Format,
    linktype: u32,
    records: &[Record],
) -> Result<Vec<u8>, CaptureError> {
    match format {
        Format::Pcap => pcap_bytes(linktype, records),
        Format::PcapNg => pcapng_bytes(linktype, records),
    }
}

fn pcap_bytes(linktype: u32, records: &[Record]) -> Result<Vec<u8>, CaptureError> {
    let format = Format::Pcap;
    let header = PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::from(linktype),
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header)
        .map_err(|source| CaptureError::Header { format, source })?;

    for (index, record) in records.iter().enumerate() {
        let packet = PcapPacket::new(record.timestamp, record.orig_len, &record.data);
        writer
            .write_packet(&packet)
            .map_err(|source| CaptureError::Record {
                format,
                index,
                source,
            })?;
    }
    Ok(writer.into_writer())
}

fn pcapng_bytes(linktype: u32, records: &[Record]) -> Result<Vec<u8>, CaptureError> {
    let format = Format::PcapNg;
    let mut writer = PcapNgWriter::with_endianness(Vec::new(), Endianness::Little)
        .map_err(|source| CaptureError::Header { format, source })?;

    // pcap-file writes packet timestamps in nanoseconds, while an interface
    // without if_tsresol is read in microseconds: say so explicitly.
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::from(linktype),
        snaplen: SNAPLEN,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    writer
        .write_pcapng_block(interface)
        .map_err(|source| CaptureError::Header { format, source })?;

    for (index, record) in records.iter().enumerate() {
        let packet = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: record.timestamp,
            original_len: record.orig_len,
            data: Cow::Borrowed(&record.data),
            options: Vec::new(),
        };
        writer
            .write_pcapng_block(packet)
            .map_err(|source| CaptureError::Record {
                format,
                index,
                source,
            })?;
    }
    Ok(writer.into_inner())
}

/// Writes `records` of Ethernet frames to `path` as a classic pcap file.
///
/// # Errors
///
/// If a record cannot be encoded or the file cannot be written.
pub fn write_pcap(path: &Path, records: &[Record]) -> Result<(), CaptureError> {
    write_capture(path, Format::Pcap, LINKTYPE_ETHERNET, records)
}

/// Writes `records` of Ethernet frames to `path` as a pcapng file.
///
/// # Errors
///
/// If a record cannot be encoded or the file cannot be written.
pub fn write_pcapng(path: &Path, records: &[Record]) -> Result<(), CaptureError> {
    write_capture(path, Format::PcapNg, LINKTYPE_ETHERNET, records)
}

/// Writes `records` to `path` in `format`, declaring their link type as
/// `linktype` (e.g. [`LINKTYPE_RAW`] for frames that start at the IP header).
///
/// # Errors
///
/// If a record cannot be encoded or the file cannot be written.
pub fn write_capture(
    path: &Path,
    format: Format,
    linktype: u32,
    records: &[Record],
) -> Result<(), CaptureError> {
    let bytes = capture_bytes(format, linktype, records)?;
    write_file(path, &bytes)
}

/// Writes `records` of Ethernet frames to `path` in `format`, then cuts the
/// file halfway through the last record, as a capture interrupted mid-write
/// leaves it. Returns the length of the file written.
///
/// # Errors
///
/// If `records` is empty, a record cannot be encoded or the file cannot be
/// written.
pub fn write_truncated(
    path: &Path,
    format: Format,
    records: &[Record],
) -> Result<usize, CaptureError> {
    let Some((_, complete)) = records.split_last() else {
        return Err(CaptureError::NothingToCut { format });
    };
    let last_start = capture_bytes(format, LINKTYPE_ETHERNET, complete)?.len();
    let mut bytes = capture_bytes(format, LINKTYPE_ETHERNET, records)?;

    let cut = last_start + (bytes.len() - last_start) / 2;
    bytes.truncate(cut);
    write_file(path, &bytes)?;
    Ok(cut)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CaptureError> {
    fs::write(path, bytes).map_err(|source| CaptureError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::{self, Command, Output};

    use super::*;
    use crate::frames::{ETH_P_8021Q, Frame, TcpSeg};

    /// A directory for one test's files, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("gatekeeper-pcap-{}-{test}", process::id()));
            fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            Self(dir)
        }

        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// tcpdump's reading of `path`, or `None` (with the reason printed) when
    /// tcpdump is not installed.
    fn tcpdump(path: &Path) -> Option<Output> {
        let run = Command::new("tcpdump")
            .arg("-r")
            .arg(path)
            .args(["-nn", "-e", "-v", "-tt"])
            .output();
        match run {
            Ok(output) => Some(output),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipping the tcpdump check: tcpdump is not on PATH");
                None
            }
            Err(e) => panic!("cannot run tcpdump on {}: {e}", path.display()),
        }
    }

    fn syn_v4() -> Vec<u8> {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(198, 51, 100, 25);
        Frame::ipv4(src, dst).tcp(TcpSeg::syn(40000, 25)).build()
    }

    fn sample() -> Vec<Record> {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25);
        let syn_v6 = Frame::ipv6(src, dst).tcp(TcpSeg::syn(40001, 25)).build();
        let tagged = Frame::ipv4(
            Ipv4Addr::new(203, 0, 113, 7),
            Ipv4Addr::new(198, 51, 100, 25),
        )
        .vlan(ETH_P_8021Q, 100)
        .tcp(TcpSeg::syn(40002, 25))
        .build();
        records([syn_v4(), syn_v6, tagged])
    }

    #[test]
    fn pcap_layout_matches_hand_written_bytes() {
        let record = Record::new(FIRST_TIMESTAMP + Duration::from_micros(250), vec![0xab; 3]);
        let bytes = capture_bytes(Format::Pcap, LINKTYPE_ETHERNET, &[record]).unwrap();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            // Magic (microseconds), version 2.4, no zone or accuracy,
            // snapshot length 262144, Ethernet; all little-endian.
            0xd4, 0xc3, 0xb2, 0xa1, 0x02, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00,
            // 1735689600 s, 250 us, 3 bytes captured of 3.
            0x80, 0x85, 0x74, 0x67, 0xfa, 0x00, 0x00, 0x00,
            0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
            0xab, 0xab, 0xab,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn pcapng_interface_says_nanoseconds() {
        let bytes = capture_bytes(Format::PcapNg, LINKTYPE_ETHERNET, &[]).unwrap();
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());

        assert_eq!(word(0), 0x0a0d_0d0a, "section header block");
        assert_eq!(word(8), 0x1a2b_3c4d, "byte-order magic");
        let interface = word(4) as usize;
        assert_eq!(word(interface), 1, "interface description block");
        // Link type, reserved, snapshot length, then option 9 (if_tsresol),
        // one byte long: 9, i.e. 10^-9 s.
        let options = interface + 16;
        assert_eq!(bytes[interface + 8..interface + 10], [1, 0]);
        assert_eq!(bytes[options..options + 5], [9, 0, 1, 0, 9]);
    }

    #[test]
    fn tcpdump_reads_syns_from_both_formats() {
        let scratch = Scratch::new("formats");
        let records = sample();
        for format in [Format::Pcap, Format::PcapNg] {
            let path = scratch.file(&format!("syn.{format}"));
            write_capture(&path, format, LINKTYPE_ETHERNET, &records).unwrap();
            let Some(output) = tcpdump(&path) else {
                return;
            };

            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "tcpdump failed on {format}: {stderr}"
            );
            assert!(stderr.contains("link-type EN10MB"), "{stderr}");
            for expected in [
                "1735689600.000000 00:00:5e:00:53:01 > 00:00:5e:00:53:02, ethertype IPv4",
                "192.0.2.1.40000 > 198.51.100.25.25: Flags [S], cksum 0x2c49 (correct)",
                "1735689600.001000",
                "2001:db8::1.40001 > 2001:db8::25.25: Flags [S]",
                "1735689600.002000",
                "vlan 100, p 0, ethertype IPv4",
                "203.0.113.7.40002 > 198.51.100.25.25: Flags [S]",
            ] {
                assert!(
                    stdout.contains(expected),
                    "no {expected:?} in {format}:\n{stdout}"
                );
            }
            assert_eq!(stdout.matches("(correct)").count(), 3, "{stdout}");
            assert!(!stdout.contains("bad cksum"), "{stdout}");
        }
    }

    #[test]
    fn tcpdump_reads_raw_ip_link_type() {
        let scratch = Scratch::new("raw");
        let path = scratch.file("raw.pcap");
        let datagram = syn_v4()[14..].to_vec();
        write_capture(&path, Format::Pcap, LINKTYPE_RAW, &records([datagram])).unwrap();
        let Some(output) = tcpdump(&path) else {
            return;
        };

        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "tcpdump failed: {stderr}");
        assert!(stderr.contains("link-type RAW"), "{stderr}");
        assert!(
            stdout.contains("192.0.2.1.40000 > 198.51.100.25.25: Flags [S]"),
            "{stdout}"
        );
    }

    #[test]
    fn truncated_files_end_inside_the_last_record() {
        let scratch = Scratch::new("truncated");
        let records = sample();
        for format in [Format::Pcap, Format::PcapNg] {
            let whole = capture_bytes(format, LINKTYPE_ETHERNET, &records).unwrap();
            let before_last = capture_bytes(format, LINKTYPE_ETHERNET, &records[..2]).unwrap();
            let path = scratch.file(&format!("cut.{format}"));
            let len = write_truncated(&path, format, &records).unwrap();
            assert!(before_last.len() < len && len < whole.len());
            assert_eq!(fs::read(&path).unwrap(), whole[..len]);
            let Some(output) = tcpdump(&path) else {
                return;
            };

            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "tcpdump accepted a cut {format} file"
            );
            assert!(stderr.contains("truncated"), "{stderr}");
            assert_eq!(stdout.matches("Flags [S]").count(), 2, "{stdout}");
        }
    }

    #[test]
    fn nothing_to_cut_without_records() {
        let scratch = Scratch::new("empty");
        let error = write_truncated(&scratch.file("empty.pcap"), Format::Pcap, &[]).unwrap_err();
        assert!(matches!(
            error,
            CaptureError::NothingToCut {
                format: Format::Pcap
            }
        ));
    }

    #[test]
    fn snapped_records_keep_their_wire_length() {
        let frame = syn_v4();
        let snapped = Record::new(FIRST_TIMESTAMP, frame[..34].to_vec()).orig_len(54);
        let bytes = capture_bytes(Format::Pcap, LINKTYPE_ETHERNET, &[snapped]).unwrap();
        assert_eq!(bytes[32..40], [34, 0, 0, 0, 54, 0, 0, 0]);

        let impossible = Record::new(FIRST_TIMESTAMP, frame).orig_len(10);
        let error = capture_bytes(Format::Pcap, LINKTYPE_ETHERNET, &[impossible]).unwrap_err();
        assert!(
            matches!(error, CaptureError::Record { index: 0, .. }),
            "{error:?}"
        );
    }
}
