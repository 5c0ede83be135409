//! `cargo xtask bench`: nanoseconds per frame of the gatekeeper XDP program
//! through `BPF_PROG_RUN`, for each traffic class and allowlist size, as a
//! ratio to an empty XDP_DROP program measured in the same run.
//!
//! A benchmark, not a test: it asserts nothing about times. `--quick` runs
//! small sizes and few repetitions, for CI to check that it runs and prints
//! a complete table.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use gatekeeper::{
    datapath::{Datapath, LoadSettings, Lookup, load_reference_program, time_program},
    policy::{Connector, Mode, Policy},
};
use gatekeeper_common::FLOOR_PROGRAM_NAME;
use gatekeeper_tests::{
    frames::{ACK, ETH_P_8021Q, Frame, TcpSeg, UdpDgram},
    netns::Namespace,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    filter: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        json: None,
        markdown: None,
        filter: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => {
                let path = args.next().ok_or("--json needs a file name")?;
                options.json = Some(PathBuf::from(path));
            }
            "--markdown" => {
                let path = args.next().ok_or("--markdown needs a file name")?;
                options.markdown = Some(PathBuf::from(path));
            }
            "--filter" => {
                let text = args.next().ok_or("--filter needs a text")?;
                options.filter = Some(text);
            }
            "--help" | "-h" => {
                return Err(
                    "usage: gatekeeper-bench [--quick] [--json FILE] [--markdown FILE] [--filter TEXT]\n\
                     --json FILE      also writes the results as JSON\n\
                     --markdown FILE  also writes them as the tables of BENCHMARKS.md\n\
                     --filter TEXT    measures only the traffic classes whose name contains TEXT"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    Ok(options)
}

/// A deterministic generator, so that every run measures the same policies
/// and frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The source range frames are denied from: no generated prefix covers it.
const DENIED_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24);
const DENIED_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0), 48);

/// `count` distinct IPv4 prefixes, none covering [`DENIED_V4`], with the
/// spread of lengths of the global IPv4 routing table (over half /24, most
/// of the rest /19 to /23, a few /8 to /18), plus 5% of /25 to /32 for the
/// single servers and printers of an allowlist.
fn v4_prefixes(count: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut seen = std::collections::HashSet::new();
    let mut prefixes = Vec::with_capacity(count);
    while prefixes.len() < count {
        let roll = rng.next();
        let len = match roll % 100 {
            0 => 8 + (roll >> 8) % 8,
            1..=4 => 16 + (roll >> 8) % 3,
            5..=7 => 19,
            8..=11 => 20,
            12..=16 => 21,
            17..=29 => 22,
            30..=39 => 23,
            40..=94 => 24,
            _ => 25 + (roll >> 8) % 8,
        } as u8;
        let addr = Ipv4Addr::from((rng.next() >> 32) as u32);
        let net = Ipv4Net::new_assert(addr, len).trunc();
        if net.contains(&DENIED_V4) || DENIED_V4.contains(&net) {
            continue;
        }
        if seen.insert(net) {
            prefixes.push(IpNet::V4(net));
        }
    }
    prefixes
}

/// `count` distinct IPv6 prefixes of /32 to /64 in 2000::/3, none covering
/// [`DENIED_V6`].
fn v6_prefixes(count: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut seen = std::collections::HashSet::new();
    let mut prefixes = Vec::with_capacity(count);
    while prefixes.len() < count {
        let len = 32 + (rng.next() % 33) as u8;
        let high = (rng.next() & 0x1fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
        let addr = Ipv6Addr::from((u128::from(high) << 64) | u128::from(rng.next()));
        let net = Ipv6Net::new_assert(addr, len).trunc();
        if net.contains(&DENIED_V6) || DENIED_V6.contains(&net) {
            continue;
        }
        if seen.insert(net) {
            prefixes.push(IpNet::V6(net));
        }
    }
    prefixes
}

fn policy(sources: Vec<IpNet>) -> Policy {
    Policy {
        mode: Mode::Enforce,
        ports: vec![25],
        destinations: Vec::new(),
        connectors: vec![Connector {
            name: "bench".to_owned(),
            sources,
        }],
    }
}

/// A host inside `net`.
fn host_in(net: &IpNet, rng: &mut Rng) -> std::net::IpAddr {
    match net {
        IpNet::V4(net) => {
            let span = u32::MAX >> net.prefix_len().min(31);
            let offset = if net.prefix_len() == 32 {
                0
            } else {
                (rng.next() as u32) & span
            };
            Ipv4Addr::from(u32::from(net.network()) | offset).into()
        }
        IpNet::V6(net) => {
            let span = u128::MAX >> net.prefix_len().min(127);
            let offset = if net.prefix_len() == 128 {
                0
            } else {
                u128::from(rng.next()) & span
            };
            Ipv6Addr::from(u128::from(net.network()) | offset).into()
        }
    }
}

/// An address in `net`'s sibling, the prefix of the same length that
/// differs in its last bit: it shares all but that bit with `net`.
fn near(net: &IpNet, rng: &mut Rng) -> std::net::IpAddr {
    match host_in(net, rng) {
        std::net::IpAddr::V4(host) => {
            let bit = 32 - u32::from(net.prefix_len());
            Ipv4Addr::from(u32::from(host) ^ (1 << bit)).into()
        }
        std::net::IpAddr::V6(host) => {
            let bit = 128 - u32::from(net.prefix_len());
            Ipv6Addr::from(u128::from(host) ^ (1 << bit)).into()
        }
    }
}

/// Whether a prefix in `set` covers `addr`.
fn covered(addr: std::net::IpAddr, set: &std::collections::HashSet<IpNet>) -> bool {
    let longest = if addr.is_ipv4() { 32 } else { 128 };
    (0..=longest).any(|len| IpNet::new(addr, len).is_ok_and(|net| set.contains(&net.trunc())))
}

const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25);

