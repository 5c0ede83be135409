//! gatekeeper on live interfaces: the pin directory, attaching the program,
//! and reading the live state back from the pins in another process.
//!
//! Everything a running gatekeeper holds is pinned under one directory on a
//! bpffs (by default [`DEFAULT_PIN_DIR`]): each map under its own name, and
//! each XDP link as `link_MODE_INTERFACE` (bpffs refuses dots in names, so a
//! dot in the interface name, as in `eth0.100`, is written as a colon, which
//! interface names cannot contain). `gatekeeper status`, `check` and
//! `detach` work from these pins alone, with no connection to the daemon.

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, MapError, PerCpuArray, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::{
        ProgramError, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use gatekeeper_common::{
    ACTIVE_MAP, ALLOW_V4_MAP, ALLOW_V6_MAP, CLOCK_MAP, CONFIG_MAP, CONNECTORS_MAP, COUNTERS_MAP,
    ClockReference, Config, ConnectorCounters, ConnectorName, Counters, FAMILY_V4, FAMILY_V6,
    FLAG_TRIE_LOOKUP, INVENTORY_MAP, InventorySet, Ipv4Key, Ipv6Key, MAP_NAMES, MAX_CONNECTORS,
    MODE_ENFORCE, MODE_MONITOR, NAMES_MAP, PORT_WORDS, PORTS_MAP, SLOT_PREFIX_BITS, SLOTS,
    SourceRecord, TABLE_MAP, TableChunk, counter,
};

use crate::{
    clock::WallClock,
    datapath::{CounterTotals, Datapath, connector_totals, name_index},
    table,
};

/// Where `gatekeeper run` pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/gatekeeper";

/// Prefix of the pin name of an XDP link: `link_MODE_INTERFACE`.
const LINK_PREFIX: &str = "link_";

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpChoice {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    /// Native mode only.
    Native,
    /// Generic mode only: works on every interface, after the kernel has
    /// allocated a socket buffer.
    Skb,
}

impl XdpChoice {
    /// Whether a link in `mode` (`native` or `skb`) is what this choice asks
    /// for.
    pub fn allows(self, mode: &str) -> bool {
        match self {
            Self::Auto => true,
            Self::Native => mode == "native",
            Self::Skb => mode == "skb",
        }
    }
}

/// Errors of the live commands.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No gatekeeper has pinned anything in the directory.
    #[error(
        "no gatekeeper is loaded (nothing pinned in {0}); start one with \
         `gatekeeper run --iface IFACE --policy FILE`"
    )]
    NotLoaded(PathBuf),
    /// Another `gatekeeper run` holds the pin directory.
    #[error(
        "another gatekeeper run is using {0}; stop it first (SIGTERM), or give this one \
         another --pin-dir"
    )]
    Busy(PathBuf),
    /// An earlier run's link could not be switched to the new program.
    #[error(
        "switching the XDP link of {iface} (pinned at {pin}) to the new program; the \
         earlier program stays attached there"
    )]
    Adopt {
        /// The interface.
        iface: String,
        /// The link's pin.
        pin: PathBuf,
        /// What aya said.
        #[source]
        source: Box<ProgramError>,
    },
    /// A file system operation on the pin directory failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },
    /// Mounting bpffs failed.
    #[error("mounting bpffs at {path}")]
    Mount {
        /// Where.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },
    /// Attaching the program failed.
    #[error("attaching the XDP program to {iface} in {mode} mode")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode tried.
        mode: &'static str,
        /// What the kernel said.
        #[source]
        source: ProgramError,
    },
    /// Pinning a link failed.
    #[error("pinning the XDP link of {iface} at {path}")]
    PinLink {
        /// The interface.
        iface: String,
        /// Where.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: aya::pin::PinError,
    },
    /// The live policy kept changing while it was read.
    #[error("the live policy in {path} changed under every one of {tries} reads; try again")]
    Unsettled {
        /// The pin directory.
        path: PathBuf,
        /// Reads tried.
        tries: u32,
    },
    /// The clock reference the datapath's timestamps are read against was
    /// never written: the pins are from a gatekeeper that did not finish
    /// loading.
    #[error(
        "the clock reference in {path} was never written; restart the gatekeeper \
         with `gatekeeper run`"
    )]
    NoClock {
        /// The pinned clock map.
        path: PathBuf,
    },
    /// A pinned map could not be opened or read.
    #[error("reading pinned map {path}")]
    Map {
        /// The pin.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: MapError,
    },
    /// A link could not be opened from its pin, or is not a bpf_link (the
    /// kernel attached the program the old netlink way).
    #[error("opening link {path}")]
    Link {
        /// The pin.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: aya::programs::links::LinkError,
    },
}

