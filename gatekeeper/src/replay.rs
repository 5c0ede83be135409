//! Reading packet captures for `gatekeeper replay`: classic pcap and pcapng,
//! Ethernet link type only, one frame at a time.

use std::{
    fs::File,
    io::{self, BufReader, Cursor, Read},
    path::{Path, PathBuf},
};

use crate::{
    datapath::{Datapath, DatapathError, FrameOutcome},
    describe::{FrameSummary, describe},
};
use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

/// One frame of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Position in the capture, from 1, as capture tools number frames.
    pub number: u64,
    /// The captured bytes, starting at the Ethernet header.
    pub data: Vec<u8>,
    /// The frame's length on the wire; more than `data.len()` when the
    /// capture's snap length cut it.
    pub original_len: u32,
}

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("reading capture {path}")]
    Io {
        /// The capture.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },
    /// The file does not start like a pcap or pcapng file.
    #[error(
        "{path} is not a pcap or pcapng file (it starts with {magic}; \
         a pcap starts with a1b2c3d4 or d4c3b2a1, a pcapng with 0a0d0d0a)"
    )]
    NotACapture {
        /// The capture.
        path: PathBuf,
        /// Its first bytes, in hex.
        magic: String,
    },
    /// The capture's headers are malformed.
    #[error("{path}: malformed capture header")]
    BadHeader {
        /// The capture.
        path: PathBuf,
        /// The parser's answer.
        #[source]
        source: PcapError,
    },
    /// The capture holds frames of another link type.
    #[error(
        "{path}: frame {frame} has link type {link_type}; replay needs Ethernet \
         (capture with `tcpdump -i IFACE -w FILE` on an Ethernet interface)"
    )]
    LinkType {
        /// The capture.
        path: PathBuf,
        /// The first frame of that link type.
        frame: u64,
        /// The link type found.
        link_type: String,
    },
    /// The file ends in the middle of a record.
    #[error("{path}: the capture is truncated inside frame {frame}")]
    Truncated {
        /// The capture.
        path: PathBuf,
        /// The frame that is cut off.
        frame: u64,
    },
    /// A record is malformed.
    #[error("{path}: frame {frame} is malformed")]
    BadFrame {
        /// The capture.
        path: PathBuf,
        /// The frame.
        frame: u64,
        /// The parser's answer.
        #[source]
        source: PcapError,
    },
}

/// The capture's bytes: the magic number already read, then the rest.
type Source = io::Chain<Cursor<Vec<u8>>, Box<dyn Read>>;

enum Format {
    Pcap(PcapReader<Source>),
    PcapNg(PcapNgReader<Source>),
}

/// Reads the frames of a pcap or pcapng capture in order. After the first
/// error it yields nothing more: the parsers would return the same error
/// again and again, and a caller that skips errors would never see the end.
pub struct CaptureReader {
    path: PathBuf,
    format: Format,
    next_number: u64,
    failed: bool,
}

impl CaptureReader {
    /// Opens a capture and reads its file header.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not a capture, or (for pcap) is not of
    /// the Ethernet link type.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_reader(path, BufReader::new(file))
    }

    /// Reads a capture from `reader`, as [`CaptureReader::open`] reads a
    /// file; errors name `path`.
    ///
    /// # Errors
    ///
    /// As for [`CaptureReader::open`].
    pub fn from_reader(path: &Path, mut reader: impl Read + 'static) -> Result<Self, CaptureError> {
        let io_error = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let mut magic = [0; 4];
        let got = read_up_to(&mut reader, &mut magic).map_err(io_error)?;
        let head = Cursor::new(magic[..got].to_vec());
        let reader: Source = head.chain(Box::new(reader));

        let header_error = |source| CaptureError::BadHeader {
            path: path.to_owned(),
            source,
        };
        let format = match magic {
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let pcap = PcapReader::new(reader).map_err(|source| match source {
                    PcapError::IoError(ref error)
                        if error.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        CaptureError::Truncated {
                            path: path.to_owned(),
                            frame: 0,
                        }
                    }
                    source => header_error(source),
                })?;
                let link_type = pcap.header().datalink;
                if link_type != DataLink::ETHERNET {
                    return Err(CaptureError::LinkType {
                        path: path.to_owned(),
                        frame: 1,
                        link_type: format!("{link_type:?}"),
                    });
                }
                Format::Pcap(pcap)
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                Format::PcapNg(PcapNgReader::new(reader).map_err(header_error)?)
            }
            _ => {
                return Err(CaptureError::NotACapture {
                    path: path.to_owned(),
                    magic: hex(&magic[..got]),
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            format,
            next_number: 1,
            failed: false,
        })
    }

    /// The next frame, `None` at the end of the capture.
    ///
    /// # Errors
    ///
    /// The record is truncated or malformed, or not an Ethernet frame.
    pub fn next_frame(&mut self) -> Option<Result<CapturedFrame, CaptureError>> {
        if self.failed {
            return None;
        }
        let number = self.next_number;
        let frame = match &mut self.format {
            Format::Pcap(reader) => reader.next_packet().map(|packet| {
                packet.map_err(Fault::Parse).map(|packet| CapturedFrame {
                    number,
                    data: packet.data.into_owned(),
                    original_len: packet.orig_len,
                })
            }),
            Format::PcapNg(reader) => next_ng_frame(reader, number),
        }?;
        self.next_number += 1;
        self.failed = frame.is_err();
        Some(frame.map_err(|source| self.frame_error(number, source)))
    }

    fn frame_error(&self, frame: u64, fault: Fault) -> CaptureError {
        let source = match fault {
            Fault::Parse(source) => source,
            Fault::LinkType(link_type) => {
                return CaptureError::LinkType {
                    path: self.path.clone(),
                    frame,
                    link_type: format!("{link_type:?}"),
                };
            }
        };
        match source {
            PcapError::IoError(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                CaptureError::Truncated {
                    path: self.path.clone(),
                    frame,
                }
            }
            PcapError::IoError(source) => CaptureError::Io {
                path: self.path.clone(),
                source,
            },
            source => CaptureError::BadFrame {
                path: self.path.clone(),
                frame,
                source,
            },
        }
    }
}