fn syn_from(source: std::net::IpAddr, flags: u8, port: u16) -> Vec<u8> {
    let segment = TcpSeg::new(40000, port).flags(flags);
    match source {
        std::net::IpAddr::V4(source) => Frame::ipv4(source, GATEWAY_V4).tcp(segment).build(),
        std::net::IpAddr::V6(source) => Frame::ipv6(source, GATEWAY_V6).tcp(segment).build(),
    }
}

/// One traffic class: frames that vary over many sources.
struct Class {
    name: &'static str,
    /// The verdict the program must give every frame (`XDP_PASS` or
    /// `XDP_DROP`), so that the benchmark times the path it names.
    verdict: u32,
    frames: Vec<Vec<u8>>,
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn classes(prefixes_v4: &[IpNet], prefixes_v6: &[IpNet], count: usize) -> Vec<Class> {
    let mut rng = Rng(0x0005_eed0_fc1a_55e5);
    let pick = |prefixes: &[IpNet], rng: &mut Rng| {
        let net = &prefixes[(rng.next() as usize) % prefixes.len()];
        host_in(net, rng)
    };
    let denied_v4 = |rng: &mut Rng| -> std::net::IpAddr {
        Ipv4Addr::from(u32::from(DENIED_V4.network()) | (rng.next() as u32 & 0xff)).into()
    };
    let v4_set: std::collections::HashSet<IpNet> = prefixes_v4.iter().copied().collect();
    let v6_set: std::collections::HashSet<IpNet> = prefixes_v6.iter().copied().collect();
    // A denied source next to an allowed one: the table walks as deep as
    // for the allowed one before it finds no connector.
    let near_miss = |prefixes: &[IpNet], set: &std::collections::HashSet<IpNet>, rng: &mut Rng| loop {
        let candidate = near(&prefixes[(rng.next() as usize) % prefixes.len()], rng);
        if !covered(candidate, set) {
            break candidate;
        }
    };
    let mut make = |name, verdict, f: &mut dyn FnMut(&mut Rng) -> Vec<u8>| Class {
        name,
        verdict,
        frames: (0..count).map(|_| f(&mut rng)).collect(),
    };
    vec![
        make("non-IP (ARP)", XDP_PASS, &mut |rng| {
            Frame::arp(Ipv4Addr::from(rng.next() as u32), GATEWAY_V4).build()
        }),
        make("IPv4 UDP", XDP_PASS, &mut |rng| {
            Frame::ipv4(Ipv4Addr::from(rng.next() as u32), GATEWAY_V4)
                .udp(UdpDgram::new(53, 53))
                .build()
        }),
        make("IPv4 TCP SYN to 443", XDP_PASS, &mut |rng| {
            syn_from(denied_v4(rng), 0x02, 443)
        }),
        make("IPv4 gated ACK", XDP_PASS, &mut |rng| {
            syn_from(denied_v4(rng), ACK, 25)
        }),
        make("IPv4 SYN allowed", XDP_PASS, &mut |rng| {
            syn_from(pick(prefixes_v4, rng), 0x02, 25)
        }),
        make("IPv4 SYN denied", XDP_DROP, &mut |rng| {
            syn_from(near_miss(prefixes_v4, &v4_set, rng), 0x02, 25)
        }),
        make("IPv4 SYN denied, VLAN", XDP_DROP, &mut |rng| {
            let std::net::IpAddr::V4(source) = near_miss(prefixes_v4, &v4_set, rng) else {
                unreachable!("an IPv4 source")
            };
            Frame::ipv4(source, GATEWAY_V4)
                .vlan(ETH_P_8021Q, 7)
                .tcp(TcpSeg::syn(40000, 25))
                .build()
        }),
        make("IPv6 SYN allowed", XDP_PASS, &mut |rng| {
            syn_from(pick(prefixes_v6, rng), 0x02, 25)
        }),
        make("IPv6 SYN denied", XDP_DROP, &mut |rng| {
            syn_from(near_miss(prefixes_v6, &v6_set, rng), 0x02, 25)
        }),
    ]
}

/// Keeps the programs under test in the kernel's XDP dispatcher for the
/// whole run by attaching them to a veth pair in a namespace of their own,
/// where no frame ever arrives.
///
/// `BPF_PROG_RUN` with a repeat count adds an XDP program that is attached
/// nowhere to the dispatcher and removes it afterwards, and each change
/// waits for an RCU grace period: about 15 ms a run on this kind of
/// machine, which made the run count, not the frames, the benchmark's
/// cost. An attached program is already there, so a run only takes a
/// reference. The program runs through the same direct call either way.
struct Holder {
    namespace: Namespace,
}

impl Holder {
    const FLOOR_LINK: &str = "gkb-floor";
    const PROGRAM_LINK: &str = "gkb-program";