/// One interface the program is attached to, through a link pinned in the
/// pin directory.
#[derive(Debug)]
pub struct Attachment {
    /// The interface's name.
    pub iface: String,
    /// `native` or `skb`.
    pub mode: &'static str,
    /// Why native mode was not used, when `auto` fell back to skb.
    pub fallback_reason: Option<String>,
    /// Whether the link was an earlier run's, switched to this run's
    /// program, rather than attached by this run.
    pub adopted: bool,
    /// This process's hold on the link, closed when the attachment goes;
    /// the link then lives on only through its pin.
    _link: FdLink,
    /// The link's pin, until the attachment is detached or kept.
    pin: Option<PathBuf>,
}

impl Attachment {
    /// Detaches: removes the pin and drops the link, which detaches the
    /// program once no other process holds the link.
    pub fn detach(mut self) {
        if let Some(pin) = self.pin.take() {
            let _ = fs::remove_file(pin);
        }
    }

    /// Leaves the program attached: closes this process's hold on the link
    /// and keeps the pin, which keeps the link, and so the program and its
    /// maps, in the kernel.
    pub fn keep(mut self) {
        self.pin = None;
    }
}

impl Drop for Attachment {
    /// An attachment neither detached nor kept (a start that failed half
    /// way) is undone when this run made it and kept when it was an earlier
    /// run's: that one was enforcing before this run began.
    fn drop(&mut self) {
        if let Some(pin) = &self.pin
            && !self.adopted
        {
            let _ = fs::remove_file(pin);
        }
    }
}

/// An exclusive hold on a pin directory for the life of one `gatekeeper
/// run`: a `flock` on the directory, which the kernel releases when the
/// process ends, however it ends.
#[derive(Debug)]
pub struct PinDirLock {
    _dir: fs::File,
}

impl PinDirLock {
    /// Takes the hold, or fails at once when another process has it.
    ///
    /// # Errors
    ///
    /// [`LiveError::Busy`] when another run holds the directory, or the
    /// directory cannot be opened.
    pub fn acquire(dir: &Path) -> Result<Self, LiveError> {
        let file = fs::File::open(dir).map_err(|source| LiveError::Io {
            what: "opening the pin directory",
            path: dir.to_owned(),
            source,
        })?;
        // SAFETY: flock on a descriptor this function owns.
        let ret = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if ret != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LiveError::Busy(dir.to_owned()));
            }
            return Err(LiveError::Io {
                what: "locking the pin directory",
                path: dir.to_owned(),
                source: error,
            });
        }
        Ok(Self { _dir: file })
    }
}

/// Makes sure `dir` exists on a bpffs: mounts bpffs at `/sys/fs/bpf` (or,
/// for another directory, at the directory itself) when none is mounted
/// there, then creates the directory.
///
/// # Errors
///
/// The mount or the directory creation failed.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), LiveError> {
    if !on_bpffs(dir) {
        let mount_point = if dir.starts_with("/sys/fs/bpf") {
            PathBuf::from("/sys/fs/bpf")
        } else {
            dir.to_owned()
        };
        fs::create_dir_all(&mount_point).map_err(|source| LiveError::Io {
            what: "creating",
            path: mount_point.clone(),
            source,
        })?;
        mount_bpffs(&mount_point)?;
        tracing::info!(path = %mount_point.display(), "mounted bpffs");
    }
    fs::create_dir_all(dir).map_err(|source| LiveError::Io {
        what: "creating the pin directory",
        path: dir.to_owned(),
        source,
    })
}

/// Whether `path` (or its nearest existing ancestor) lies on a bpffs.
fn on_bpffs(path: &Path) -> bool {
    let mut probe = Some(path);
    while let Some(candidate) = probe {
        if candidate.exists() {
            let Ok(c_path) = std::ffi::CString::new(candidate.as_os_str().as_encoded_bytes())
            else {
                return false;
            };
            // SAFETY: statfs writes into the zeroed struct we own.
            let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: a valid NUL-terminated path and a valid out pointer.
            let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) };
            return ret == 0 && stats.f_type == libc::BPF_FS_MAGIC;
        }
        probe = candidate.parent();
    }
    false
}

