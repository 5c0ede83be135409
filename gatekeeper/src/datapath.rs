//! The XDP program and its maps, as the controller sees them: load the
//! program, install a policy atomically, read the counters, and run frames
//! through the program with `BPF_PROG_RUN`.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{Array, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::{ProgramError, Xdp},
};
use gatekeeper_common::{
    ACTIVE_MAP, ALLOW_V4_MAP, ALLOW_V6_MAP, CLOCK_MAP, CLOCK_PROGRAM_NAME, CONFIG_MAP,
    CONNECTOR_NAME_LEN, CONNECTORS_MAP, COUNTERS_MAP, ClockReference, Config, ConnectorCounters,
    ConnectorName, Counters, DEST_V4_MAP, DEST_V6_MAP, DESTINATION_PRESENT, EVENTS_MAP,
    FLAG_HAS_DESTINATIONS, FLAG_TRIE_LOOKUP, INVENTORY_MAP, InventorySet, Ipv4Key, Ipv6Key,
    LOG_SETTINGS_MAP, LogSettings, MAP_NAMES, MAX_CONNECTORS, MODE_ENFORCE, MODE_MONITOR,
    NAMES_MAP, PORT_WORDS, PORTS_MAP, PROGRAM_NAME, SLOT_PREFIX_BITS, SLOTS, SourceRecord,
    TABLE_MAP, TableChunk, counter, inventory,
    table::{DEFAULT_POOL_CHUNKS, ROOT_CHUNKS},
};
use ipnet::IpNet;

use crate::{
    policy::{Mode, Policy},
    sys::{RcuBarrier, SharedArray},
    table::{Table, TableFull},
};

/// The XDP program, built for this machine's byte order by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatekeeper"));

/// Runs `frame` through `program` `repeat` times with `BPF_PROG_RUN` and
/// returns the kernel's average time per run and the program's verdict (an
/// `XDP_*` action).
///
/// # Errors
///
/// The kernel refused the run.
pub fn time_program(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<(std::time::Duration, u32), DatapathError> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|source| DatapathError::TestRun {
            len: frame.len(),
            source,
        })?;
    Ok((result.duration, result.return_value))
}

/// Loads one of the reference programs of the object
/// ([`gatekeeper_common::FLOOR_PROGRAM_NAME`] or
/// [`gatekeeper_common::PASS_PROGRAM_NAME`]) for benchmarks, unattached.
///
/// # Errors
///
/// As [`Datapath::load`].
pub fn load_reference_program(name: &'static str) -> Result<Ebpf, DatapathError> {
    let mut ebpf = Ebpf::load(OBJECT).map_err(DatapathError::Object)?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(DatapathError::LoadProgram)?;
    program.load().map_err(DatapathError::LoadProgram)?;
    Ok(ebpf)
}

/// How long to wait for program runs on the old slot to finish when the
/// RCU barrier is unavailable.
const FALLBACK_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// XDP return codes, from `enum xdp_action`.
pub const XDP_ABORTED: u32 = 0;
/// Drop the frame.
pub const XDP_DROP: u32 = 1;
/// Hand the frame to the network stack.
pub const XDP_PASS: u32 = 2;