impl Iterator for CaptureReader {
    type Item = Result<CapturedFrame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

/// What went wrong with one record.
enum Fault {
    Parse(PcapError),
    LinkType(DataLink),
}

/// Skips pcapng blocks that hold no packet (interface descriptions,
/// statistics, name resolution) and returns the next packet.
fn next_ng_frame(
    reader: &mut PcapNgReader<Source>,
    number: u64,
) -> Option<Result<CapturedFrame, Fault>> {
    loop {
        let block = match reader.next_block()? {
            Ok(block) => block,
            Err(error) => return Some(Err(Fault::Parse(error))),
        };
        // Whether it is a simple packet block, as the last field.
        let (interface, mut data, original_len, simple) = match block {
            Block::EnhancedPacket(packet) => (
                packet.interface_id,
                packet.data.into_owned(),
                packet.original_len,
                false,
            ),
            Block::SimplePacket(packet) => (0, packet.data.into_owned(), packet.original_len, true),
            Block::Packet(packet) => (
                u32::from(packet.interface_id),
                packet.data.into_owned(),
                packet.original_len,
                false,
            ),
            _ => continue,
        };
        let Some(description) = reader.interfaces().get(interface as usize) else {
            return Some(Err(Fault::Parse(PcapError::InvalidInterfaceId(interface))));
        };
        if description.linktype != DataLink::ETHERNET {
            return Some(Err(Fault::LinkType(description.linktype)));
        }
        if simple {
            // A simple packet block states no captured length: the frame is
            // the original length cut to the snap length, and the parser
            // hands over the block's padding with it.
            let snaplen = match description.snaplen {
                0 => u32::MAX,
                snaplen => snaplen,
            };
            data.truncate(original_len.min(snaplen) as usize);
        }
        if data.len() > original_len as usize {
            // The classic pcap reader refuses the same.
            return Some(Err(Fault::Parse(PcapError::InvalidField(
                "the packet block's captured length exceeds its original length",
            ))));
        }
        return Some(Ok(CapturedFrame {
            number,
            data,
            original_len,
        }));
    }
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing (the file is empty)".to_owned();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Shortest frame `BPF_PROG_RUN` accepts for XDP: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// One frame after its run through the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedFrame {
    /// Position in the capture, from 1.
    pub number: u64,
    /// Captured length.
    pub length: usize,
    /// What the frame is, for people; `None` when it cannot be parsed.
    pub summary: Option<FrameSummary>,
    /// The program's decision; `None` for a frame shorter than
    /// [`MIN_FRAME`], which no network card delivers and the kernel refuses
    /// to run.
    pub outcome: Option<FrameOutcome>,
}

/// Runs one captured frame through the datapath.
///
/// # Errors
///
/// The kernel refused the run, or the counters could not be read.
pub fn replay_frame(
    datapath: &mut Datapath,
    frame: &CapturedFrame,
) -> Result<ReplayedFrame, DatapathError> {
    let length = frame.data.len();
    let mut replayed = ReplayedFrame {
        number: frame.number,
        length,
        summary: describe(&frame.data),
        outcome: None,
    };
    if length < MIN_FRAME {
        return Ok(replayed);
    }
    // Frames longer than a page less XDP's headroom are fine: the kernel
    // puts the rest in fragments, and the program reads only the headers.
    replayed.outcome = Some(datapath.run_frame(&frame.data)?);
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcap_file::pcap::{PcapPacket, PcapWriter};

    use super::*;

    /// A classic pcap of Ethernet frames, each as long as it is on the wire.
    fn pcap(frames: &[&[u8]]) -> Vec<u8> {
        let mut writer = PcapWriter::new(Vec::new()).expect("writing to a Vec");
        for data in frames {
            let length = u32::try_from(data.len()).expect("a short test frame");
            writer
                .write_packet(&PcapPacket::new(Duration::ZERO, length, data))
                .expect("writing to a Vec");
        }
        writer.into_writer()
    }

    fn reader(bytes: Vec<u8>) -> CaptureReader {
        CaptureReader::from_reader(Path::new("test.pcap"), Cursor::new(bytes))
            .unwrap_or_else(|error| panic!("the header should parse: {error}"))
    }

    #[test]
    fn from_reader_reads_what_open_reads() {
        let mut frames = reader(pcap(&[&[1; 60], &[2; 14]]));
        let first = frames.next().map(|frame| frame.expect("frame 1"));
        assert_eq!(
            first,
            Some(CapturedFrame {
                number: 1,
                data: vec![1; 60],
                original_len: 60,
            })
        );
        let second = frames.next().map(|frame| frame.expect("frame 2"));
        assert_eq!(
            second.map(|frame| (frame.number, frame.data)),
            Some((2, vec![2; 14]))
        );
        assert!(frames.next().is_none());
    }

    #[test]
    fn nothing_follows_an_error() {
        let mut bytes = pcap(&[&[1; 60], &[2; 60]]);
        // Cut inside the second record's data.
        bytes.truncate(bytes.len() - 10);
        let mut frames = reader(bytes);
        assert!(matches!(frames.next(), Some(Ok(frame)) if frame.number == 1));
        let error = match frames.next() {
            Some(Err(error)) => error,
            other => panic!("expected the truncation, got {other:?}"),
        };
        assert_eq!(
            error.to_string(),
            "test.pcap: the capture is truncated inside frame 2"
        );
        assert!(frames.next().is_none());
        assert!(frames.next().is_none());
    }

    /// A little-endian pcapng block of `kind` around `body`, padded.
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let length = u32::try_from(12 + padded).expect("a short block");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.resize(8 + padded, 0);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes
    }