fn mount_bpffs(path: &Path) -> Result<(), LiveError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        LiveError::Mount {
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        }
    })?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(LiveError::Mount {
            path: path.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The interfaces with a pinned gatekeeper link in `dir`, with their mode.
pub fn pinned_links(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let rest = name.strip_prefix(LINK_PREFIX)?;
            let (mode, iface) = rest.split_once('_')?;
            Some((iface.replace(':', "."), mode.to_owned(), entry.path()))
        })
        .collect();
    links.sort();
    links
}

/// Prefix of the directory in the pin directory where a starting run pins
/// its new maps until its program takes over (bpffs names cannot hold a
/// dot, so it cannot be hidden).
const STAGING_PREFIX: &str = "staging-";

/// Whether maps are pinned in `dir`.
pub fn has_map_pins(dir: &Path) -> bool {
    MAP_NAMES.iter().any(|name| dir.join(name).exists())
}

/// A fresh directory inside `dir` for this process to pin its new maps in,
/// after removing any an interrupted start left behind.
///
/// # Errors
///
/// The directory cannot be created.
pub fn staging_dir(dir: &Path) -> Result<PathBuf, LiveError> {
    remove_staging(dir);
    let staging = dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    fs::create_dir(&staging).map_err(|source| LiveError::Io {
        what: "creating",
        path: staging.clone(),
        source,
    })?;
    Ok(staging)
}

/// Removes every staging directory in `dir` and the pins in it. The maps of
/// a start that got as far as attaching are held by its program and stay.
pub fn remove_staging(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(STAGING_PREFIX))
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves the maps pinned in `staging` over those in `dir`, each in one
/// rename: a reader of `dir` opens the old map or the new one, never none.
/// The old maps live on for as long as a program still uses them.
///
/// # Errors
///
/// A rename failed; the maps moved before it stay moved.
pub fn promote_pins(staging: &Path, dir: &Path) -> Result<(), LiveError> {
    for name in MAP_NAMES {
        let from = staging.join(name);
        fs::rename(&from, dir.join(name)).map_err(|source| LiveError::Io {
            what: "moving the new map pin into place:",
            path: from.clone(),
            source,
        })?;
    }
    let _ = fs::remove_dir(staging);
    Ok(())
}

/// Switches the XDP link an earlier run pinned at `pin` for `iface` to the
/// datapath's program, atomically (`BPF_LINK_UPDATE`): every frame is
/// judged by the earlier program or by this one, and the interface is never
/// without one. The link keeps its mode.
///
/// # Errors
///
/// The pin is not an XDP link, or the kernel refused the update; the
/// earlier program then stays attached.
pub fn adopt(
    datapath: &mut Datapath,
    iface: &str,
    mode: &str,
    pin: &Path,
) -> Result<Attachment, LiveError> {
    let error = |source| LiveError::Adopt {
        iface: iface.to_owned(),
        pin: pin.to_owned(),
        source: Box::new(source),
    };
    let link = PinnedLink::from_pin(pin).map_err(|source| LiveError::Link {
        path: pin.to_owned(),
        source,
    })?;
    let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(link)).map_err(|source| {
        LiveError::Link {
            path: pin.to_owned(),
            source,
        }
    })?;
    let program = datapath.program();
    let id = program.attach_to_link(link).map_err(error)?;
    let link = program.take_link(id).map_err(error)?;
    let link = FdLink::try_from(link).map_err(|source| LiveError::Link {
        path: pin.to_owned(),
        source,
    })?;
    Ok(Attachment {
        iface: iface.to_owned(),
        mode: if mode == "skb" { "skb" } else { "native" },
        fallback_reason: None,
        adopted: true,
        _link: link,
        pin: Some(pin.to_owned()),
    })
}

