//! The policy file: which SYNs are gated and which connectors may send them.
//!
//! A policy is TOML with three top-level keys and one `[[connector]]` table
//! per connector:
//!
//! ```toml
//! mode = "monitor"       # or "enforce"
//! ports = [25]           # gated TCP destination ports
//! destinations = []      # optional: gate only SYNs to these local networks
//!
//! [[connector]]
//! name = "upstream-filter"
//! sources = ["198.51.100.0/24", "2001:db8:100::/48"]
//! ```
//!
//! Checking happens in two steps. The TOML is decoded into raw types that
//! keep every value's position; a syntax error, a value of the wrong type or
//! an unknown key stops there, as one problem. The raw values are then
//! checked against the rules below, and every problem found is reported, so
//! an operator fixes a file in one pass instead of one error per run.
//!
//! - `ports`: 1 to [`MAX_PORTS`] ports, each 1 to 65535, none twice.
//! - `destinations` and `sources`: addresses (a single host) or prefixes
//!   without host bits set, none twice. A source prefix belongs to one
//!   connector; overlapping prefixes are fine, and the longest match wins.
//! - Connector names: unique, 1 to [`MAX_NAME_CHARS`] of `a-z`, `0-9`, `.`,
//!   `_` and `-`.
//! - The map sizes of the XDP program: at most [`MAX_CONNECTORS`]
//!   connectors, [`MAX_SOURCE_PREFIXES`] source prefixes and
//!   [`MAX_DESTINATION_PREFIXES`] destination prefixes per address family.
//! - `enforce` without a single source prefix would drop every gated SYN, so
//!   it needs [`LoadOptions::allow_empty`].
//!
//! Every problem carries a 1-based line and column, the column counted in
//! characters, so that an editor can jump to it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::{FileType, OpenOptions};
use std::io::Read as _;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use gatekeeper_common::{MAX_CONNECTORS, MAX_DESTINATION_PREFIXES, MAX_PORTS, MAX_SOURCE_PREFIXES};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// Longest connector name, in characters. Names show up in metric labels and
/// log lines, where a short, plain name is easiest to read.
pub const MAX_NAME_CHARS: usize = 32;

/// Largest policy file [`Policy::load`] reads: 256 MiB. Every prefix the
/// map limits allow, both families, one per line with a comment as
/// `gatekeeper inventory --suggest` writes them, takes about 190 MB; a
/// larger file cannot be a valid policy, and reading and decoding it would
/// cost the daemon gigabytes before the count limits could refuse it.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// What happens to a gated SYN from a source outside every connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The SYN is dropped (deny).
    Enforce,
    /// The SYN passes and is counted (would-deny).
    Monitor,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        })
    }
}

/// A checked policy. Every list keeps the order of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// What happens to gated SYNs from unknown sources.
    pub mode: Mode,
    /// Gated TCP destination ports.
    pub ports: Vec<u16>,
    /// Local networks whose SYNs are gated; empty gates every destination.
    pub destinations: Vec<IpNet>,
    /// The connectors allowed to connect.
    pub connectors: Vec<Connector>,
}

/// A named set of source networks allowed to connect.
#[derive(Clone, Debug, PartialEq)]
pub struct Connector {
    /// Unique within the policy.
    pub name: String,
    /// Networks without host bits; a bare address in the file is a host
    /// prefix (/32 or /128).
    pub sources: Vec<IpNet>,
}

/// Choices the caller makes about what a policy may contain.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Accept `enforce` with no source prefixes at all, which drops every
    /// gated SYN.
    pub allow_empty: bool,
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading policy {}: {source}", .path.display())]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// What the read failed with.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file. A FIFO, a
    /// socket or a device could block the reader or never end.
    #[error("reading policy {}: it is {kind}, not a regular file", .path.display())]
    NotAFile {
        /// The path asked for.
        path: PathBuf,
        /// What it is instead.
        kind: FileKind,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "reading policy {}: it is larger than {MAX_FILE_BYTES} bytes (256 MiB), the most a \
         policy file may hold",
        .path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The text has one or more problems; displayed one per line as
    /// `origin:line:column: message`.
    #[error("{}", problem_lines(.origin, .problems))]
    Invalid {
        /// The file name, or what the caller of [`Policy::parse`] named the
        /// text.
        origin: String,
        /// Every problem found, in the order of the file.
        problems: Vec<Problem>,
    },
}

/// What a policy path names when it is not a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device, such as `/dev/zero`.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl FileKind {
    /// What `kind` is, or `None` for a regular file. `open` follows
    /// symbolic links, so the type of an open file is never one.
    fn of(kind: FileType) -> Option<FileKind> {
        if kind.is_dir() {
            Some(FileKind::Directory)
        } else if kind.is_fifo() {
            Some(FileKind::Fifo)
        } else if kind.is_socket() {
            Some(FileKind::Socket)
        } else if kind.is_char_device() {
            Some(FileKind::CharDevice)
        } else if kind.is_block_device() {
            Some(FileKind::BlockDevice)
        } else {
            None
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
        })
    }
}

/// One thing wrong with a policy, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong, without the position.
    pub message: String,
}

impl Policy {
    /// Reads and validates a policy file.
    ///
    /// Never waits for a writer: a FIFO is refused without being read.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Read`] when the file cannot be opened or read (a
    /// missing file, a failing read); [`PolicyError::NotAFile`] for a
    /// directory, FIFO, socket or device; [`PolicyError::TooLarge`] past
    /// [`MAX_FILE_BYTES`]; [`PolicyError::Invalid`] as
    /// [`Policy::from_bytes`] says.
    pub fn load(path: &Path, options: LoadOptions) -> Result<Policy, PolicyError> {
        let bytes = read_file(path)?;
        Policy::from_bytes(&bytes, &path.display().to_string(), options)
    }

    /// Validates the bytes of a policy file; `origin` is what errors print
    /// in place of the file name.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] when the bytes are not UTF-8 (the problem
    /// points at the first bad byte) or break a rule of [`Policy::parse`].
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        options: LoadOptions,
    ) -> Result<Policy, PolicyError> {
        let text = decode(bytes, origin)?;
        Policy::parse(text, origin, options)
    }

    /// Validates policy text; `origin` is what errors print in place of the
    /// file name.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] with every problem found; a TOML syntax
    /// error is reported alone.
    pub fn parse(text: &str, origin: &str, options: LoadOptions) -> Result<Policy, PolicyError> {
        parse_with_limits(text, origin, options, Limits::MAP_SIZES)
    }

    /// Source prefixes per family: (IPv4, IPv6).
    pub fn source_counts(&self) -> (usize, usize) {
        count_families(self.connectors.iter().flat_map(|c| &c.sources))
    }

    /// Destination prefixes per family: (IPv4, IPv6).
    pub fn destination_counts(&self) -> (usize, usize) {
        count_families(&self.destinations)
    }

    /// The connector whose source prefix is the longest match for `addr`,
    /// with that prefix.
    ///
    /// A linear scan: the reference the XDP program's LPM tries are tested
    /// against, and fast enough for one-off questions. A source prefix
    /// belongs to one connector only, so the longest match is unique.
    pub fn connector_for(&self, addr: IpAddr) -> Option<(&Connector, IpNet)> {
        self.connectors
            .iter()
            .flat_map(|connector| connector.sources.iter().map(move |net| (connector, *net)))
            .filter(|(_, net)| net.contains(&addr))
            .max_by_key(|(_, net)| net.prefix_len())
    }

    /// Whether a SYN to `addr` is gated by the destinations rule (true when
    /// destinations is empty).
    pub fn gates_destination(&self, addr: IpAddr) -> bool {
        self.destinations.is_empty() || self.destinations.iter().any(|net| net.contains(&addr))
    }
}