/// Errors from loading the datapath or talking to its maps.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The embedded object could not be parsed or its maps created.
    #[error("loading the eBPF object")]
    Object(#[source] EbpfError),
    /// The object lacks the XDP program; the build is broken.
    #[error("the eBPF object has no XDP program named {0}")]
    MissingProgram(&'static str),
    /// The kernel refused the program.
    #[error("loading the XDP program into the kernel")]
    LoadProgram(#[source] ProgramError),
    /// The object lacks a map the controller needs; the build is broken.
    #[error("the eBPF object has no map named {0}")]
    MissingMap(&'static str),
    /// A map's key or value size differs from what the controller expects.
    #[error("map {name} does not have the expected layout")]
    MapLayout {
        /// The map.
        name: &'static str,
        /// What aya found.
        #[source]
        source: MapError,
    },
    /// The table map could not be mapped into memory.
    #[error("mapping the table map {TABLE_MAP} into memory")]
    MapTable(#[source] io::Error),
    /// The policy's table does not fit the pool the program was loaded with.
    #[error(transparent)]
    TableFull(#[from] TableFull),
    /// The maps for the RCU barrier could not be created.
    #[error("creating the map-in-map used to wait for running programs")]
    Barrier(#[source] io::Error),
    /// A map could not be pinned.
    #[error("pinning map {name} at {path}")]
    Pin {
        /// The map.
        name: &'static str,
        /// Where.
        path: PathBuf,
        /// What aya said.
        #[source]
        source: aya::pin::PinError,
    },
    /// A map update failed, for example because a map is full.
    #[error("writing {what} into map {map}")]
    Write {
        /// The map.
        map: &'static str,
        /// The entry, in the operator's terms.
        what: String,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// A map read failed.
    #[error("reading map {map}")]
    Read {
        /// The map.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// The possible CPUs could not be counted, or per-CPU values did not
    /// match their number.
    #[error("counting the CPUs for per-CPU map values")]
    Cpus(#[source] io::Error),
    /// The policy names more connectors than the datapath can count.
    #[error("the policy has {count} connectors; the datapath holds at most {MAX_CONNECTORS}")]
    TooManyConnectors {
        /// Connectors in the policy.
        count: usize,
    },
    /// `BPF_PROG_RUN` refused a frame.
    #[error("running the XDP program on a {len}-byte frame")]
    TestRun {
        /// The frame's length.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// The program's action and counters contradict each other, or name a
    /// connector the live policy does not have.
    #[error("the XDP program returned action {action} but counted the frame as {verdict}")]
    Inconsistent {
        /// The XDP action.
        action: u32,
        /// What the counters said.
        verdict: &'static str,
    },
}

/// How to load the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    /// Sources each CPU's inventory remembers, rounded up by
    /// [`inventory_sets`].
    pub inventory_size: u32,
    /// Keep the program's debug log statements (one per gated SYN).
    pub ebpf_debug_log: bool,
    /// Child chunks of the source table per policy slot, besides the roots
    /// (see [`crate::table`]); 1 KiB each, taken twice (two slots).
    pub table_chunks: u32,
    /// How the program looks sources up.
    pub lookup: Lookup,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            inventory_size: DEFAULT_INVENTORY_SIZE,
            ebpf_debug_log: false,
            table_chunks: DEFAULT_POOL_CHUNKS,
            lookup: Lookup::Table,
        }
    }
}

/// The structure gated SYNs are looked up in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lookup {
    /// The compiled table: a fixed, small number of array reads.
    #[default]
    Table,
    /// The kernel's LPM tries, whose cost grows with the allowlist: the
    /// reference the table is tested and benchmarked against.
    Trie,
}

/// Sources per CPU the inventory holds by default.
pub const DEFAULT_INVENTORY_SIZE: u32 = inventory::DEFAULT_SETS * inventory::WAYS as u32;

/// The number of inventory sets for `size` sources per CPU: enough sets of
/// [`inventory::WAYS`] to hold them, rounded up to a power of two so that a
/// hash picks a set with a mask.
pub fn inventory_sets(size: u32) -> u32 {
    size.div_ceil(inventory::WAYS as u32)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// Bytes the inventory takes on each CPU with `size` sources per CPU.
pub fn inventory_bytes_per_cpu(size: u32) -> u64 {
    u64::from(inventory_sets(size)) * std::mem::size_of::<gatekeeper_common::InventorySet>() as u64
}

/// A seed for the inventory's hash that nobody outside can guess.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer.
    let written = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if written != seed.len() as isize {
        // Not secret, but still different on every load.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        return now ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(seed)
}

/// Bytes the table map takes with `table_chunks` child chunks per slot.
pub fn table_bytes(table_chunks: u32) -> u64 {
    u64::from(SLOTS) * u64::from(ROOT_CHUNKS + table_chunks) * crate::table::CHUNK_BYTES as u64
}

/// What the program decided for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not gated: passed untouched.
    Pass,
    /// A gated SYN from the named connector: passed.
    Allow(String),
    /// A gated SYN from outside every connector, dropped (enforce mode).
    Deny,
    /// A gated SYN from outside every connector, passed (monitor mode).
    WouldDeny,
}

impl Verdict {
    /// The verdict's name: `pass`, `allow`, `deny` or `would-deny`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Allow(_) => "allow",
            Self::Deny => "deny",
            Self::WouldDeny => "would-deny",
        }
    }

    /// The connector that admitted the frame, for `allow`.
    pub fn connector(&self) -> Option<&str> {
        match self {
            Self::Allow(name) => Some(name),
            _ => None,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow(name) => write!(f, "allow {name}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One frame's trip through the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameOutcome {
    /// The XDP action the program returned.
    pub action: u32,
    /// The verdict, read from the counters the program bumped.
    pub verdict: Verdict,
    /// The frame was a first fragment judged as a SYN because its flags were
    /// cut off.
    pub tiny_fragment: bool,
    /// The frame was an IPv6 datagram judged as a SYN because its extension
    /// header chain was longer than the program follows.
    pub long_chain: bool,
}

/// The program's counters summed over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterTotals {
    /// Indexed by [`gatekeeper_common::counter`].
    pub values: [u64; counter::COUNT],
}

impl CounterTotals {
    /// Sums one CPU's counters after another.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a Counters>) -> Self {
        let mut totals = Self::default();
        for cpu in per_cpu {
            for (total, value) in totals.values.iter_mut().zip(cpu.values) {
                *total += value;
            }
        }
        totals
    }

    /// The counter at `index` (a [`gatekeeper_common::counter`] constant).
    pub fn get(&self, index: usize) -> u64 {
        self.values[index]
    }

    /// Frames seen.
    pub fn seen(&self) -> u64 {
        self.values[counter::SEEN]
    }

    /// Frames passed without being gated.
    pub fn passed(&self) -> u64 {
        self.values[counter::PASS]
    }

    /// Gated SYNs allowed, both families.
    pub fn allowed(&self) -> u64 {
        self.values[counter::ALLOW_V4] + self.values[counter::ALLOW_V6]
    }

    /// Gated SYNs denied, both families.
    pub fn denied(&self) -> u64 {
        self.values[counter::DENY_V4] + self.values[counter::DENY_V6]
    }

    /// Gated SYNs that would have been denied, both families.
    pub fn would_deny(&self) -> u64 {
        self.values[counter::WOULD_DENY_V4] + self.values[counter::WOULD_DENY_V6]
    }

    /// The counters that grew from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut values = [0; counter::COUNT];
        for (delta, (now, then)) in values
            .iter_mut()
            .zip(self.values.iter().zip(earlier.values))
        {
            *delta = now.wrapping_sub(then);
        }
        Self { values }
    }
}

struct Maps {
    table: SharedArray<TableChunk>,
    active: Array<MapData, u32>,
    config: Array<MapData, Config>,
    ports: Array<MapData, u64>,
    allow_v4: LpmTrie<MapData, Ipv4Key, u32>,
    allow_v6: LpmTrie<MapData, Ipv6Key, u32>,
    dest_v4: LpmTrie<MapData, Ipv4Key, u32>,
    dest_v6: LpmTrie<MapData, Ipv6Key, u32>,
    counters: PerCpuArray<MapData, Counters>,
    connectors: PerCpuArray<MapData, ConnectorCounters>,
    names: Array<MapData, ConnectorName>,
    log_settings: Array<MapData, LogSettings>,
    inventory: PerCpuArray<MapData, InventorySet>,
}

/// A policy as the maps hold it: which slot, and every key written there, so
/// the slot can be cleared again.
struct Installed {
    slot: u32,
    generation: u64,
    /// Connector names by id.
    connectors: BTreeMap<u32, String>,
    port_words: BTreeMap<u32, u64>,
    allow_v4: Vec<Key<Ipv4Key>>,
    allow_v6: Vec<Key<Ipv6Key>>,
    dest_v4: Vec<Key<Ipv4Key>>,
    dest_v6: Vec<Key<Ipv6Key>>,
}

/// The loaded XDP program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    maps: Maps,
    barrier: RcuBarrier,
    live: Option<Installed>,
    generation: u64,
    lookup: Lookup,
    /// Child chunks per slot.
    table_chunks: u32,
    /// The kernel's tick rate, which the program's clock counts in.
    hz: u64,
    /// The inventory's hash seed and set mask, as the program was loaded
    /// with.
    inventory_seed: u64,
    inventory_mask: u32,
    /// Allowed counts per connector when last read by [`Datapath::run_frame`].
    connector_baseline: Option<Vec<u64>>,
    ledger: ConnectorLedger,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("generation", &self.generation)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the XDP program into the kernel (it passes every frame until a
    /// policy is installed) without attaching it anywhere.
    ///
    /// # Errors
    ///
    /// Fails without `CAP_BPF`/`CAP_NET_ADMIN`, when the kernel's verifier
    /// rejects the program, or when the embedded object is inconsistent.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_inner(None, LoadSettings::default())
    }

    /// Like [`Datapath::load`], with `settings` instead of the defaults.
    ///
    /// # Errors
    ///
    /// As [`Datapath::load`].
    pub fn load_with(settings: LoadSettings) -> Result<Self, DatapathError> {
        Self::load_inner(None, settings)
    }

    /// Like [`Datapath::load`], and pins every map under `dir` (which must
    /// exist on a bpffs), so that `gatekeeper status` and friends can read
    /// them from another process.
    ///
    /// # Errors
    ///
    /// As [`Datapath::load`], or a map that cannot be pinned (a pin of that
    /// name exists already, say). Maps pinned before the failure are
    /// unpinned again.
    pub fn load_pinned(dir: &Path, settings: LoadSettings) -> Result<Self, DatapathError> {
        Self::load_inner(Some(dir), settings)
    }

    fn load_inner(pin_dir: Option<&Path>, settings: LoadSettings) -> Result<Self, DatapathError> {
        // aya-log's levels: 0 silences every log statement in the program,
        // and the verifier then drops them as dead code.
        let log_level: u8 = if settings.ebpf_debug_log {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let table_len = SLOTS * (ROOT_CHUNKS + settings.table_chunks);
        let sets = inventory_sets(settings.inventory_size);
        let set_mask = sets - 1;
        let seed = random_seed();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(INVENTORY_MAP, sets)
            .map_max_entries(TABLE_MAP, table_len)
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global(inventory::SET_MASK_GLOBAL, &set_mask, true)
            .override_global(inventory::SEED_GLOBAL, &seed, true)
            .load(OBJECT)
            .map_err(DatapathError::Object)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DatapathError::MissingProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(DatapathError::LoadProgram)?;
        program.load().map_err(DatapathError::LoadProgram)?;
        let clock: &mut Xdp = ebpf
            .program_mut(CLOCK_PROGRAM_NAME)
            .ok_or(DatapathError::MissingProgram(CLOCK_PROGRAM_NAME))?
            .try_into()
            .map_err(DatapathError::LoadProgram)?;
        clock.load().map_err(DatapathError::LoadProgram)?;
        let reference = crate::clock::reference(clock)?;
        if let Some(dir) = pin_dir {
            pin_maps(&ebpf, dir)?;
        }
        let mut clock_map: Array<MapData, ClockReference> = typed(&mut ebpf, CLOCK_MAP)?;
        clock_map
            .set(0, reference, 0)
            .map_err(|source| DatapathError::Write {
                map: CLOCK_MAP,
                what: "the clock reference".to_owned(),
                source,
            })?;

        let table = match ebpf.map(TABLE_MAP) {
            Some(Map::Array(data)) => SharedArray::map(data.fd().as_fd(), table_len as usize)
                .map_err(DatapathError::MapTable)?,
            _ => return Err(DatapathError::MissingMap(TABLE_MAP)),
        };
        let maps = Maps {
            table,
            active: typed(&mut ebpf, ACTIVE_MAP)?,
            config: typed(&mut ebpf, CONFIG_MAP)?,
            ports: typed(&mut ebpf, PORTS_MAP)?,
            allow_v4: typed(&mut ebpf, ALLOW_V4_MAP)?,
            allow_v6: typed(&mut ebpf, ALLOW_V6_MAP)?,
            dest_v4: typed(&mut ebpf, DEST_V4_MAP)?,
            dest_v6: typed(&mut ebpf, DEST_V6_MAP)?,
            counters: typed(&mut ebpf, COUNTERS_MAP)?,
            connectors: typed(&mut ebpf, CONNECTORS_MAP)?,
            names: typed(&mut ebpf, NAMES_MAP)?,
            log_settings: typed(&mut ebpf, LOG_SETTINGS_MAP)?,
            inventory: typed(&mut ebpf, INVENTORY_MAP)?,
        };
        let barrier = RcuBarrier::new().map_err(DatapathError::Barrier)?;
        Ok(Self {
            ebpf,
            maps,
            barrier,
            live: None,
            generation: 0,
            lookup: settings.lookup,
            table_chunks: settings.table_chunks,
            hz: reference.hz,
            inventory_seed: seed,
            inventory_mask: set_mask,
            connector_baseline: None,
            ledger: ConnectorLedger::default(),
        })
    }

    /// Copies the source inventory an earlier program left pinned at
    /// `pinned` into this one's, each CPU's records into the same CPU's
    /// inventory, placed by this program's hash. Where more sources meet in
    /// one set than it holds, the most recently seen stay. Meant for a new
    /// program before it is attached, which nothing else writes to yet.
    /// Returns the records copied.
    ///
    /// # Errors
    ///
    /// The pinned map cannot be read or has another layout (an earlier
    /// version's), or a write failed.
    pub fn carry_inventory(&mut self, pinned: &Path) -> Result<usize, DatapathError> {
        let read = |source| DatapathError::Read {
            map: INVENTORY_MAP,
            source,
        };
        let data = MapData::from_pin(pinned).map_err(read)?;
        let earlier: PerCpuArray<MapData, InventorySet> = Map::from_map_data(data)
            .and_then(PerCpuArray::try_from)
            .map_err(|source| DatapathError::MapLayout {
                name: INVENTORY_MAP,
                source,
            })?;
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DatapathError::Cpus(source))?;
        let mut records = Vec::new();
        for index in 0..earlier.len() {
            let per_cpu = earlier.get(&index, 0).map_err(read)?;
            for (cpu, set) in per_cpu.iter().enumerate() {
                records.extend(
                    set.ways
                        .iter()
                        .filter(|record| record.family != 0)
                        .map(|record| (cpu, *record)),
                );
            }
        }
        let placed = place_inventory(records, cpus, self.inventory_seed, self.inventory_mask);
        let mut copied = 0;
        for (set, row) in placed {
            copied += row
                .iter()
                .flat_map(|set| &set.ways)
                .filter(|record| record.family != 0)
                .count();
            let values = aya::maps::PerCpuValues::try_from(row).map_err(DatapathError::Cpus)?;
            self.maps
                .inventory
                .set(set, values, 0)
                .map_err(|source| DatapathError::Write {
                    map: INVENTORY_MAP,
                    what: format!("inventory set {set}"),
                    source,
                })?;
        }
        Ok(copied)
    }

    /// Sets the deny log's rate: each CPU sends at most `rate_per_sec` events
    /// a second, `burst` at once; the rest are counted as dropped.
    ///
    /// # Errors
    ///
    /// The map update failed.
    pub fn set_log_rate(&mut self, rate_per_sec: u64, burst: u64) -> Result<(), DatapathError> {
        let settings = LogSettings {
            milli_tokens_per_jiffy: crate::clock::milli_tokens_per_jiffy(rate_per_sec, self.hz),
            burst,
        };
        self.maps
            .log_settings
            .set(0, settings, 0)
            .map_err(|source| DatapathError::Write {
                map: LOG_SETTINGS_MAP,
                what: format!("a rate of {rate_per_sec} events/s with a burst of {burst}"),
                source,
            })
    }

    /// The reader of the program's own log statements (loaded with
    /// [`LoadSettings::ebpf_debug_log`]), forwarding them to `logger`;
    /// `None` after the first call.
    pub fn take_ebpf_logger<T: log::Log>(&mut self, logger: T) -> Option<aya_log::EbpfLogger<T>> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger).ok()
    }

    /// The ring buffer of deny events, to read them; `None` after the first
    /// call.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        let map = self.ebpf.take_map(EVENTS_MAP)?;
        RingBuf::try_from(map).ok()
    }

    /// The loaded program, for attaching it or running frames through it.
    pub fn program(&mut self) -> &mut Xdp {
        let program = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .expect("`load` checked that the program exists");
        program
            .try_into()
            .expect("`load` checked that the program is XDP")
    }

    /// The generation of the live policy; 0 before the first install.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The live policy's connectors: id and name, by id.
    pub fn connectors(&self) -> Vec<(u32, String)> {
        self.live.as_ref().map_or_else(Vec::new, |live| {
            live.connectors
                .iter()
                .map(|(&id, name)| (id, name.clone()))
                .collect()
        })
    }

    /// The id of the live connector named `name`.
    pub fn connector_id(&self, name: &str) -> Option<u32> {
        let live = self.live.as_ref()?;
        live.connectors
            .iter()
            .find_map(|(&id, connector)| (connector == name).then_some(id))
    }

    /// Allowed SYNs per live connector name, counted since the connector
    /// first appeared in a policy this datapath installed. A connector keeps
    /// its id (and so its count) across reloads for as long as it stays in
    /// the policy; one removed and added back continues from where it was.
    ///
    /// `counts` is [`Datapath::connector_counts`], or the same map read
    /// through its pin.
    pub fn allowed_by_connector(&self, counts: &[u64]) -> Vec<(String, u64)> {
        self.ledger.allowed(counts)
    }

    /// The bookkeeping behind [`Datapath::allowed_by_connector`], for
    /// another thread to compute the same from its own reading of the map.
    pub fn ledger(&self) -> ConnectorLedger {
        self.ledger.clone()
    }

    /// Makes `policy` the one every frame is judged by, as one atomic step,
    /// and returns its generation.
    ///
    /// The policy is written into the idle slot, the active index is flipped
    /// with one map update, and once every program run that could still see
    /// the old slot has finished, the old slot is cleared. If any write fails
    /// (a map full, say), what was written is removed again and the live
    /// policy keeps running untouched.
    ///
    /// # Errors
    ///
    /// A map update that the kernel refuses, or too many connectors.
    pub fn install(&mut self, policy: &Policy) -> Result<u64, DatapathError> {
        if policy.connectors.len() > MAX_CONNECTORS {
            return Err(DatapathError::TooManyConnectors {
                count: policy.connectors.len(),
            });
        }
        let live_slot = self.active_slot()?;
        let slot = (live_slot + 1) % SLOTS;
        let generation = self.generation + 1;
        let mut next = Installed::new(slot, generation);
        next.connectors = self.assign_ids(policy);

        if let Err(error) = self.write_slot(policy, &mut next) {
            self.clear_slot(&next);
            return Err(error);
        }
        // The baseline of the connectors new in this policy, read before the
        // flip: their ids are ones the live policy does not use, so nothing
        // counts for them until the new slot is live, and from then on every
        // count is theirs. (Read after the flip, SYNs admitted in between
        // would vanish into the baseline.)
        let before_flip = self.connector_counts().unwrap_or_default();
        if let Err(source) = self.maps.active.set(0, slot, 0) {
            self.clear_slot(&next);
            return Err(DatapathError::Write {
                map: ACTIVE_MAP,
                what: format!("active slot {slot}"),
                source,
            });
        }

        // From here on the new policy is live: nothing may fail half-way.
        if self.barrier.wait().is_err() {
            // Without the barrier, wait far longer than any program run
            // lasts (microseconds) before the old slot is cleared.
            std::thread::sleep(FALLBACK_GRACE);
        }
        // No program run can count for the old policy any more: settle what
        // its connectors counted. (Should the read fail, counts start from
        // zero, which can only over-count a reused id.)
        let counts = self.connector_counts().unwrap_or_default();
        self.ledger.rebase(&next.connectors, &before_flip, &counts);
        if let Some(old) = self.live.replace(next) {
            self.clear_slot(&old);
        }
        self.generation = generation;
        Ok(generation)
    }

    /// Connector ids for `policy`: a connector in the live policy keeps its
    /// id; a new one takes the lowest id the live policy does not use, so
    /// that no frame still judged by the live policy counts for it.
    fn assign_ids(&self, policy: &Policy) -> BTreeMap<u32, String> {
        let live: BTreeMap<&str, u32> = self.live.as_ref().map_or_else(BTreeMap::new, |live| {
            live.connectors
                .iter()
                .map(|(&id, name)| (name.as_str(), id))
                .collect()
        });
        let mut assigned = BTreeMap::new();
        for connector in &policy.connectors {
            if let Some(&id) = live.get(connector.name.as_str()) {
                assigned.insert(id, connector.name.clone());
            }
        }
        let mut free = (0..MAX_CONNECTORS as u32)
            .filter(|id| !live.values().any(|used| used == id))
            .chain(0..MAX_CONNECTORS as u32);
        for connector in &policy.connectors {
            if live.contains_key(connector.name.as_str()) {
                continue;
            }
            let id = free
                .by_ref()
                .find(|id| !assigned.contains_key(id))
                .expect("at most MAX_CONNECTORS connectors, checked by install");
            assigned.insert(id, connector.name.clone());
        }
        assigned
    }

    fn active_slot(&self) -> Result<u32, DatapathError> {
        let slot = self
            .maps
            .active
            .get(&0, 0)
            .map_err(|source| DatapathError::Read {
                map: ACTIVE_MAP,
                source,
            })?;
        Ok(slot % SLOTS)
    }

    fn write_slot(&mut self, policy: &Policy, next: &mut Installed) -> Result<(), DatapathError> {
        let slot = next.slot;
        for &port in &policy.ports {
            *next.port_words.entry(u32::from(port / 64)).or_default() |= 1 << (port % 64);
        }
        for (&word, &bits) in &next.port_words {
            self.maps
                .ports
                .set(slot * PORT_WORDS + word, bits, 0)
                .map_err(|source| DatapathError::Write {
                    map: PORTS_MAP,
                    what: format!("ports {}..={}", word * 64, word * 64 + 63),
                    source,
                })?;
        }

        let ids: BTreeMap<String, u32> = next
            .connectors
            .iter()
            .map(|(&id, name)| (name.clone(), id))
            .collect();
        for connector in &policy.connectors {
            let id = ids[connector.name.as_str()];
            self.maps
                .names
                .set(name_index(slot, id), connector_name(&connector.name), 0)
                .map_err(|source| DatapathError::Write {
                    map: NAMES_MAP,
                    what: format!("the name of connector {}", connector.name),
                    source,
                })?;
            if self.lookup == Lookup::Trie {
                self.write_trie_sources(connector, id, next)?;
            }
        }
        let (table_base, table_chunks) = if self.lookup == Lookup::Table {
            self.write_table(policy, &ids, slot)?
        } else {
            (0, 0)
        };

        for destination in &policy.destinations {
            match key_for(slot, destination) {
                SlotKey::V4(key) => {
                    next.dest_v4.push(key);
                    self.maps.dest_v4.insert(&key, DESTINATION_PRESENT, 0)
                }
                SlotKey::V6(key) => {
                    next.dest_v6.push(key);
                    self.maps.dest_v6.insert(&key, DESTINATION_PRESENT, 0)
                }
            }
            .map_err(|source| DatapathError::Write {
                map: if destination.addr().is_ipv4() {
                    DEST_V4_MAP
                } else {
                    DEST_V6_MAP
                },
                what: format!("destination {destination}"),
                source,
            })?;
        }

        let (sources_v4, sources_v6) = policy.source_counts();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let loaded_at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let config = Config {
            generation: next.generation,
            loaded_at_ns,
            connector_ids: next.connectors.keys().next_back().map_or(0, |&id| id + 1),
            sources_v4: count(sources_v4),
            sources_v6: count(sources_v6),
            destinations: count(policy.destinations.len()),
            mode: match policy.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Monitor => MODE_MONITOR,
            },
            flags: if policy.destinations.is_empty() {
                0
            } else {
                FLAG_HAS_DESTINATIONS
            } | if self.lookup == Lookup::Trie {
                FLAG_TRIE_LOOKUP
            } else {
                0
            },
            table_base,
            table_chunks,
        };
        self.maps
            .config
            .set(slot, config, 0)
            .map_err(|source| DatapathError::Write {
                map: CONFIG_MAP,
                what: format!("settings of slot {slot}"),
                source,
            })
    }

    /// Compiles the policy's sources and copies the table into the slot's
    /// region of the table map; returns where the region starts and how
    /// many child chunks it uses. Nothing reads the region until the slot's
    /// config says so, and it is rewritten whole every time.
    fn write_table(
        &mut self,
        policy: &Policy,
        ids: &BTreeMap<String, u32>,
        slot: u32,
    ) -> Result<(u32, u32), DatapathError> {
        let base = slot * (ROOT_CHUNKS + self.table_chunks);
        let sources = policy.connectors.iter().flat_map(|connector| {
            let id = ids[connector.name.as_str()];
            connector.sources.iter().map(move |net| (net, id))
        });
        let table = Table::compile(sources, base, self.table_chunks as usize)?;
        self.maps.table.write(base as usize, table.chunks());
        let used = u32::try_from(table.child_chunks()).expect("at most the pool, a u32");
        Ok((base, used))
    }

    /// Inserts one connector's sources into the LPM tries.
    fn write_trie_sources(
        &mut self,
        connector: &crate::policy::Connector,
        id: u32,
        next: &mut Installed,
    ) -> Result<(), DatapathError> {
        for source in &connector.sources {
            match key_for(next.slot, source) {
                SlotKey::V4(key) => {
                    next.allow_v4.push(key);
                    self.maps.allow_v4.insert(&key, id, 0)
                }
                SlotKey::V6(key) => {
                    next.allow_v6.push(key);
                    self.maps.allow_v6.insert(&key, id, 0)
                }
            }
            .map_err(|source_error| DatapathError::Write {
                map: if source.addr().is_ipv4() {
                    ALLOW_V4_MAP
                } else {
                    ALLOW_V6_MAP
                },
                what: format!("source {source} of connector {}", connector.name),
                source: source_error,
            })?;
        }
        Ok(())
    }

    /// Removes everything `installed` wrote. Runs only on a slot no program
    /// can be reading, so the order of removal does not matter. Failures are
    /// ignored: an entry that cannot be removed was never written.
    fn clear_slot(&mut self, installed: &Installed) {
        let slot = installed.slot;
        let _ = self.maps.config.set(slot, Config::default(), 0);
        for &word in installed.port_words.keys() {
            let _ = self.maps.ports.set(slot * PORT_WORDS + word, 0, 0);
        }
        for &id in installed.connectors.keys() {
            let _ = self
                .maps
                .names
                .set(name_index(slot, id), ConnectorName::default(), 0);
        }
        for key in &installed.allow_v4 {
            let _ = self.maps.allow_v4.remove(key);
        }
        for key in &installed.allow_v6 {
            let _ = self.maps.allow_v6.remove(key);
        }
        for key in &installed.dest_v4 {
            let _ = self.maps.dest_v4.remove(key);
        }
        for key in &installed.dest_v6 {
            let _ = self.maps.dest_v6.remove(key);
        }
    }

    /// The frame counters, summed over every CPU.
    ///
    /// # Errors
    ///
    /// The map read failed.
    pub fn counters(&self) -> Result<CounterTotals, DatapathError> {
        let per_cpu = self
            .maps
            .counters
            .get(&0, 0)
            .map_err(|source| DatapathError::Read {
                map: COUNTERS_MAP,
                source,
            })?;
        Ok(CounterTotals::sum(per_cpu.iter()))
    }

    /// Allowed SYNs per connector id, summed over every CPU.
    ///
    /// # Errors
    ///
    /// The map read failed.
    pub fn connector_counts(&self) -> Result<Vec<u64>, DatapathError> {
        let per_cpu = self
            .maps
            .connectors
            .get(&0, 0)
            .map_err(|source| DatapathError::Read {
                map: CONNECTORS_MAP,
                source,
            })?;
        Ok(connector_totals(per_cpu.iter()))
    }

    /// Runs one frame through the program with `BPF_PROG_RUN` and reads the
    /// verdict from the counters it bumped. Meant for a datapath that is not
    /// attached to an interface, whose counters only this call moves.
    ///
    /// # Errors
    ///
    /// The kernel refuses frames shorter than an Ethernet header or longer
    /// than fits a page with XDP's headroom; map reads can fail.
    pub fn run_frame(&mut self, frame: &[u8]) -> Result<FrameOutcome, DatapathError> {
        if self.connector_baseline.is_none() {
            self.connector_baseline = Some(self.connector_counts()?);
        }
        let before = self.counters()?;
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .map_err(|source| DatapathError::TestRun {
                len: frame.len(),
                source,
            })?;
        let after = self.counters()?;
        let delta = after.since(&before);
        let action = result.return_value;

        let verdict = if delta.allowed() > 0 {
            Verdict::Allow(self.connector_that_grew()?)
        } else if delta.denied() > 0 {
            Verdict::Deny
        } else if delta.would_deny() > 0 {
            Verdict::WouldDeny
        } else {
            Verdict::Pass
        };
        let expected = if verdict == Verdict::Deny {
            XDP_DROP
        } else {
            XDP_PASS
        };
        if action != expected {
            return Err(DatapathError::Inconsistent {
                action,
                verdict: verdict.name(),
            });
        }
        Ok(FrameOutcome {
            action,
            verdict,
            tiny_fragment: delta.get(counter::TINY_FRAGMENT) > 0,
            long_chain: delta.get(counter::LONG_V6_CHAIN) > 0,
        })
    }

    /// The connector whose allowed count grew since the last call; called
    /// right after a frame was allowed.
    fn connector_that_grew(&mut self) -> Result<String, DatapathError> {
        let counts = self.connector_counts()?;
        let baseline = self.connector_baseline.replace(counts.clone());
        let baseline = baseline.unwrap_or_else(|| vec![0; MAX_CONNECTORS]);
        let grew = counts
            .iter()
            .zip(&baseline)
            .position(|(now, then)| now != then);
        grew.and_then(|id| {
            let live = self.live.as_ref()?;
            live.connectors.get(&u32::try_from(id).ok()?).cloned()
        })
        .ok_or(DatapathError::Inconsistent {
            action: XDP_PASS,
            verdict: "allow by a connector the live policy does not have",
        })
    }
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .field("connectors", &self.connectors.len())
            .field("allow_v4", &self.allow_v4.len())
            .field("allow_v6", &self.allow_v6.len())
            .finish_non_exhaustive()
    }
}