/// Attaches the datapath's program to `iface` and pins the link in `dir`.
///
/// # Errors
///
/// The interface does not exist, already has an XDP program, or the chosen
/// mode is not available; or the pin fails.
pub fn attach(
    datapath: &mut Datapath,
    iface: &str,
    choice: XdpChoice,
    dir: &Path,
) -> Result<Attachment, LiveError> {
    let program = datapath.program();
    let attempt = |program: &mut aya::programs::Xdp, mode: XdpMode, name: &'static str| {
        program
            .attach(iface, mode)
            .map_err(|source| LiveError::Attach {
                iface: iface.to_owned(),
                mode: name,
                source,
            })
    };
    let (link_id, mode, fallback_reason) = match choice {
        XdpChoice::Native => (attempt(program, XdpMode::Driver, "native")?, "native", None),
        XdpChoice::Skb => (attempt(program, XdpMode::Skb, "skb")?, "skb", None),
        XdpChoice::Auto => match attempt(program, XdpMode::Driver, "native") {
            Ok(id) => (id, "native", None),
            Err(native) => {
                let reason = crate::error_chain(&native);
                (attempt(program, XdpMode::Skb, "skb")?, "skb", Some(reason))
            }
        },
    };

    let pin = dir.join(format!("{LINK_PREFIX}{mode}_{}", iface.replace('.', ":")));
    let link = program
        .take_link(link_id)
        .map_err(|source| LiveError::Attach {
            iface: iface.to_owned(),
            mode,
            source,
        })?;
    let fd_link = FdLink::try_from(link).map_err(|source| LiveError::Link {
        path: pin.clone(),
        source,
    })?;
    let link = fd_link.pin(&pin).map_err(|source| LiveError::PinLink {
        iface: iface.to_owned(),
        path: pin.clone(),
        source,
    })?;
    Ok(Attachment {
        iface: iface.to_owned(),
        mode,
        fallback_reason,
        adopted: false,
        _link: FdLink::from(link),
        pin: Some(pin),
    })
}

/// Removes the map pins a run left in `dir`, any staging directory, and
/// the directory when empty.
pub fn remove_map_pins(dir: &Path) {
    for name in MAP_NAMES {
        let _ = fs::remove_file(dir.join(name));
    }
    remove_staging(dir);
    let _ = fs::remove_dir(dir);
}

/// Removes gatekeeper's pins from `dir`: the links of `iface` (every link
/// when `None`) and, once no link is left, the maps. Returns the interfaces
/// detached.
///
/// A link whose pin is removed is detached as soon as no process holds it;
/// a still-running `gatekeeper run` holds its own until it exits.
///
/// # Errors
///
/// Nothing is pinned in `dir`, or a pin cannot be removed.
pub fn detach(dir: &Path, iface: Option<&str>) -> Result<Vec<String>, LiveError> {
    let links = pinned_links(dir);
    let has_maps = has_map_pins(dir);
    if links.is_empty() && !has_maps {
        return Err(LiveError::NotLoaded(dir.to_owned()));
    }
    let mut detached = Vec::new();
    for (name, _, pin) in &links {
        if iface.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let link = PinnedLink::from_pin(pin).map_err(|source| LiveError::Link {
            path: pin.clone(),
            source,
        })?;
        link.unpin().map_err(|source| LiveError::Io {
            what: "removing the link pin",
            path: pin.clone(),
            source,
        })?;
        detached.push(name.clone());
    }
    if pinned_links(dir).is_empty() {
        remove_map_pins(dir);
    }
    Ok(detached)
}

/// The live state, read from the pins.
pub struct LiveView {
    dir: PathBuf,
    active: Array<MapData, u32>,
    config: Array<MapData, Config>,
    ports: Array<MapData, u64>,
    names: Array<MapData, ConnectorName>,
    counters: PerCpuArray<MapData, Counters>,
    connectors: PerCpuArray<MapData, ConnectorCounters>,
    table: Array<MapData, TableChunk>,
    allow_v4: LpmTrie<MapData, Ipv4Key, u32>,
    allow_v6: LpmTrie<MapData, Ipv6Key, u32>,
    inventory: PerCpuArray<MapData, InventorySet>,
    clock: Array<MapData, ClockReference>,
}

/// One source of the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// The source address.
    pub source: IpAddr,
    /// Gated SYNs seen from it.
    pub attempts: u64,
    /// First and last of them, as wall-clock time.
    pub first_seen: std::time::SystemTime,
    /// See `first_seen`.
    pub last_seen: std::time::SystemTime,
    /// Destination port of the last one.
    pub last_port: u16,
    /// The live policy's connector that admits it, if any.
    pub connector: Option<String>,
}