    fn new() -> Self {
        let namespace = Namespace::new("bench");
        namespace.ip(&[
            "link",
            "add",
            Self::FLOOR_LINK,
            "type",
            "veth",
            "peer",
            "name",
            Self::PROGRAM_LINK,
        ]);
        Self { namespace }
    }

    /// Attaches `program` to `link` in native mode, replacing nothing: the
    /// program attached before must have been dropped.
    fn attach(&self, program: &mut aya::programs::Xdp, link: &str) {
        self.namespace
            .run_scoped(|| program.attach(link, aya::programs::XdpMode::Driver))
            .unwrap_or_else(|error| panic!("attaching to {link}: {error}"));
    }
}

/// One traffic class measured against the floor.
struct Timing {
    /// Nanoseconds per frame of the program under test.
    ns: f64,
    /// Nanoseconds per frame of the empty program on the same frames.
    floor_ns: f64,
    /// The median over the runs of each run's ratio.
    ratio: f64,
}

/// The mean time per frame over every frame of the class, each frame run
/// `repeat` times.
fn mean_ns(program: &aya::programs::Xdp, frames: &[Vec<u8>], repeat: u32) -> f64 {
    let total: Duration = frames
        .iter()
        .map(|frame| {
            time_program(program, frame, repeat)
                .expect("BPF_PROG_RUN")
                .0
        })
        .sum();
    total.as_nanos() as f64 / frames.len() as f64
}

/// Panics unless the program gives every frame of the class
/// its verdict: a time is only worth printing for the path it names.
fn check_verdicts(program: &aya::programs::Xdp, class: &Class, size: &str, lookup: &str) {
    for (index, frame) in class.frames.iter().enumerate() {
        let (_, verdict) = time_program(program, frame, 1).expect("BPF_PROG_RUN");
        // A panic, not an exit: unwinding removes the bench's namespace.
        assert_eq!(
            verdict, class.verdict,
            "{size} {lookup} {}: frame {index} got XDP action {verdict}, not {}",
            class.name, class.verdict
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the floor and the program in turn on the same frames, `runs`
/// times: a run's ratio compares two measurements a few milliseconds apart,
/// so a noisy neighbour or a frequency change skews both alike.
fn measure(
    floor: &aya::programs::Xdp,
    program: &aya::programs::Xdp,
    frames: &[Vec<u8>],
    repeat: u32,
    runs: usize,
) -> Timing {
    let pairs: Vec<(f64, f64)> = (0..runs)
        .map(|_| {
            (
                mean_ns(floor, frames, repeat),
                mean_ns(program, frames, repeat),
            )
        })
        .collect();
    Timing {
        ns: median(pairs.iter().map(|pair| pair.1).collect()),
        floor_ns: median(pairs.iter().map(|pair| pair.0).collect()),
        ratio: median(pairs.iter().map(|pair| pair.1 / pair.0).collect()),
    }
}

/// Kernel memory charged to the BPF maps this process holds, in bytes: the
/// sum of `memlock` over the map descriptors in /proc/self/fdinfo (the
/// kernel counts LPM trie and hash nodes as they are allocated).
fn map_memory() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|value| value.trim().parse::<u64>().ok())
        })
        .sum()
}