fn count_families<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> (usize, usize) {
    nets.into_iter().fold((0, 0), |(v4, v6), net| match net {
        IpNet::V4(_) => (v4 + 1, v6),
        IpNet::V6(_) => (v4, v6 + 1),
    })
}

/// Prints a list of problems, one line each, for [`PolicyError::Invalid`].
fn problem_lines<'a>(origin: &'a str, problems: &'a [Problem]) -> ProblemLines<'a> {
    ProblemLines { origin, problems }
}

struct ProblemLines<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            let Problem {
                line,
                column,
                message,
            } = problem;
            write!(f, "{}:{line}:{column}: {message}", self.origin)?;
        }
        Ok(())
    }
}

/// The whole of a regular file of at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>, PolicyError> {
    let read_error = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    // Opening a FIFO without O_NONBLOCK waits for a writer, and the daemon
    // reloads on its only thread: it would stop handling signals and
    // reloads for good. On a regular file the flag changes nothing.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if let Some(kind) = FileKind::of(metadata.file_type()) {
        return Err(PolicyError::NotAFile {
            path: path.to_owned(),
            kind,
        });
    }
    let too_large = || PolicyError::TooLarge {
        path: path.to_owned(),
    };
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }

    // Bounded again while reading: a file can grow after the check, and
    // files such as those in /proc report no size at all.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Checks that a file is UTF-8, pointing at the first bad byte if not.
fn decode<'a>(bytes: &'a [u8], origin: &str) -> Result<&'a str, PolicyError> {
    let error = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(error) => error,
    };

    let offset = error.valid_up_to();
    let message = format!(
        "byte 0x{:02x} is not valid UTF-8; a policy must be UTF-8 text",
        bytes[offset]
    );
    Err(PolicyError::Invalid {
        origin: origin.to_owned(),
        problems: vec![Lines::new(bytes).problem(offset, message)],
    })
}

/// The largest counts a policy may hold.
#[derive(Clone, Copy, Debug)]
struct Limits {
    ports: usize,
    connectors: usize,
    /// Per address family.
    sources: usize,
    /// Per address family.
    destinations: usize,
}

impl Limits {
    /// The sizes of the XDP program's maps. The `u32` constants are map
    /// sizes, which fit a `usize` on every target aya supports.
    const MAP_SIZES: Limits = Limits {
        ports: MAX_PORTS,
        connectors: MAX_CONNECTORS,
        sources: MAX_SOURCE_PREFIXES as usize,
        destinations: MAX_DESTINATION_PREFIXES as usize,
    };
}

/// The file as TOML decodes it, each value with its byte span.
///
/// Required keys are `Option`s so that their absence is reported together
/// with every other problem rather than alone by the decoder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    mode: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<Spanned<i64>>>>,
    destinations: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, rename = "connector")]
    connectors: Vec<Spanned<RawConnector>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnector {
    name: Option<Spanned<String>>,
    sources: Option<Spanned<Vec<Spanned<String>>>>,
}

fn parse_with_limits(
    text: &str,
    origin: &str,
    options: LoadOptions,
    limits: Limits,
) -> Result<Policy, PolicyError> {
    let lines = Lines::new(text.as_bytes());
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let offset = error.span().map_or(0, |span| span.start);
            return Err(PolicyError::Invalid {
                origin: origin.to_owned(),
                problems: vec![lines.problem(offset, error.message())],
            });
        }
    };

    // Counted as written: a connector whose sources are all invalid is
    // reported for those, not again as an empty policy.
    let written_sources: usize = raw
        .connectors
        .iter()
        .filter_map(|connector| connector.get_ref().sources.as_ref())
        .map(|sources| sources.get_ref().len())
        .sum();

    let mut checker = Checker {
        lines,
        limits,
        problems: Vec::new(),
    };
    let mode = checker.mode(raw.mode);
    let ports = checker.ports(raw.ports);
    let destinations = checker.destinations(raw.destinations);
    let connectors = checker.connectors(raw.connectors);

    let refuse_empty = written_sources == 0 && !options.allow_empty;
    if let (Some((Mode::Enforce, mode_offset)), true) = (mode, refuse_empty) {
        checker.report(
            mode_offset,
            "mode = \"enforce\" with no source prefixes in any connector would drop every \
             gated SYN; add a connector with sources, use mode = \"monitor\", or pass \
             --allow-empty if dropping every gated SYN is intended",
        );
    }

    let Checker { mut problems, .. } = checker;
    match mode {
        Some((mode, _)) if problems.is_empty() => Ok(Policy {
            mode,
            ports,
            destinations,
            connectors,
        }),
        _ => {
            // Stable: problems at one position keep the order of the checks.
            problems.sort_by_key(|problem| (problem.line, problem.column));
            Err(PolicyError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }
}

/// Turns byte offsets into 1-based lines and columns, the column counted in
/// characters.
struct Lines<'a> {
    bytes: &'a [u8],
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// Works on bytes rather than `str` so that it can also place the first
    /// invalid byte of a file that is not UTF-8.
    fn new(bytes: &'a [u8]) -> Self {
        let after_newlines = bytes
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .map(|(offset, _)| offset + 1);
        let starts = std::iter::once(0).chain(after_newlines).collect();
        Lines { bytes, starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.bytes.len());
        // The first line starts at 0, so at least one start is <= offset.
        let line = self.starts.partition_point(|start| *start <= offset);
        let start = self.starts[line - 1];

        let mut before = &self.bytes[start..offset];
        if line == 1 {
            // Editors do not show a byte order mark, so do not count it.
            before = before.strip_prefix(b"\xef\xbb\xbf").unwrap_or(before);
        }
        let is_continuation = |byte: &&u8| **byte & 0xc0 == 0x80;
        let column = before.iter().filter(|byte| !is_continuation(byte)).count() + 1;

        (line, column)
    }

    fn problem(&self, offset: usize, message: impl Into<String>) -> Problem {
        let (line, column) = self.position(offset);
        Problem {
            line,
            column,
            message: message.into(),
        }
    }
}

/// Collects the problems of one policy while turning raw values into checked
/// ones.
struct Checker<'a> {
    lines: Lines<'a>,
    limits: Limits,
    problems: Vec<Problem>,
}

type RawList<T> = Spanned<Vec<Spanned<T>>>;