/// The live policy as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePolicy {
    /// `enforce` or `monitor`.
    pub mode: &'static str,
    /// Its generation.
    pub generation: u64,
    /// Load time, nanoseconds since the Unix epoch.
    pub loaded_at_ns: u64,
    /// Gated ports.
    pub ports: Vec<u16>,
    /// Connector ids and names, by id.
    pub connectors: Vec<(u32, String)>,
    /// IPv4 source prefixes.
    pub sources_v4: u32,
    /// IPv6 source prefixes.
    pub sources_v6: u32,
    /// Destination prefixes; 0 gates every local address.
    pub destinations: u32,
}

impl LiveView {
    /// Opens the pinned maps in `dir`.
    ///
    /// # Errors
    ///
    /// [`LiveError::NotLoaded`] when nothing is pinned there.
    pub fn open(dir: &Path) -> Result<Self, LiveError> {
        if !dir.join(ACTIVE_MAP).exists() {
            return Err(LiveError::NotLoaded(dir.to_owned()));
        }
        Ok(Self {
            dir: dir.to_owned(),
            active: pinned(dir, ACTIVE_MAP)?,
            config: pinned(dir, CONFIG_MAP)?,
            ports: pinned(dir, PORTS_MAP)?,
            names: pinned(dir, NAMES_MAP)?,
            counters: pinned(dir, COUNTERS_MAP)?,
            connectors: pinned(dir, CONNECTORS_MAP)?,
            table: pinned(dir, TABLE_MAP)?,
            allow_v4: pinned(dir, ALLOW_V4_MAP)?,
            allow_v6: pinned(dir, ALLOW_V6_MAP)?,
            inventory: pinned(dir, INVENTORY_MAP)?,
            clock: pinned(dir, CLOCK_MAP)?,
        })
    }