const MIB: f64 = 1024.0 * 1024.0;

struct Install {
    size: String,
    lookup: &'static str,
    seconds: f64,
    bytes: u64,
    loaded_bytes: u64,
}

struct Row {
    size: String,
    class: &'static str,
    implementation: &'static str,
    timing: Timing,
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let (sizes_v4, sizes_v6, frames_per_class, repeat, runs): (&[usize], &[usize], _, _, _) =
        if options.quick {
            (&[10, 1_000], &[10], 8, 2_000, 3)
        } else {
            (
                &[10, 1_000, 100_000, 1_000_000],
                &[10, 10_000],
                1_024,
                2_000,
                5,
            )
        };

    let holder = Holder::new();
    let mut floor_object = load_reference_program(FLOOR_PROGRAM_NAME).expect("loading the floor");
    let floor: &mut aya::programs::Xdp = floor_object
        .program_mut(FLOOR_PROGRAM_NAME)
        .expect("the floor program")
        .try_into()
        .expect("an XDP program");
    holder.attach(floor, Holder::FLOOR_LINK);
    let floor: &aya::programs::Xdp = floor;
    let floor_frames: Vec<Vec<u8>> = classes(
        &v4_prefixes(10, &mut Rng(7)),
        &v6_prefixes(10, &mut Rng(8)),
        frames_per_class,
    )
    .into_iter()
    .flat_map(|class| class.frames)
    .collect();
    let floor_ns = median(
        (0..runs)
            .map(|_| mean_ns(floor, &floor_frames, repeat))
            .collect(),
    );
    println!(
        "floor: an empty XDP_DROP program, {floor_ns:.1} ns per frame; each row below runs it \
         again on the row's own frames, in turn with the program, and divides by that"
    );
    println!(
        "{:<14} {:<24} {:<12} {:>9} {:>7} {:>8} {:>7}",
        "allowlist", "traffic", "lookup", "ns/frame", "floor", "added", "ratio"
    );

    let mut rows = Vec::new();
    let mut installs: Vec<Install> = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let largest_v6 = *sizes_v6.last().expect("an IPv6 size");
    let prefixes_v6_all = v6_prefixes(largest_v6, &mut rng);
    for &size_v4 in sizes_v4 {
        for &size_v6 in sizes_v6 {
            if size_v6 != sizes_v6[0] && size_v4 != sizes_v4[0] {
                continue;
            }
            let prefixes_v4 = v4_prefixes(size_v4, &mut Rng(size_v4 as u64 | 1));
            let prefixes_v6 = prefixes_v6_all[..size_v6].to_vec();
            let mut sources = prefixes_v4.clone();
            sources.extend_from_slice(&prefixes_v6);

            for lookup in [Lookup::Table, Lookup::Trie] {
                let name = match lookup {
                    Lookup::Table => "table",
                    Lookup::Trie => "lpm-trie",
                };
                let table_chunks = u32::try_from(gatekeeper::table::chunks_needed(&sources))
                    .expect("fewer than 2^32 chunks")
                    .max(1);
                let settings = LoadSettings {
                    lookup,
                    table_chunks,
                    ..LoadSettings::default()
                };
                let before = map_memory();
                let mut datapath = Datapath::load_with(settings).expect("loading the XDP program");
                let loaded = map_memory().saturating_sub(before);
                holder.attach(datapath.program(), Holder::PROGRAM_LINK);
                let started = Instant::now();
                datapath
                    .install(&policy(sources.clone()))
                    .expect("installing the bench policy");
                let install = started.elapsed();
                let memory = map_memory().saturating_sub(before);
                let size = format!("{size_v4}/{size_v6}");
                // The table is allocated whole at load, sized for two
                // policies; the tries grow per prefix. Either way the
                // memory counted is what the kernel charged for the maps.
                println!(
                    "-- {size_v4} IPv4 and {size_v6} IPv6 prefixes, {name}: installed in {:.3} s; \
                     the maps hold {:.1} MiB ({:.1} MiB before the install)",
                    install.as_secs_f64(),
                    memory as f64 / MIB,
                    loaded as f64 / MIB,
                );
                installs.push(Install {
                    size: size.clone(),
                    lookup: name,
                    seconds: install.as_secs_f64(),
                    bytes: memory,
                    loaded_bytes: loaded,
                });
                for class in classes(&prefixes_v4, &prefixes_v6, frames_per_class) {
                    if let Some(filter) = &options.filter
                        && !class.name.contains(filter.as_str())
                    {
                        continue;
                    }
                    check_verdicts(datapath.program(), &class, &size, name);
                    let timing = measure(floor, datapath.program(), &class.frames, repeat, runs);
                    println!(
                        "{:<14} {:<24} {:<12} {:>9.1} {:>7.1} {:>+8.1} {:>6.2}x",
                        size,
                        class.name,
                        name,
                        timing.ns,
                        timing.floor_ns,
                        timing.ns - timing.floor_ns,
                        timing.ratio
                    );
                    rows.push(Row {
                        size: size.clone(),
                        class: class.name,
                        implementation: name,
                        timing,
                    });
                }
            }
        }
    }