impl Checker<'_> {
    fn report(&mut self, offset: usize, message: impl Into<String>) {
        let problem = self.lines.problem(offset, message);
        self.problems.push(problem);
    }

    /// `line:column` of an offset, for messages that point at a second place.
    fn at(&self, offset: usize) -> String {
        let (line, column) = self.lines.position(offset);
        format!("{line}:{column}")
    }

    /// Records that entry `at` (index, offset) of a list lists `value`, and
    /// reports it when an earlier entry in `seen` listed it already.
    fn is_repeat<T: std::hash::Hash + Eq + std::fmt::Display>(
        &mut self,
        seen: &mut HashMap<T, (usize, usize)>,
        value: T,
        what: &str,
        at: (usize, usize),
    ) -> bool {
        let (index, offset) = at;
        match seen.entry(value) {
            Entry::Occupied(first) => {
                let (first_index, first_offset) = *first.get();
                let message = format!(
                    "duplicate {what} {}: entry {} repeats entry {} at {}",
                    first.key(),
                    index + 1,
                    first_index + 1,
                    self.at(first_offset)
                );
                self.report(offset, message);
                true
            }
            Entry::Vacant(slot) => {
                slot.insert(at);
                false
            }
        }
    }

    /// The mode, with the offset of its value.
    fn mode(&mut self, raw: Option<Spanned<String>>) -> Option<(Mode, usize)> {
        let Some(raw) = raw else {
            self.report(
                0,
                "missing required key mode; set mode = \"monitor\" or mode = \"enforce\"",
            );
            return None;
        };

        let offset = raw.span().start;
        match raw.get_ref().as_str() {
            "enforce" => Some((Mode::Enforce, offset)),
            "monitor" => Some((Mode::Monitor, offset)),
            other => {
                let message = format!("mode must be \"enforce\" or \"monitor\", not {other:?}");
                self.report(offset, message);
                None
            }
        }
    }

    fn ports(&mut self, raw: Option<RawList<i64>>) -> Vec<u16> {
        let Some(raw) = raw else {
            self.report(0, "missing required key ports; for SMTP, set ports = [25]");
            return Vec::new();
        };

        let list_offset = raw.span().start;
        let entries = raw.into_inner();
        if entries.is_empty() {
            self.report(list_offset, "ports must list at least one gated port");
        }
        if entries.len() > self.limits.ports {
            let message = format!(
                "ports lists {} ports; at most {} are allowed",
                entries.len(),
                self.limits.ports
            );
            self.report(list_offset, message);
        }

        let mut ports = Vec::with_capacity(entries.len());
        // Port to (entry index, offset) of its first listing.
        let mut seen = HashMap::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let offset = entry.span().start;
            let value = entry.into_inner();
            let Some(port) = u16::try_from(value).ok().filter(|port| *port != 0) else {
                let message = format!("port {value} is out of range; ports are 1 to 65535");
                self.report(offset, message);
                continue;
            };

            if self.is_repeat(&mut seen, port, "port", (index, offset)) {
                continue;
            }
            ports.push(port);
        }
        ports
    }

    fn destinations(&mut self, raw: Option<RawList<String>>) -> Vec<IpNet> {
        let Some(raw) = raw else {
            return Vec::new();
        };

        let mut destinations = Vec::with_capacity(raw.get_ref().len());
        let mut tally = FamilyTally::new(self.limits.destinations);
        // Network to (entry index, offset) of its first listing.
        let mut seen = HashMap::new();
        for (index, entry) in raw.into_inner().into_iter().enumerate() {
            let offset = entry.span().start;
            let Some(net) = self.network(entry.get_ref(), offset) else {
                continue;
            };

            if self.is_repeat(&mut seen, net, "destination", (index, offset)) {
                continue;
            }
            tally.add(&net, offset);
            destinations.push(net);
        }

        for (family, count, offset) in tally.over_limit() {
            let message = format!(
                "destinations lists {count} {family} prefixes; at most {} per address family \
                 are allowed",
                self.limits.destinations
            );
            self.report(offset, message);
        }
        destinations
    }

    fn connectors(&mut self, raw: Vec<Spanned<RawConnector>>) -> Vec<Connector> {
        if let Some(first_extra) = raw.get(self.limits.connectors) {
            let message = format!(
                "the policy defines {} connectors; at most {} are allowed",
                raw.len(),
                self.limits.connectors
            );
            self.report(first_extra.span().start, message);
        }

        let mut connectors = Vec::with_capacity(raw.len());
        // How each connector is named in messages, by index.
        let mut labels = Vec::with_capacity(raw.len());
        // Name to the offset of its first use.
        let mut names = HashMap::new();
        // Source network to (connector index, entry index, offset).
        let mut owners = HashMap::new();
        let mut tally = FamilyTally::new(self.limits.sources);
        for (connector_index, raw) in raw.into_iter().enumerate() {
            let header = raw.span().start;
            let RawConnector { name, sources } = raw.into_inner();

            let name = self.connector_name(name, header, &mut names);
            let label = match &name {
                Some(name) => format!("connector {name:?}"),
                None => format!("connector #{}", connector_index + 1),
            };
            let Some(sources) = sources else {
                let message = format!(
                    "{label} has no sources key; write sources = [] for a connector without \
                     sources yet"
                );
                self.report(header, message);
                labels.push(label);
                continue;
            };

            let mut checked = Vec::with_capacity(sources.get_ref().len());
            for (index, entry) in sources.into_inner().into_iter().enumerate() {
                let offset = entry.span().start;
                let Some(net) = self.network(entry.get_ref(), offset) else {
                    continue;
                };

                match owners.entry(net) {
                    Entry::Occupied(first) => {
                        let (first_connector, first_index, first_offset) = *first.get();
                        let first_at = self.at(first_offset);
                        let message = if first_connector == connector_index {
                            format!(
                                "duplicate source {net} in {label}: entry {} repeats entry {} \
                                 at {first_at}",
                                index + 1,
                                first_index + 1,
                            )
                        } else {
                            let first_label = &labels[first_connector];
                            format!(
                                "source {net} of {label} is already in {first_label} at \
                                 {first_at}; a prefix can belong to only one connector"
                            )
                        };
                        self.report(offset, message);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert((connector_index, index, offset));
                        tally.add(&net, offset);
                        checked.push(net);
                    }
                }
            }

            labels.push(label);
            connectors.push(Connector {
                name: name.unwrap_or_default(),
                sources: checked,
            });
        }

        for (family, count, offset) in tally.over_limit() {
            let message = format!(
                "the connectors list {count} {family} source prefixes; at most {} per address \
                 family are allowed",
                self.limits.sources
            );
            self.report(offset, message);
        }
        connectors
    }

    /// The connector's name if it has one, valid or not, so that later
    /// messages can still call the connector by it.
    fn connector_name(
        &mut self,
        raw: Option<Spanned<String>>,
        header: usize,
        names: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let Some(raw) = raw else {
            self.report(header, "connector has no name; add name = \"...\"");
            return None;
        };

        let offset = raw.span().start;
        let name = raw.into_inner();
        if let Some(message) = name_problem(&name) {
            self.report(offset, message);
        }

        match names.entry(name.clone()) {
            Entry::Occupied(first) => {
                let message = format!(
                    "duplicate connector name {name:?}: the first is at {}",
                    self.at(*first.get())
                );
                self.report(offset, message);
            }
            Entry::Vacant(slot) => {
                slot.insert(offset);
            }
        }
        Some(name)
    }

    /// A destination or source: the network, or `None` after reporting why
    /// it is not one.
    fn network(&mut self, text: &str, offset: usize) -> Option<IpNet> {
        let net = match parse_network(text) {
            Ok(net) => net,
            Err(message) => {
                self.report(offset, message);
                return None;
            }
        };

        let network = net.trunc();
        if network != net {
            let host = IpNet::from(net.addr());
            let message = format!(
                "{net} has host bits set; did you mean {network} (or {host} for the single \
                 host)?"
            );
            self.report(offset, message);
            return None;
        }
        Some(net)
    }
}