    fn read_error(&self, name: &str) -> impl Fn(MapError) -> LiveError + '_ {
        let path = self.dir.join(name);
        move |source| LiveError::Map {
            path: path.clone(),
            source,
        }
    }

    fn slot(&self) -> Result<u32, LiveError> {
        let slot = self
            .active
            .get(&0, 0)
            .map_err(self.read_error(ACTIVE_MAP))?;
        Ok(slot % SLOTS)
    }

    /// The interfaces and modes the program is attached with.
    pub fn interfaces(&self) -> Vec<(String, String)> {
        pinned_links(&self.dir)
            .into_iter()
            .map(|(iface, mode, _)| (iface, mode))
            .collect()
    }

    /// The live policy, or `None` before one is installed.
    ///
    /// # Errors
    ///
    /// A map read failed.
    pub fn policy(&self) -> Result<Option<LivePolicy>, LiveError> {
        self.settled(|slot, config| self.policy_in(slot, config))
    }

    /// Runs `read` on the live slot and its config, again when a reload
    /// moved the live policy meanwhile. A reload writes a slot's config last
    /// and clears it first, and flips the active slot between, so the same
    /// slot with the same generation before and after `read` means that
    /// everything `read` saw belonged to that one policy.
    fn settled<T>(
        &self,
        read: impl Fn(u32, &Config) -> Result<T, LiveError>,
    ) -> Result<T, LiveError> {
        const TRIES: u32 = 100;
        for attempt in 0..TRIES {
            let slot = self.slot()?;
            let config = self.slot_config(slot)?;
            let value = read(slot, &config)?;
            if self.slot()? == slot && self.slot_config(slot)?.generation == config.generation {
                return Ok(value);
            }
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Err(LiveError::Unsettled {
            path: self.dir.clone(),
            tries: TRIES,
        })
    }

    fn policy_in(&self, slot: u32, config: &Config) -> Result<Option<LivePolicy>, LiveError> {
        let mode = match config.mode {
            MODE_ENFORCE => "enforce",
            MODE_MONITOR => "monitor",
            _ => return Ok(None),
        };
        let mut ports = Vec::new();
        for word in 0..PORT_WORDS {
            let bits = self
                .ports
                .get(&(slot * PORT_WORDS + word), 0)
                .map_err(self.read_error(PORTS_MAP))?;
            for bit in 0..64 {
                if bits & (1 << bit) != 0 {
                    ports.push(u16::try_from(word * 64 + bit).unwrap_or(u16::MAX));
                }
            }
        }
        let mut connectors = Vec::new();
        for id in 0..config.connector_ids.min(MAX_CONNECTORS as u32) {
            let name = self
                .names
                .get(&name_index(slot, id), 0)
                .map_err(self.read_error(NAMES_MAP))?;
            let len = name
                .bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name.bytes.len());
            if len > 0 {
                let name = String::from_utf8_lossy(&name.bytes[..len]).into_owned();
                connectors.push((id, name));
            }
        }
        Ok(Some(LivePolicy {
            mode,
            generation: config.generation,
            loaded_at_ns: config.loaded_at_ns,
            ports,
            connectors,
            sources_v4: config.sources_v4,
            sources_v6: config.sources_v6,
            destinations: config.destinations,
        }))
    }

    /// The frame counters, summed over CPUs.
    ///
    /// # Errors
    ///
    /// A map read failed.
    pub fn counters(&self) -> Result<CounterTotals, LiveError> {
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(self.read_error(COUNTERS_MAP))?;
        Ok(CounterTotals::sum(per_cpu.iter()))
    }

    /// Allowed SYNs per connector id, summed over CPUs.
    ///
    /// # Errors
    ///
    /// A map read failed.
    pub fn connector_counts(&self) -> Result<Vec<u64>, LiveError> {
        let per_cpu = self
            .connectors
            .get(&0, 0)
            .map_err(self.read_error(CONNECTORS_MAP))?;
        Ok(connector_totals(per_cpu.iter()))
    }

    /// The connector of the live policy that admits `addr`, if any.
    ///
    /// # Errors
    ///
    /// A map read failed.
    pub fn connector_for(&self, addr: IpAddr) -> Result<Option<String>, LiveError> {
        self.settled(|slot, config| {
            let names = self
                .policy_in(slot, config)?
                .map(|policy| policy.connectors)
                .unwrap_or_default();
            self.connector_among(&names, slot, config, addr)
        })
    }

    fn slot_config(&self, slot: u32) -> Result<Config, LiveError> {
        self.config
            .get(&slot, 0)
            .map_err(self.read_error(CONFIG_MAP))
    }

    fn connector_among(
        &self,
        names: &[(u32, String)],
        slot: u32,
        config: &Config,
        addr: IpAddr,
    ) -> Result<Option<String>, LiveError> {
        if config.flags & FLAG_TRIE_LOOKUP == 0 {
            let mut failure = None;
            let id = table::walk(config.table_base, addr, |index| {
                match self.table.get(&index, 0) {
                    Ok(chunk) => Some(chunk),
                    Err(error) => {
                        failure = Some(error);
                        None
                    }
                }
            });
            if let Some(error) = failure {
                return Err(self.read_error(TABLE_MAP)(error));
            }
            return Ok(id.and_then(|id| {
                names
                    .iter()
                    .find_map(|(known, name)| (*known == id).then(|| name.clone()))
            }));
        }
        let id = match addr {
            IpAddr::V4(addr) => lookup(
                &self.allow_v4,
                &Key::new(
                    SLOT_PREFIX_BITS + 32,
                    Ipv4Key {
                        slot,
                        addr: addr.octets(),
                    },
                ),
            ),
            IpAddr::V6(addr) => lookup(
                &self.allow_v6,
                &Key::new(
                    SLOT_PREFIX_BITS + 128,
                    Ipv6Key {
                        slot,
                        addr: addr.octets(),
                    },
                ),
            ),
        }
        .map_err(self.read_error(if addr.is_ipv4() {
            ALLOW_V4_MAP
        } else {
            ALLOW_V6_MAP
        }))?;
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(names
            .iter()
            .find_map(|(known, name)| (*known == id).then(|| name.clone())))
    }

    /// Every source in the inventory with the live connector that admits
    /// it, most attempts first.
    ///
    /// # Errors
    ///
    /// A map read failed, or the clock reference was never written.
    pub fn inventory(&self) -> Result<Vec<SourceEntry>, LiveError> {
        let reference = self.clock.get(&0, 0).map_err(self.read_error(CLOCK_MAP))?;
        let clock = WallClock::now(reference).ok_or_else(|| LiveError::NoClock {
            path: self.dir.join(CLOCK_MAP),
        })?;
        let sources = merge_inventory(self.inventory_records()?);
        let mut entries = self.settled(|slot, config| {
            let names = self
                .policy_in(slot, config)?
                .map(|policy| policy.connectors)
                .unwrap_or_default();
            sources
                .iter()
                .map(|source| {
                    Ok(SourceEntry {
                        source: source.addr,
                        attempts: source.attempts,
                        first_seen: clock.wall(source.first_seen),
                        last_seen: clock.wall(source.last_seen),
                        last_port: source.last_port,
                        connector: self.connector_among(&names, slot, config, source.addr)?,
                    })
                })
                .collect::<Result<Vec<_>, LiveError>>()
        })?;
        entries.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.source.cmp(&b.source)));
        Ok(entries)
    }

    /// Sources in the inventory, counting one seen on several CPUs once.
    ///
    /// # Errors
    ///
    /// A map read failed.
    pub fn inventory_len(&self) -> Result<usize, LiveError> {
        Ok(merge_inventory(self.inventory_records()?).len())
    }

    /// Every record of every CPU's inventory, empty ones left out.
    fn inventory_records(&self) -> Result<Vec<SourceRecord>, LiveError> {
        let mut records = Vec::new();
        for set in 0..self.inventory.len() {
            let per_cpu = self
                .inventory
                .get(&set, 0)
                .map_err(self.read_error(INVENTORY_MAP))?;
            records.extend(
                per_cpu
                    .iter()
                    .flat_map(|set| set.ways)
                    .filter(|record| record.family != 0),
            );
        }
        Ok(records)
    }
}