impl Installed {
    fn new(slot: u32, generation: u64) -> Self {
        Self {
            slot,
            generation,
            connectors: BTreeMap::new(),
            port_words: BTreeMap::new(),
            allow_v4: Vec::new(),
            allow_v6: Vec::new(),
            dest_v4: Vec::new(),
            dest_v6: Vec::new(),
        }
    }
}

enum SlotKey {
    V4(Key<Ipv4Key>),
    V6(Key<Ipv6Key>),
}

fn key_for(slot: u32, net: &IpNet) -> SlotKey {
    let prefix_len = SLOT_PREFIX_BITS + u32::from(net.prefix_len());
    match net.network() {
        IpAddr::V4(addr) => SlotKey::V4(Key::new(
            prefix_len,
            Ipv4Key {
                slot,
                addr: addr.octets(),
            },
        )),
        IpAddr::V6(addr) => SlotKey::V6(Key::new(
            prefix_len,
            Ipv6Key {
                slot,
                addr: addr.octets(),
            },
        )),
    }
}

/// Places inventory records, each with the CPU that holds it, into the sets
/// of an inventory with `mask + 1` sets hashed with `seed`: the non-empty
/// sets, each as one value per CPU. A record goes to an empty way of its
/// set on its CPU, or else replaces the way seen least recently there, if
/// it was seen more recently itself. Records of CPUs past `cpus` are
/// dropped.
pub fn place_inventory(
    records: impl IntoIterator<Item = (usize, SourceRecord)>,
    cpus: usize,
    seed: u64,
    mask: u32,
) -> BTreeMap<u32, Vec<InventorySet>> {
    let mut placed: BTreeMap<u32, Vec<InventorySet>> = BTreeMap::new();
    for (cpu, record) in records {
        if cpu >= cpus || record.family == 0 {
            continue;
        }
        let row = placed
            .entry(inventory::set_of(record.addr, seed, mask))
            .or_insert_with(|| vec![InventorySet::default(); cpus]);
        if let Some(oldest) = row[cpu]
            .ways
            .iter_mut()
            .min_by_key(|way| (way.family != 0, way.last_seen))
            && (oldest.family == 0 || oldest.last_seen < record.last_seen)
        {
            *oldest = record;
        }
    }
    placed
}