    /// A section header and one Ethernet interface with `snaplen`, then
    /// `packets`.
    fn pcapng(snaplen: u32, packets: &[Vec<u8>]) -> Vec<u8> {
        let mut section = Vec::new();
        section.extend_from_slice(&0x1a2b_3c4d_u32.to_le_bytes());
        section.extend_from_slice(&[1, 0, 0, 0]);
        section.extend_from_slice(&(-1_i64).to_le_bytes());
        let mut interface = vec![1, 0, 0, 0];
        interface.extend_from_slice(&snaplen.to_le_bytes());
        let mut bytes = block(0x0a0d_0d0a, &section);
        bytes.extend(block(1, &interface));
        for packet in packets {
            bytes.extend_from_slice(packet);
        }
        bytes
    }

    fn simple_packet(original_len: u32, data: &[u8]) -> Vec<u8> {
        let mut body = original_len.to_le_bytes().to_vec();
        body.extend_from_slice(data);
        block(3, &body)
    }

    fn enhanced_packet(captured: u32, original_len: u32, data: &[u8]) -> Vec<u8> {
        let mut body = [0, 0, 0, captured, original_len]
            .iter()
            .flat_map(|word: &u32| word.to_le_bytes())
            .collect::<Vec<u8>>();
        body.extend_from_slice(data);
        block(6, &body)
    }

    #[test]
    fn a_simple_packet_is_its_original_length_without_the_padding() {
        // 61 bytes: the block pads them to 64.
        let frame = [7; 61];
        let mut frames = reader(pcapng(0, &[simple_packet(61, &frame)]));
        let first = frames.next().map(|frame| frame.expect("frame 1"));
        assert_eq!(
            first,
            Some(CapturedFrame {
                number: 1,
                data: frame.to_vec(),
                original_len: 61,
            })
        );
        assert!(frames.next().is_none());
    }

    #[test]
    fn a_simple_packet_is_cut_to_the_snap_length() {
        let mut frames = reader(pcapng(32, &[simple_packet(61, &[7; 32])]));
        let first = frames.next().map(|frame| frame.expect("frame 1"));
        assert_eq!(
            first.map(|frame| (frame.data, frame.original_len)),
            Some((vec![7; 32], 61))
        );
    }

    #[test]
    fn a_packet_longer_than_on_the_wire_is_malformed() {
        let mut frames = reader(pcapng(0, &[enhanced_packet(50, 44, &[7; 50])]));
        let error = match frames.next() {
            Some(Err(error)) => error,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(
            matches!(error, CaptureError::BadFrame { frame: 1, .. }),
            "{error:?}"
        );
        assert!(frames.next().is_none());
    }

    #[test]
    fn a_short_file_is_not_a_capture() {
        let error = CaptureReader::from_reader(Path::new("short"), Cursor::new(vec![0xa1, 0xb2]))
            .err()
            .expect("two bytes are no capture");
        assert_eq!(
            error.to_string(),
            "short is not a pcap or pcapng file (it starts with a1b2; a pcap starts with \
             a1b2c3d4 or d4c3b2a1, a pcapng with 0a0d0d0a)"
        );
    }
}