/// One source as every CPU's inventory together knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergedSource {
    /// The address.
    pub addr: IpAddr,
    /// Gated SYNs counted on every CPU.
    pub attempts: u64,
    /// The earliest first sighting, in jiffies.
    pub first_seen: u64,
    /// The latest sighting, in jiffies.
    pub last_seen: u64,
    /// The destination port of the latest sighting.
    pub last_port: u16,
}

/// Merges the records the CPUs' inventories hold, one per source and CPU,
/// into one per source. A record with an unknown family is skipped.
pub fn merge_inventory(records: impl IntoIterator<Item = SourceRecord>) -> Vec<MergedSource> {
    let mut merged: std::collections::HashMap<IpAddr, MergedSource> =
        std::collections::HashMap::new();
    for record in records {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&record.addr[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&record.addr[1].to_ne_bytes());
        let addr = match u32::from(record.family) {
            FAMILY_V4 => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
            FAMILY_V6 => IpAddr::from(bytes),
            _ => continue,
        };
        merged
            .entry(addr)
            .and_modify(|source| {
                source.attempts += record.attempts;
                source.first_seen = source.first_seen.min(record.first_seen);
                if record.last_seen > source.last_seen {
                    source.last_seen = record.last_seen;
                    source.last_port = record.last_port;
                }
            })
            .or_insert(MergedSource {
                addr,
                attempts: record.attempts,
                first_seen: record.first_seen,
                last_seen: record.last_seen,
                last_port: record.last_port,
            });
    }
    merged.into_values().collect()
}