fn name_problem(name: &str) -> Option<String> {
    let length = name.chars().count();
    if length == 0 {
        return Some("connector name is empty".to_owned());
    }
    if length > MAX_NAME_CHARS {
        return Some(format!(
            "connector name {name:?} is {length} characters long; at most {MAX_NAME_CHARS} are \
             allowed"
        ));
    }

    let allowed = |c: &char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c);
    let bad = name.chars().find(|c| !allowed(c))?;
    Some(format!(
        "connector name {name:?} contains {bad:?}; use only a-z, 0-9, '.', '_' and '-'"
    ))
}

/// Parses an address (a host prefix) or `address/length`, saying which part
/// is wrong when it fails.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let Some((addr, length)) = text.split_once('/') else {
        return text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{text:?} is not an IP address or prefix"));
    };

    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an IP prefix: {addr:?} is not an IP address"))?;
    // Digits only: `u8::from_str` would also take a sign.
    let length: u8 = Some(length)
        .filter(|length| length.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|length| length.parse().ok())
        .ok_or_else(|| {
            format!("{text:?} is not an IP prefix: {length:?} is not a prefix length")
        })?;

    IpNet::new(addr, length).map_err(|_| {
        let (family, bits) = match addr {
            IpAddr::V4(_) => ("IPv4", 32),
            IpAddr::V6(_) => ("IPv6", 128),
        };
        format!("{text:?} is not an IP prefix: an {family} prefix is at most /{bits}")
    })
}

/// Counts prefixes per address family against a limit, remembering where
/// each family first went over it.
struct FamilyTally {
    limit: usize,
    /// IPv4, then IPv6.
    counts: [usize; 2],
    first_over: [Option<usize>; 2],
}

impl FamilyTally {
    fn new(limit: usize) -> Self {
        FamilyTally {
            limit,
            counts: [0; 2],
            first_over: [None; 2],
        }
    }

    fn add(&mut self, net: &IpNet, offset: usize) {
        let family = match net {
            IpNet::V4(_) => 0,
            IpNet::V6(_) => 1,
        };
        self.counts[family] += 1;
        if self.counts[family] == self.limit + 1 {
            self.first_over[family] = Some(offset);
        }
    }