/// Turns the per-id allowed counts of the map into per-name counts that
/// never go backwards across reloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorLedger {
    /// Live connectors: name to (id, the id's count when the name took it).
    live: BTreeMap<String, (u32, u64)>,
    /// What each name counted before its current id (or before it left).
    carried: BTreeMap<String, u64>,
}

impl ConnectorLedger {
    /// Makes `next` (id to name) the live connectors. `before_flip` is the
    /// map's per-id counts before `next` went live, the baseline of the
    /// connectors new in it; `settled` the counts once no run judges by the
    /// old policy, which settle the connectors that leave.
    fn rebase(&mut self, next: &BTreeMap<u32, String>, before_flip: &[u64], settled: &[u64]) {
        let count = |counts: &[u64], id: u32| counts.get(id as usize).copied().unwrap_or(0);
        for (name, (id, baseline)) in std::mem::take(&mut self.live) {
            let still = next.get(&id).is_some_and(|next_name| *next_name == name);
            if still {
                self.live.insert(name, (id, baseline));
            } else {
                *self.carried.entry(name).or_default() +=
                    count(settled, id).saturating_sub(baseline);
            }
        }
        for (&id, name) in next {
            self.live
                .entry(name.clone())
                .or_insert_with(|| (id, count(before_flip, id)));
        }
    }