fn lookup<K: aya::Pod>(
    trie: &LpmTrie<MapData, K, u32>,
    key: &Key<K>,
) -> Result<Option<u32>, MapError> {
    match trie.get(key, 0) {
        Ok(id) => Ok(Some(id)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

fn pinned<T>(dir: &Path, name: &str) -> Result<T, LiveError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = dir.join(name);
    let error = |source| LiveError::Map {
        path: path.clone(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(error)?;
    let map = Map::from_map_data(data).map_err(error)?;
    T::try_from(map).map_err(error)
}

/// The counters as status reports them: one row per verdict, per family.
pub fn verdict_rows(totals: &CounterTotals) -> [(&'static str, u64, u64); 3] {
    [
        (
            "allow",
            totals.get(counter::ALLOW_V4),
            totals.get(counter::ALLOW_V6),
        ),
        (
            "deny",
            totals.get(counter::DENY_V4),
            totals.get(counter::DENY_V6),
        ),
        (
            "would-deny",
            totals.get(counter::WOULD_DENY_V4),
            totals.get(counter::WOULD_DENY_V6),
        ),
    ]
}

/// A `[[connector]]` table admitting the sources no connector admits, for an
/// operator to review and append to the policy. It names each source as a
/// host prefix, with its attempts as a comment; with no such source it is
/// only a comment. Either way it parses as part of a policy file.
pub fn suggest_connector(entries: &[SourceEntry], now: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let mut text = format!(
        "# Sources that sent gated SYNs and that no connector of the running policy\n\
         # admits, listed by `gatekeeper inventory --suggest` at {stamp}.\n\
         # Review every one before adding it: a source that knocked is not a source\n\
         # to trust. Rename the connector after the party the sources belong to.\n"
    );
    let unauthorized: Vec<&SourceEntry> = entries
        .iter()
        .filter(|entry| entry.connector.is_none())
        .collect();
    if unauthorized.is_empty() {
        text.push_str("# (none seen)\n");
        return text;
    }
    // A name unique to the second: connector names are [a-z0-9._-].
    let name: String = stamp
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    text.push_str(&format!(
        "[[connector]]\nname = \"seen-{name}\"\nsources = [\n"
    ));
    for entry in unauthorized {
        let prefix = ipnet::IpNet::from(entry.source);
        text.push_str(&format!(
            "    \"{prefix}\",  # {} attempts, last to port {} at {}\n",
            entry.attempts,
            entry.last_port,
            humantime::format_rfc3339_seconds(entry.last_seen)
        ));
    }
    text.push_str("]\n");
    text
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::policy::{LoadOptions, Policy};

    #[test]
    fn a_suggestion_appended_to_the_policy_admits_exactly_the_unauthorized() {
        let seen = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let entry = |source: &str, connector: Option<&str>| SourceEntry {
            source: source.parse().unwrap(),
            attempts: 3,
            first_seen: seen,
            last_seen: seen,
            last_port: 25,
            connector: connector.map(str::to_owned),
        };
        let entries = [
            entry("203.0.113.9", None),
            entry("2001:db8:bad::9", None),
            entry("198.51.100.7", Some("upstream-filter")),
        ];
        let suggestion = suggest_connector(&entries, seen);
        assert!(suggestion.contains("\"203.0.113.9/32\",  # 3 attempts, last to port 25"));
        assert!(suggestion.contains("\"2001:db8:bad::9/128\""));
        assert!(!suggestion.contains("198.51.100.7"));

        let policy = "mode = \"enforce\"\nports = [25]\n\n[[connector]]\n\
                      name = \"upstream-filter\"\nsources = [\"198.51.100.0/24\"]\n";
        let combined = format!("{policy}\n{suggestion}");
        let parsed = Policy::parse(&combined, "combined", LoadOptions::default())
            .unwrap_or_else(|error| panic!("{error}\n{combined}"));
        for (addr, connector) in [
            ("203.0.113.9", Some("seen-20261130005320")),
            ("2001:db8:bad::9", Some("seen-20261130005320")),
            ("203.0.113.10", None),
            ("198.51.100.7", Some("upstream-filter")),
        ] {
            let found = parsed
                .connector_for(addr.parse().unwrap())
                .map(|(connector, _)| connector.name.as_str());
            assert_eq!(found, connector, "{addr}");
        }
    }

    fn record(addr: IpAddr, attempts: u64, first: u64, last: u64, port: u16) -> SourceRecord {
        let (bytes, family) = match addr {
            IpAddr::V4(v4) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                (bytes, FAMILY_V4)
            }
            IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
        };
        SourceRecord {
            addr: [
                u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
                u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
            ],
            attempts,
            first_seen: first,
            last_seen: last,
            last_port: port,
            family: u16::try_from(family).unwrap(),
            _pad: 0,
        }
    }

    #[test]
    fn merging_sums_a_source_seen_on_several_cpus_and_keeps_its_latest_port() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let v6: IpAddr = "2001:db8:bad::9".parse().unwrap();
        let mut unknown = record(v4, 7, 1, 1, 25);
        unknown.family = 5;
        let mut merged = merge_inventory([
            record(v4, 3, 100, 180, 25),
            record(v6, 1, 150, 150, 587),
            record(v4, 4, 90, 200, 465),
            unknown,
            record(v4, 2, 120, 130, 587),
        ]);
        merged.sort_by_key(|source| source.addr);
        assert_eq!(
            merged,
            [
                MergedSource {
                    addr: v4,
                    attempts: 9,
                    first_seen: 90,
                    last_seen: 200,
                    last_port: 465,
                },
                MergedSource {
                    addr: v6,
                    attempts: 1,
                    first_seen: 150,
                    last_seen: 150,
                    last_port: 587,
                },
            ]
        );
    }

    #[test]
    fn with_nothing_unauthorized_the_suggestion_is_a_comment() {
        let suggestion = suggest_connector(&[], SystemTime::UNIX_EPOCH);
        assert!(suggestion.lines().all(|line| line.starts_with('#')));
        let policy = format!("mode = \"monitor\"\nports = [25]\n{suggestion}");
        assert!(Policy::parse(&policy, "p", LoadOptions::default()).is_ok());
    }
}