    if let Some(path) = options.markdown {
        std::fs::write(&path, markdown(floor_ns, &rows, &installs))
            .expect("writing the Markdown file");
        println!("wrote {}", path.display());
    }
    if let Some(path) = options.json {
        let json = serde_json::json!({
            "floor_ns": floor_ns,
            "repeat": repeat,
            "runs": runs,
            "frames_per_class": frames_per_class,
            "quick": options.quick,
            "installs": installs.iter().map(|install| serde_json::json!({
                "allowlist": install.size,
                "lookup": install.lookup,
                "install_seconds": install.seconds,
                "map_bytes": install.bytes,
                "map_bytes_before_install": install.loaded_bytes,
            })).collect::<Vec<_>>(),
            "rows": rows.iter().map(|row| serde_json::json!({
                "allowlist": row.size,
                "traffic": row.class,
                "lookup": row.implementation,
                "ns_per_frame": row.timing.ns,
                "floor_ns_per_frame": row.timing.floor_ns,
                "added_ns_per_frame": row.timing.ns - row.timing.floor_ns,
                "ratio_to_floor": row.timing.ratio,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, format!("{json:#}\n")).expect("writing the JSON file");
        println!("wrote {}", path.display());
    }
}

/// The results as Markdown: one table per lookup, a row per traffic class
/// and a column per allowlist size, then the installs.
fn markdown(floor_ns: f64, rows: &[Row], installs: &[Install]) -> String {
    let mut sizes: Vec<&str> = Vec::new();
    let mut classes: Vec<&str> = Vec::new();
    let mut lookups: Vec<&str> = Vec::new();
    for row in rows {
        for (list, item) in [
            (&mut sizes, row.size.as_str()),
            (&mut classes, row.class),
            (&mut lookups, row.implementation),
        ] {
            if !list.contains(&item) {
                list.push(item);
            }
        }
    }
    let heading = |size: &str| {
        let (v4, v6) = size.split_once('/').unwrap_or((size, "0"));
        format!("{} v4 / {} v6", thousands(v4), thousands(v6))
    };
    let mut text = format!(
        "Floor: {floor_ns:.1} ns per frame. Each cell: ns per frame, added ns over \
         the floor run on the same frames, ratio to it.\n"
    );
    for lookup in lookups {
        text.push_str(&format!("\n**{lookup}**\n\n| traffic |"));
        for size in &sizes {
            text.push_str(&format!(" {} |", heading(size)));
        }
        text.push_str("\n|---|");
        text.push_str(&"---:|".repeat(sizes.len()));
        text.push('\n');
        for class in &classes {
            text.push_str(&format!("| {class} |"));
            for size in &sizes {
                let cell = rows
                    .iter()
                    .find(|row| {
                        row.implementation == lookup && row.class == *class && row.size == *size
                    })
                    .map_or_else(
                        || " |".to_owned(),
                        |row| {
                            format!(
                                " {:.1} ({:+.1}, {:.2}x) |",
                                row.timing.ns,
                                row.timing.ns - row.timing.floor_ns,
                                row.timing.ratio
                            )
                        },
                    );
                text.push_str(&cell);
            }
            text.push('\n');
        }
    }
    text.push_str(
        "\n| allowlist | lookup | install | map memory after | of which before the install |\n\
         |---|---|---:|---:|---:|\n",
    );
    for install in installs {
        text.push_str(&format!(
            "| {} | {} | {:.3} s | {:.1} MiB | {:.1} MiB |\n",
            heading(&install.size),
            install.lookup,
            install.seconds,
            install.bytes as f64 / MIB,
            install.loaded_bytes as f64 / MIB,
        ));
    }
    text
}

/// `1000000` as `1,000,000`.
fn thousands(digits: &str) -> String {
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