    /// Per-name allowed counts for the live connectors, by name.
    pub fn allowed(&self, counts: &[u64]) -> Vec<(String, u64)> {
        self.live
            .iter()
            .map(|(name, &(id, baseline))| {
                let now = counts.get(id as usize).copied().unwrap_or(0);
                let carried = self.carried.get(name).copied().unwrap_or(0);
                (name.clone(), carried + now.saturating_sub(baseline))
            })
            .collect()
    }
}

/// Allowed SYNs per connector id, summed over CPUs.
pub fn connector_totals<'a>(per_cpu: impl IntoIterator<Item = &'a ConnectorCounters>) -> Vec<u64> {
    let mut totals = vec![0; MAX_CONNECTORS];
    for cpu in per_cpu {
        for (total, value) in totals.iter_mut().zip(cpu.allowed) {
            *total += value;
        }
    }
    totals
}

/// Index of a connector's name in [`NAMES_MAP`].
pub fn name_index(slot: u32, id: u32) -> u32 {
    slot * MAX_CONNECTORS as u32 + id
}

fn connector_name(name: &str) -> ConnectorName {
    let mut bytes = [0; CONNECTOR_NAME_LEN];
    let len = name.len().min(CONNECTOR_NAME_LEN);
    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    ConnectorName { bytes }
}

fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<(), DatapathError> {
    let mut pinned = Vec::new();
    for name in MAP_NAMES {
        let map = ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
        let path = dir.join(name);
        if let Err(source) = map.pin(&path) {
            for path in pinned {
                let _ = std::fs::remove_file(path);
            }
            return Err(DatapathError::Pin { name, path, source });
        }
        pinned.push(path);
    }
    Ok(())
}

fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DatapathError::MapLayout { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_print_in_the_operators_words() {
        assert_eq!(Verdict::Pass.to_string(), "pass");
        assert_eq!(Verdict::Allow("relay".into()).to_string(), "allow relay");
        assert_eq!(Verdict::Deny.to_string(), "deny");
        assert_eq!(Verdict::WouldDeny.to_string(), "would-deny");
    }

    #[test]
    fn counter_deltas_subtract_per_counter() {
        let mut before = CounterTotals::default();
        before.values[counter::SEEN] = 5;
        let mut after = before;
        after.values[counter::SEEN] = 7;
        after.values[counter::DENY_V6] = 1;
        let delta = after.since(&before);
        assert_eq!(delta.seen(), 2);
        assert_eq!(delta.denied(), 1);
        assert_eq!(delta.allowed(), 0);
    }

    /// Connector ids to names, as `install` hands them to the ledger.
    fn ids(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
        pairs
            .iter()
            .map(|&(id, name)| (id, name.to_owned()))
            .collect()
    }

    #[test]
    fn ledger_counts_never_go_backwards_across_reloads() {
        let mut ledger = ConnectorLedger::default();
        // Id 0 already counted 5 for some earlier owner.
        ledger.rebase(&ids(&[(0, "relay"), (1, "printers")]), &[5, 0], &[5, 0]);
        assert_eq!(
            ledger.allowed(&[8, 2]),
            [("printers".to_owned(), 2), ("relay".to_owned(), 3)]
        );
        // "relay" leaves with 3 + 1; "printers" stays.
        ledger.rebase(&ids(&[(1, "printers")]), &[9, 2], &[9, 2]);
        assert_eq!(ledger.allowed(&[9, 4]), [("printers".to_owned(), 4)]);
        // "relay" comes back on another id and goes on from 4.
        ledger.rebase(
            &ids(&[(1, "printers"), (2, "relay")]),
            &[9, 4, 7],
            &[9, 4, 7],
        );
        assert_eq!(
            ledger.allowed(&[9, 4, 9]),
            [("printers".to_owned(), 4), ("relay".to_owned(), 6)]
        );
    }

    #[test]
    fn a_new_connector_keeps_what_it_admits_between_the_flip_and_the_settling() {
        let mut ledger = ConnectorLedger::default();
        ledger.rebase(&ids(&[(0, "relay")]), &[0, 0], &[0, 0]);
        // "smarthost" takes the free id 1, which last counted 10 for an
        // owner long gone. Between the flip and the settling read it
        // admits 3 SYNs: they are its own.
        ledger.rebase(&ids(&[(0, "relay"), (1, "smarthost")]), &[4, 10], &[4, 13]);
        assert_eq!(
            ledger.allowed(&[4, 13]),
            [("relay".to_owned(), 4), ("smarthost".to_owned(), 3)]
        );
    }

    #[test]
    fn carried_records_keep_their_cpu_and_the_most_recent_win_a_full_set() {
        let record = |n: u8, last_seen: u64| SourceRecord {
            addr: [u64::from(n), 0],
            attempts: u64::from(n),
            first_seen: 1,
            last_seen,
            last_port: 25,
            family: 4,
            _pad: 0,
        };
        // One set (mask 0), so every record meets in it: six on CPU 0 for
        // four ways, one on CPU 1, one for a CPU that is gone, one empty.
        let mut empty = record(9, 99);
        empty.family = 0;
        let records = [
            (0, record(1, 10)),
            (0, record(2, 60)),
            (0, record(3, 30)),
            (1, record(4, 5)),
            (0, record(5, 50)),
            (0, record(6, 20)),
            (0, record(7, 40)),
            (2, record(8, 70)),
            (0, empty),
        ];
        let placed = place_inventory(records, 2, 0x5eed, 0);
        assert_eq!(placed.keys().copied().collect::<Vec<_>>(), [0]);
        let mut cpu0: Vec<u64> = placed[&0][0].ways.iter().map(|way| way.last_seen).collect();
        cpu0.sort_unstable();
        assert_eq!(cpu0, [30, 40, 50, 60]);
        let cpu1: Vec<u64> = placed[&0][1]
            .ways
            .iter()
            .filter(|way| way.family != 0)
            .map(|way| way.attempts)
            .collect();
        assert_eq!(cpu1, [4]);
    }

    #[test]
    fn carried_records_go_to_the_set_the_program_looks_in() {
        let (seed, mask) = (0x1234_5678_9abc_def0, 255);
        let records = (0..64u64).map(|n| {
            (
                0,
                SourceRecord {
                    addr: [n.wrapping_mul(0x0100_0000_0100_0001), n],
                    attempts: 1,
                    first_seen: 1,
                    last_seen: 1,
                    last_port: 25,
                    family: 6,
                    _pad: 0,
                },
            )
        });
        for (set, row) in place_inventory(records, 1, seed, mask) {
            for way in row[0].ways.iter().filter(|way| way.family != 0) {
                assert_eq!(inventory::set_of(way.addr, seed, mask), set);
            }
        }
    }

    #[test]
    fn keys_carry_the_slot_before_the_address() {
        let SlotKey::V4(key) = key_for(1, &"198.51.100.0/24".parse().unwrap()) else {
            panic!("an IPv4 network gave a non-IPv4 key");
        };
        assert_eq!(key.prefix_len(), 32 + 24);
        assert_eq!(key.data().slot, 1);
        assert_eq!(key.data().addr, [198, 51, 100, 0]);
    }
}