    /// Each family over the limit: its name, its count and the offset of its
    /// first prefix past the limit.
    fn over_limit(&self) -> impl Iterator<Item = (&'static str, usize, usize)> + use<'_> {
        ["IPv4", "IPv6"]
            .into_iter()
            .zip(self.counts)
            .zip(self.first_over)
            .filter_map(|((family, count), offset)| Some((family, count, offset?)))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    const ORIGIN: &str = "test.toml";

    /// Two valid lines, so that the checks below can add the rest.
    const HEAD: &str = "mode = \"monitor\"\nports = [25]\n";

    const EXAMPLE: &str = include_str!("../../examples/policy.toml");

    fn parsed(text: &str) -> Policy {
        Policy::parse(text, ORIGIN, LoadOptions::default())
            .unwrap_or_else(|error| panic!("policy should parse:\n{error}\n--- text:\n{text}"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        problems_with(text, LoadOptions::default(), Limits::MAP_SIZES)
    }

    fn problems_with(text: &str, options: LoadOptions, limits: Limits) -> Vec<Problem> {
        match parse_with_limits(text, ORIGIN, options, limits) {
            Ok(policy) => panic!("policy should be refused, got {policy:?}\n--- text:\n{text}"),
            Err(PolicyError::Invalid { origin, problems }) => {
                assert_eq!(origin, ORIGIN);
                problems
            }
            Err(other) => panic!("expected PolicyError::Invalid, got {other:?}"),
        }
    }

    fn problem(line: usize, column: usize, message: &str) -> Problem {
        Problem {
            line,
            column,
            message: message.to_owned(),
        }
    }

    /// The single problem of `text`, for checks that match part of a message.
    fn only_problem(text: &str) -> Problem {
        let mut found = problems(text);
        assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
        found.remove(0)
    }

    fn net(text: &str) -> IpNet {
        text.parse()
            .unwrap_or_else(|error| panic!("test network {text:?}: {error}"))
    }

    fn addr(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("test address {text:?}: {error}"))
    }

    fn connector(name: &str, sources: &[&str]) -> Connector {
        Connector {
            name: name.to_owned(),
            sources: sources.iter().map(|source| net(source)).collect(),
        }
    }

    /// A file in the temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("gatekeeper-policy-{}-{name}", std::process::id()));
            std::fs::write(&path, contents)
                .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn full_policy_parses_to_exact_struct() {
        let text = r#"mode = "enforce"
ports = [587, 25]
destinations = ["192.0.2.25", "2001:db8:25::/64", "192.0.2.128/25"]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]

[[connector]]
name = "erp-app"
sources = ["192.0.2.10", "2001:DB8:200::10"]

[[connector]]
name = "spare"
sources = []
"#;
        let expected = Policy {
            mode: Mode::Enforce,
            ports: vec![587, 25],
            destinations: vec![
                net("192.0.2.25/32"),
                net("2001:db8:25::/64"),
                net("192.0.2.128/25"),
            ],
            connectors: vec![
                connector("upstream-filter", &["198.51.100.0/24", "2001:db8:100::/48"]),
                connector("erp-app", &["192.0.2.10/32", "2001:db8:200::10/128"]),
                connector("spare", &[]),
            ],
        };
        assert_eq!(parsed(text), expected);
    }

    #[test]
    fn inline_connector_tables_parse() {
        let text = format!(
            "{HEAD}connector = [{{ name = \"a\", sources = [\"192.0.2.0/25\"] }}, \
             {{ name = \"b\", sources = [] }}]\n"
        );
        let policy = parsed(&text);
        assert_eq!(
            policy.connectors,
            vec![connector("a", &["192.0.2.0/25"]), connector("b", &[])]
        );
    }

    #[test]
    fn example_policy_parses() {
        let policy = Policy::parse(EXAMPLE, "examples/policy.toml", LoadOptions::default())
            .unwrap_or_else(|error| panic!("examples/policy.toml:\n{error}"));

        assert_eq!(policy.mode, Mode::Monitor);
        assert_eq!(policy.ports, vec![25]);
        let upstream = policy
            .connectors
            .iter()
            .find(|connector| connector.name == "upstream-filter")
            .expect("the example names an upstream-filter connector");
        assert_eq!(
            *upstream,
            connector("upstream-filter", &["198.51.100.0/24", "2001:db8:100::/48"])
        );

        // Demos send from 203.0.113.0/24 as the unauthorized side.
        let unauthorized = net("203.0.113.0/24");
        for connector in &policy.connectors {
            for source in &connector.sources {
                assert!(
                    !source.contains(&unauthorized) && !unauthorized.contains(source),
                    "{} overlaps {unauthorized} in connector {}",
                    source,
                    connector.name
                );
            }
        }
        assert_eq!(policy.connector_for(addr("203.0.113.7")), None);
        let found = policy.connector_for(addr("198.51.100.20"));
        assert_eq!(
            found.map(|(c, net)| (c.name.as_str(), net)),
            Some(("upstream-filter", net("198.51.100.0/24")))
        );
    }

    #[test]
    fn example_policy_uses_only_documentation_ranges() {
        let documentation = [
            net("192.0.2.0/24"),
            net("198.51.100.0/24"),
            net("203.0.113.0/24"),
            net("2001:db8::/32"),
        ];
        let policy = parsed(EXAMPLE);
        let sources = policy.connectors.iter().flat_map(|c| &c.sources);
        for prefix in sources.chain(&policy.destinations) {
            assert!(
                documentation.iter().any(|range| range.contains(prefix)),
                "{prefix} is outside the documentation ranges"
            );
        }
    }

    #[test]
    fn example_policy_is_valid_in_enforce_mode() {
        let enforcing = EXAMPLE.replace("mode = \"monitor\"", "mode = \"enforce\"");
        assert_ne!(enforcing, EXAMPLE, "the example sets mode = \"monitor\"");
        assert_eq!(parsed(&enforcing).mode, Mode::Enforce);
    }

    #[test]
    fn mode_displays_as_written_in_the_policy() {
        assert_eq!(Mode::Enforce.to_string(), "enforce");
        assert_eq!(Mode::Monitor.to_string(), "monitor");
    }

    #[test]
    fn mode_is_required() {
        assert_eq!(
            problems("ports = [25]\n"),
            vec![problem(
                1,
                1,
                "missing required key mode; set mode = \"monitor\" or mode = \"enforce\""
            )]
        );
    }

    #[test]
    fn mode_must_be_enforce_or_monitor() {
        assert_eq!(
            problems("mode = \"Enforce\"\nports = [25]\n"),
            vec![problem(
                1,
                8,
                "mode must be \"enforce\" or \"monitor\", not \"Enforce\""
            )]
        );
    }

    #[test]
    fn mode_must_be_a_string() {
        assert_eq!(
            problems("mode = 1\nports = [25]\n"),
            vec![problem(
                1,
                8,
                "invalid type: integer `1`, expected a string"
            )]
        );
    }

    #[test]
    fn ports_are_required() {
        assert_eq!(
            problems("mode = \"monitor\"\n"),
            vec![problem(
                1,
                1,
                "missing required key ports; for SMTP, set ports = [25]"
            )]
        );
    }

    #[test]
    fn ports_must_not_be_empty() {
        assert_eq!(
            problems("mode = \"monitor\"\nports = []\n"),
            vec![problem(2, 9, "ports must list at least one gated port")]
        );
    }

    #[test]
    fn ports_must_be_in_range() {
        assert_eq!(
            problems("mode = \"monitor\"\nports = [0, 25, 65536, -1, 65535]\n"),
            vec![
                problem(2, 10, "port 0 is out of range; ports are 1 to 65535"),
                problem(2, 17, "port 65536 is out of range; ports are 1 to 65535"),
                problem(2, 24, "port -1 is out of range; ports are 1 to 65535"),
            ]
        );
        assert_eq!(
            parsed("mode = \"monitor\"\nports = [1, 65535]\n").ports,
            vec![1, 65535]
        );
    }

    #[test]
    fn ports_must_be_integers() {
        let found = only_problem("mode = \"monitor\"\nports = [\"25\"]\n");
        assert_eq!((found.line, found.column), (2, 10));
        assert!(
            found.message.starts_with("invalid type: string"),
            "{found:?}"
        );
    }

    #[test]
    fn duplicate_ports_name_both_entries() {
        assert_eq!(
            problems("mode = \"monitor\"\nports = [25, 587, 25, 25]\n"),
            vec![
                problem(2, 19, "duplicate port 25: entry 3 repeats entry 1 at 2:10"),
                problem(2, 23, "duplicate port 25: entry 4 repeats entry 1 at 2:10"),
            ]
        );
    }

    #[test]
    fn at_most_max_ports() {
        let list = |count: u16| {
            let ports: Vec<String> = (1..=count).map(|port| port.to_string()).collect();
            format!("mode = \"monitor\"\nports = [{}]\n", ports.join(", "))
        };
        let at_limit = u16::try_from(MAX_PORTS).expect("MAX_PORTS fits a port");

        assert_eq!(parsed(&list(at_limit)).ports.len(), MAX_PORTS);
        assert_eq!(
            problems(&list(at_limit + 1)),
            vec![problem(
                2,
                9,
                "ports lists 17 ports; at most 16 are allowed"
            )]
        );
    }

    #[test]
    fn destinations_default_to_empty_and_gate_everything() {
        let policy = parsed(HEAD);
        assert_eq!(policy.destinations, Vec::new());
        assert!(policy.gates_destination(addr("192.0.2.1")));
        assert!(policy.gates_destination(addr("2001:db8::1")));
    }

    #[test]
    fn destinations_gate_only_their_addresses() {
        let policy = parsed(&format!(
            "{HEAD}destinations = [\"192.0.2.25\", \"2001:db8:25::/64\"]\n"
        ));
        assert_eq!(
            policy.destinations,
            vec![net("192.0.2.25/32"), net("2001:db8:25::/64")]
        );
        assert!(policy.gates_destination(addr("192.0.2.25")));
        assert!(!policy.gates_destination(addr("192.0.2.26")));
        assert!(policy.gates_destination(addr("2001:db8:25::99")));
        assert!(!policy.gates_destination(addr("2001:db8:26::1")));
    }

    #[test]
    fn destinations_must_not_have_host_bits() {
        assert_eq!(
            problems(&format!("{HEAD}destinations = [\"192.0.2.1/24\"]\n")),
            vec![problem(
                3,
                17,
                "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24 (or 192.0.2.1/32 for \
                 the single host)?"
            )]
        );
    }

    #[test]
    fn duplicate_destinations_are_refused_even_when_spelled_differently() {
        assert_eq!(
            problems(&format!(
                "{HEAD}destinations = [\"192.0.2.1\", \"192.0.2.1/32\"]\n"
            )),
            vec![problem(
                3,
                30,
                "duplicate destination 192.0.2.1/32: entry 2 repeats entry 1 at 3:17"
            )]
        );
    }

    #[test]
    fn destinations_must_be_addresses_or_prefixes() {
        assert_eq!(
            problems(&format!("{HEAD}destinations = [\"mail.example\"]\n")),
            vec![problem(
                3,
                17,
                "\"mail.example\" is not an IP address or prefix"
            )]
        );
    }

    #[test]
    fn at_most_max_destination_prefixes_per_family() {
        let list = |count: u32| {
            let mut text = format!("{HEAD}destinations = [\n\"192.0.2.1\",\n");
            for host in 1..=count {
                writeln!(text, "\"2001:db8::{host:x}\",").expect("writing to a String");
            }
            text.push_str("]\n");
            text
        };

        let policy = parsed(&list(MAX_DESTINATION_PREFIXES));
        assert_eq!(
            policy.destination_counts(),
            (1, MAX_DESTINATION_PREFIXES as usize)
        );
        // Entry k of the IPv6 addresses is on line 4 + k.
        assert_eq!(
            problems(&list(MAX_DESTINATION_PREFIXES + 1)),
            vec![problem(
                4101,
                1,
                "destinations lists 4097 IPv6 prefixes; at most 4096 per address family are \
                 allowed"
            )]
        );
    }

    #[test]
    fn destination_limit_is_per_family() {
        let limits = Limits {
            destinations: 1,
            ..Limits::MAP_SIZES
        };
        let text = format!(
            "{HEAD}destinations = [\"192.0.2.1\", \"2001:db8::1\", \"192.0.2.2\", \"192.0.2.3\"]\n"
        );
        assert_eq!(
            problems_with(&text, LoadOptions::default(), limits),
            vec![problem(
                3,
                45,
                "destinations lists 3 IPv4 prefixes; at most 1 per address family are allowed"
            )]
        );
    }

    #[test]
    fn bare_addresses_are_host_prefixes() {
        let policy = parsed(&format!(
            "{HEAD}[[connector]]\nname = \"hosts\"\nsources = [\"192.0.2.10\", \"2001:db8::10\"]\n"
        ));
        assert_eq!(
            policy.connectors,
            vec![connector("hosts", &["192.0.2.10/32", "2001:db8::10/128"])]
        );
    }

    #[test]
    fn source_with_host_bits_suggests_the_network() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\n\
             sources = [\"198.51.100.7/24\", \"2001:db8:100::1/48\"]\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                problem(
                    5,
                    12,
                    "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24 (or \
                     198.51.100.7/32 for the single host)?"
                ),
                problem(
                    5,
                    31,
                    "2001:db8:100::1/48 has host bits set; did you mean 2001:db8:100::/48 (or \
                     2001:db8:100::1/128 for the single host)?"
                ),
            ]
        );
    }

    #[test]
    fn malformed_sources_say_which_part_is_wrong() {
        let cases = [
            ("bogus", "\"bogus\" is not an IP address or prefix"),
            (
                "bogus/24",
                "\"bogus/24\" is not an IP prefix: \"bogus\" is not an IP address",
            ),
            (
                "198.51.100.0/x",
                "\"198.51.100.0/x\" is not an IP prefix: \"x\" is not a prefix length",
            ),
            (
                "198.51.100.0/+24",
                "\"198.51.100.0/+24\" is not an IP prefix: \"+24\" is not a prefix length",
            ),
            (
                "198.51.100.0/",
                "\"198.51.100.0/\" is not an IP prefix: \"\" is not a prefix length",
            ),
            (
                "198.51.100.0/33",
                "\"198.51.100.0/33\" is not an IP prefix: an IPv4 prefix is at most /32",
            ),
            (
                "2001:db8::/129",
                "\"2001:db8::/129\" is not an IP prefix: an IPv6 prefix is at most /128",
            ),
            (
                " 198.51.100.1",
                "\" 198.51.100.1\" is not an IP address or prefix",
            ),
        ];
        for (source, message) in cases {
            let text = format!("{HEAD}[[connector]]\nname = \"a\"\nsources = [{source:?}]\n");
            assert_eq!(
                problems(&text),
                vec![problem(5, 12, message)],
                "source {source:?}"
            );
        }
    }

    #[test]
    fn duplicate_source_in_one_connector() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\n\
             sources = [\"198.51.100.0/24\", \"198.51.100.0/24\"]\n"
        );
        assert_eq!(
            problems(&text),
            vec![problem(
                5,
                31,
                "duplicate source 198.51.100.0/24 in connector \"a\": entry 2 repeats entry 1 at \
                 5:12"
            )]
        );
    }

    #[test]
    fn same_source_in_two_connectors_names_both() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\nsources = [\"198.51.100.0/24\"]\n\n\
             [[connector]]\nname = \"b\"\nsources = [\"2001:db8::/32\", \"198.51.100.0/24\"]\n"
        );
        assert_eq!(
            problems(&text),
            vec![problem(
                9,
                29,
                "source 198.51.100.0/24 of connector \"b\" is already in connector \"a\" at \
                 5:12; a prefix can belong to only one connector"
            )]
        );
    }

    #[test]
    fn overlapping_sources_pick_the_longest_match() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"wide\"\n\
             sources = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\n\
             [[connector]]\nname = \"narrow\"\n\
             sources = [\"198.51.100.128/25\", \"198.51.100.200\", \"2001:db8:100::/48\"]\n"
        );
        let policy = parsed(&text);
        let lookup = |text: &str| {
            policy
                .connector_for(addr(text))
                .map(|(connector, prefix)| (connector.name.clone(), prefix))
        };

        let wide = |prefix: &str| Some(("wide".to_owned(), net(prefix)));
        let narrow = |prefix: &str| Some(("narrow".to_owned(), net(prefix)));
        assert_eq!(lookup("198.51.100.1"), wide("198.51.100.0/24"));
        assert_eq!(lookup("198.51.100.129"), narrow("198.51.100.128/25"));
        assert_eq!(lookup("198.51.100.200"), narrow("198.51.100.200/32"));
        assert_eq!(lookup("2001:db8:1::1"), wide("2001:db8::/32"));
        assert_eq!(lookup("2001:db8:100::25"), narrow("2001:db8:100::/48"));
        assert_eq!(lookup("203.0.113.1"), None);
        assert_eq!(lookup("2001:db9::1"), None);
        // An IPv4-mapped IPv6 address is IPv6; IPv4 prefixes do not match it.
        assert_eq!(lookup("::ffff:198.51.100.1"), None);
    }

    #[test]
    fn counts_are_per_family() {
        let text = format!(
            "{HEAD}destinations = [\"192.0.2.25\"]\n\
             [[connector]]\nname = \"a\"\nsources = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\
             [[connector]]\nname = \"b\"\nsources = [\"192.0.2.0/25\"]\n"
        );
        let policy = parsed(&text);
        assert_eq!(policy.source_counts(), (2, 1));
        assert_eq!(policy.destination_counts(), (1, 0));
    }

    #[test]
    fn connector_names_follow_the_rules() {
        let longest = "a.b_c-0123456789abcdefghijklmnop";
        assert_eq!(longest.len(), MAX_NAME_CHARS);
        let named = |name: &str| format!("{HEAD}[[connector]]\nname = {name:?}\nsources = []\n");
        assert_eq!(parsed(&named(longest)).connectors[0].name, longest);

        let too_long = format!("{longest}x");
        let cases = [
            ("", "connector name is empty".to_owned()),
            (
                too_long.as_str(),
                format!(
                    "connector name {too_long:?} is 33 characters long; at most 32 are allowed"
                ),
            ),
            (
                "Upstream",
                "connector name \"Upstream\" contains 'U'; use only a-z, 0-9, '.', '_' and '-'"
                    .to_owned(),
            ),
            (
                "up stream",
                "connector name \"up stream\" contains ' '; use only a-z, 0-9, '.', '_' and '-'"
                    .to_owned(),
            ),
            (
                "café",
                "connector name \"café\" contains 'é'; use only a-z, 0-9, '.', '_' and '-'"
                    .to_owned(),
            ),
        ];
        for (name, message) in cases {
            assert_eq!(
                problems(&named(name)),
                vec![problem(4, 8, &message)],
                "name {name:?}"
            );
        }
    }

    #[test]
    fn connector_needs_a_name() {
        let text = format!("{HEAD}[[connector]]\nsources = [\"198.51.100.0/24\"]\n");
        assert_eq!(
            problems(&text),
            vec![problem(3, 1, "connector has no name; add name = \"...\"")]
        );
    }

    #[test]
    fn connector_needs_a_sources_key() {
        let text = format!("{HEAD}\n[[connector]]\nname = \"a\"\n");
        assert_eq!(
            problems(&text),
            vec![problem(
                4,
                1,
                "connector \"a\" has no sources key; write sources = [] for a connector without \
                 sources yet"
            )]
        );
    }

    #[test]
    fn unnamed_connectors_are_called_by_number() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\nsources = [\"192.0.2.0/24\"]\n\
             [[connector]]\nsources = [\"192.0.2.0/24\"]\n"
        );
        assert_eq!(
            problems(&text),
            vec![
                problem(6, 1, "connector has no name; add name = \"...\""),
                problem(
                    7,
                    12,
                    "source 192.0.2.0/24 of connector #2 is already in connector \"a\" at 5:12; \
                     a prefix can belong to only one connector"
                ),
            ]
        );
    }

    #[test]
    fn duplicate_connector_names() {
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\nsources = []\n\
             [[connector]]\nname = \"a\"\nsources = []\n"
        );
        assert_eq!(
            problems(&text),
            vec![problem(
                7,
                8,
                "duplicate connector name \"a\": the first is at 4:8"
            )]
        );
    }

    #[test]
    fn at_most_max_connectors() {
        let connectors = |count: usize| {
            let mut text = HEAD.to_owned();
            for index in 0..count {
                write!(text, "[[connector]]\nname = \"c{index}\"\nsources = []\n")
                    .expect("writing to a String");
            }
            text
        };

        assert_eq!(
            parsed(&connectors(MAX_CONNECTORS)).connectors.len(),
            MAX_CONNECTORS
        );
        // Connector k starts on line 3 * k.
        assert_eq!(
            problems(&connectors(MAX_CONNECTORS + 1)),
            vec![problem(
                3075,
                1,
                "the policy defines 1025 connectors; at most 1024 are allowed"
            )]
        );
    }

    #[test]
    fn source_limit_is_per_family_across_connectors() {
        let limits = Limits {
            sources: 2,
            ..Limits::MAP_SIZES
        };
        let text = format!(
            "{HEAD}[[connector]]\nname = \"a\"\nsources = [\"192.0.2.1\", \"2001:db8::1\"]\n\
             [[connector]]\nname = \"b\"\n\
             sources = [\"2001:db8::2\", \"192.0.2.2\", \"192.0.2.3\"]\n"
        );
        assert_eq!(
            problems_with(&text, LoadOptions::default(), limits),
            vec![problem(
                8,
                40,
                "the connectors list 3 IPv4 source prefixes; at most 2 per address family are \
                 allowed"
            )]
        );
        assert_eq!(Limits::MAP_SIZES.sources, 1 << 20);
    }

    const EMPTY_ENFORCE: &str = "mode = \"enforce\" with no source prefixes in any connector \
                                 would drop every gated SYN; add a connector with sources, use \
                                 mode = \"monitor\", or pass --allow-empty if dropping every \
                                 gated SYN is intended";

    #[test]
    fn enforce_without_connectors_is_refused() {
        assert_eq!(
            problems("mode = \"enforce\"\nports = [25]\n"),
            vec![problem(1, 8, EMPTY_ENFORCE)]
        );
    }

    #[test]
    fn enforce_with_only_empty_connectors_is_refused() {
        let text = "mode = \"enforce\"\nports = [25]\n[[connector]]\nname = \"a\"\nsources = []\n";
        assert_eq!(problems(text), vec![problem(1, 8, EMPTY_ENFORCE)]);
    }

    #[test]
    fn enforce_without_sources_is_accepted_with_allow_empty() {
        let options = LoadOptions { allow_empty: true };
        let policy = Policy::parse("mode = \"enforce\"\nports = [25]\n", ORIGIN, options)
            .unwrap_or_else(|error| panic!("allow_empty should accept it:\n{error}"));
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.connectors, Vec::new());
    }

    #[test]
    fn monitor_without_sources_is_fine() {
        assert_eq!(parsed(HEAD).connectors, Vec::new());
    }

    #[test]
    fn enforce_with_only_invalid_sources_reports_the_sources() {
        let text = "mode = \"enforce\"\nports = [25]\n[[connector]]\nname = \"a\"\n\
                    sources = [\"bogus\"]\n";
        assert_eq!(
            problems(text),
            vec![problem(5, 12, "\"bogus\" is not an IP address or prefix")]
        );
    }

    #[test]
    fn unknown_top_level_key() {
        let found = only_problem(&format!("{HEAD}port = 25\n"));
        assert_eq!((found.line, found.column), (3, 1));
        assert!(
            found.message.starts_with("unknown field `port`"),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_connector_key() {
        let text = format!("{HEAD}[[connector]]\nname = \"a\"\nsource = [\"192.0.2.1\"]\n");
        let found = only_problem(&text);
        assert_eq!((found.line, found.column), (5, 1));
        assert!(
            found.message.starts_with("unknown field `source`"),
            "{found:?}"
        );
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            problems(&format!("{HEAD}ports = [587]\n")),
            vec![problem(3, 1, "duplicate key")]
        );
    }

    #[test]
    fn syntax_error_is_one_problem_at_its_position() {
        let found = only_problem("mode = \"monitor\nports = [0]\n");
        assert_eq!((found.line, found.column), (1, 16));
        assert!(
            found.message.starts_with("invalid basic string"),
            "{found:?}"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(
            problems(&format!("{HEAD}destinations = [\"ü\", \"192.0.2.1/24\"]\n")),
            vec![
                problem(3, 17, "\"ü\" is not an IP address or prefix"),
                problem(
                    3,
                    22,
                    "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24 (or \
                     192.0.2.1/32 for the single host)?"
                ),
            ]
        );
    }

    #[test]
    fn byte_order_mark_is_not_a_column() {
        assert_eq!(
            problems("\u{feff}mode = \"block\"\nports = [25]\n"),
            vec![problem(
                1,
                8,
                "mode must be \"enforce\" or \"monitor\", not \"block\""
            )]
        );
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(
            problems("mode = \"monitor\"\r\nports = [0]\r\n"),
            vec![problem(
                2,
                10,
                "port 0 is out of range; ports are 1 to 65535"
            )]
        );
    }

    #[test]
    fn all_problems_are_reported_together_in_file_order() {
        let text = r#"mode = "block"
ports = [0, 25, 25]
destinations = ["192.0.2.1/24"]

[[connector]]
name = "Bad"
sources = ["198.51.100.7/24", "2001:db8::/32"]

[[connector]]
name = "ok"
sources = ["2001:db8::/32", "bogus"]
"#;
        let found = problems(text);
        let lines: Vec<(usize, usize)> = found.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(
            lines,
            vec![
                (1, 8),
                (2, 10),
                (2, 17),
                (3, 17),
                (6, 8),
                (7, 12),
                (11, 12),
                (11, 29)
            ],
            "{found:#?}"
        );

        let error = PolicyError::Invalid {
            origin: ORIGIN.to_owned(),
            problems: found,
        };
        let shown = error.to_string();
        let shown: Vec<&str> = shown.lines().collect();
        assert_eq!(shown.len(), 8, "{shown:#?}");
        assert_eq!(
            shown[0],
            "test.toml:1:8: mode must be \"enforce\" or \"monitor\", not \"block\""
        );
        assert_eq!(
            shown[2],
            "test.toml:2:17: duplicate port 25: entry 3 repeats entry 2 at 2:13"
        );
        assert_eq!(
            shown[6],
            "test.toml:11:12: source 2001:db8::/32 of connector \"ok\" is already in connector \
             \"Bad\" at 7:31; a prefix can belong to only one connector"
        );
    }

    #[test]
    fn invalid_utf8_names_the_first_bad_byte() {
        let bytes = b"mode = \"monitor\"\nports = [25] # \xc3\xa9\xff\n";
        match decode(bytes, "bad.toml") {
            Err(PolicyError::Invalid { origin, problems }) => {
                assert_eq!(origin, "bad.toml");
                assert_eq!(
                    problems,
                    vec![problem(
                        2,
                        17,
                        "byte 0xff is not valid UTF-8; a policy must be UTF-8 text"
                    )]
                );
            }
            other => panic!("expected PolicyError::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_truncated_at_the_end() {
        match decode(b"mode = \"monitor\" # \xe2\x82", "bad.toml") {
            Err(PolicyError::Invalid { problems, .. }) => {
                assert_eq!(
                    problems,
                    vec![problem(
                        1,
                        20,
                        "byte 0xe2 is not valid UTF-8; a policy must be UTF-8 text"
                    )]
                );
            }
            other => panic!("expected PolicyError::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn load_reads_a_file() {
        let file = TempFile::new("example.toml", EXAMPLE.as_bytes());
        let loaded = Policy::load(&file.0, LoadOptions::default())
            .unwrap_or_else(|error| panic!("loading the example: {error}"));
        assert_eq!(loaded, parsed(EXAMPLE));
    }

    #[test]
    fn load_names_the_file_in_problems() {
        let file = TempFile::new("invalid.toml", b"mode = \"monitor\"\nports = [0]\n");
        let error =
            Policy::load(&file.0, LoadOptions::default()).expect_err("port 0 should be refused");
        assert_eq!(
            error.to_string(),
            format!(
                "{}:2:10: port 0 is out of range; ports are 1 to 65535",
                file.0.display()
            )
        );
    }

    #[test]
    fn load_checks_utf8() {
        let file = TempFile::new(
            "latin1.toml",
            b"# caf\xe9\nmode = \"monitor\"\nports = [25]\n",
        );
        let error = Policy::load(&file.0, LoadOptions::default())
            .expect_err("Latin-1 text should be refused");
        assert_eq!(
            error.to_string(),
            format!(
                "{}:1:6: byte 0xe9 is not valid UTF-8; a policy must be UTF-8 text",
                file.0.display()
            )
        );
    }

    #[test]
    fn load_of_a_directory_names_the_path() {
        let directory = std::env::temp_dir();
        let error = Policy::load(&directory, LoadOptions::default())
            .expect_err("a directory is not a policy");
        assert!(
            matches!(&error, PolicyError::NotAFile { path, kind: FileKind::Directory }
                if *path == directory),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "reading policy {}: it is a directory, not a regular file",
                directory.display()
            )
        );
    }

    #[test]
    fn load_of_a_fifo_without_a_writer_returns_at_once() {
        let path = std::env::temp_dir().join(format!(
            "gatekeeper-policy-{}-fifo.toml",
            std::process::id()
        ));
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .expect("a temporary path has no NUL");
        // SAFETY: c_path is a NUL-terminated path that outlives the call.
        let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(made, 0, "mkfifo {}", path.display());
        let fifo = TempFile(path);

        let error =
            Policy::load(&fifo.0, LoadOptions::default()).expect_err("a FIFO is not a policy");
        assert!(
            matches!(
                &error,
                PolicyError::NotAFile {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "reading policy {}: it is a FIFO, not a regular file",
                fifo.0.display()
            )
        );
    }

    #[test]
    fn load_of_a_device_is_refused_before_reading() {
        let zero = Path::new("/dev/zero");
        let error =
            Policy::load(zero, LoadOptions::default()).expect_err("/dev/zero is not a policy");
        assert_eq!(
            error.to_string(),
            "reading policy /dev/zero: it is a character device, not a regular file"
        );
    }

    #[test]
    fn load_of_a_file_past_the_limit_is_refused_before_reading() {
        let file = TempFile::new("huge.toml", b"");
        // Sparse: no disk space, and nothing for the loader to read if it
        // checked only while reading.
        std::fs::File::options()
            .write(true)
            .open(&file.0)
            .and_then(|handle| handle.set_len(MAX_FILE_BYTES + 1))
            .unwrap_or_else(|error| panic!("growing {}: {error}", file.0.display()));
        let error = Policy::load(&file.0, LoadOptions::default())
            .expect_err("a file past the limit is refused");
        assert!(matches!(&error, PolicyError::TooLarge { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "reading policy {}: it is larger than 268435456 bytes (256 MiB), the most a \
                 policy file may hold",
                file.0.display()
            )
        );
    }

    #[test]
    fn load_of_a_file_whose_read_fails_names_the_path_and_the_cause() {
        // A regular file by its type, but reading from offset 0 of this
        // process's memory fails: address 0 is never mapped.
        let mem = Path::new("/proc/self/mem");
        let error = Policy::load(mem, LoadOptions::default()).expect_err("reading it fails");
        let PolicyError::Read { path, source } = &error else {
            panic!("expected PolicyError::Read, got {error:?}");
        };
        assert_eq!(path, mem);
        assert_eq!(source.raw_os_error(), Some(libc::EIO));
        assert!(
            error
                .to_string()
                .starts_with("reading policy /proc/self/mem: Input/output error"),
            "{error}"
        );
    }

    #[test]
    fn from_bytes_checks_utf8_then_the_rules() {
        let error = Policy::from_bytes(b"mode = \"monitor\"\xff", ORIGIN, LoadOptions::default())
            .expect_err("not UTF-8");
        assert_eq!(
            error.to_string(),
            "test.toml:1:17: byte 0xff is not valid UTF-8; a policy must be UTF-8 text"
        );
        let policy = Policy::from_bytes(EXAMPLE.as_bytes(), ORIGIN, LoadOptions::default())
            .unwrap_or_else(|error| panic!("the example: {error}"));
        assert_eq!(policy, parsed(EXAMPLE));
    }

    #[test]
    fn load_of_a_missing_file_names_the_path() {
        let missing = std::env::temp_dir().join("gatekeeper-policy-does-not-exist.toml");
        let error =
            Policy::load(&missing, LoadOptions::default()).expect_err("a missing file is an error");
        assert!(
            matches!(&error, PolicyError::Read { path, source }
                if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
            "{error:?}"
        );
    }
}
