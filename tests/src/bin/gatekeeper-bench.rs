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
use gatekeeper_tests::frames::{ACK, ETH_P_8021Q, Frame, TcpSeg, UdpDgram};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    filter: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        json: None,
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
            "--filter" => {
                let text = args.next().ok_or("--filter needs a text")?;
                options.filter = Some(text);
            }
            "--help" | "-h" => {
                return Err(
                    "usage: gatekeeper-bench [--quick] [--json FILE] [--filter TEXT]\n\
                     --filter TEXT measures only the traffic classes whose name contains TEXT"
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
    frames: Vec<Vec<u8>>,
}

fn classes(prefixes_v4: &[IpNet], prefixes_v6: &[IpNet], count: usize) -> Vec<Class> {
    let mut rng = Rng(0x0005_eed0_fc1a_55e5);
    let pick = |prefixes: &[IpNet], rng: &mut Rng| {
        let net = &prefixes[(rng.next() as usize) % prefixes.len()];
        host_in(net, rng)
    };
    let denied_v4 = |rng: &mut Rng| -> std::net::IpAddr {
        Ipv4Addr::from(u32::from(DENIED_V4.network()) | (rng.next() as u32 & 0xff)).into()
    };
    let denied_v6 = |rng: &mut Rng| -> std::net::IpAddr {
        Ipv6Addr::from(u128::from(DENIED_V6.network()) | u128::from(rng.next() as u32)).into()
    };
    let mut make = |name, f: &mut dyn FnMut(&mut Rng) -> Vec<u8>| Class {
        name,
        frames: (0..count).map(|_| f(&mut rng)).collect(),
    };
    vec![
        make("non-IP (ARP)", &mut |rng| {
            Frame::arp(Ipv4Addr::from(rng.next() as u32), GATEWAY_V4).build()
        }),
        make("IPv4 UDP", &mut |rng| {
            Frame::ipv4(Ipv4Addr::from(rng.next() as u32), GATEWAY_V4)
                .udp(UdpDgram::new(53, 53))
                .build()
        }),
        make("IPv4 TCP SYN to 443", &mut |rng| {
            syn_from(denied_v4(rng), 0x02, 443)
        }),
        make("IPv4 gated ACK", &mut |rng| {
            syn_from(denied_v4(rng), ACK, 25)
        }),
        make("IPv4 SYN allowed", &mut |rng| {
            syn_from(pick(prefixes_v4, rng), 0x02, 25)
        }),
        make("IPv4 SYN denied", &mut |rng| {
            syn_from(denied_v4(rng), 0x02, 25)
        }),
        make("IPv4 SYN denied, VLAN", &mut |rng| {
            let std::net::IpAddr::V4(source) = denied_v4(rng) else {
                unreachable!("an IPv4 source")
            };
            Frame::ipv4(source, GATEWAY_V4)
                .vlan(ETH_P_8021Q, 7)
                .tcp(TcpSeg::syn(40000, 25))
                .build()
        }),
        make("IPv6 SYN allowed", &mut |rng| {
            syn_from(pick(prefixes_v6, rng), 0x02, 25)
        }),
        make("IPv6 SYN denied", &mut |rng| {
            syn_from(denied_v6(rng), 0x02, 25)
        }),
    ]
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
        .map(|frame| time_program(program, frame, repeat).expect("BPF_PROG_RUN"))
        .sum();
    total.as_nanos() as f64 / frames.len() as f64
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
                64,
                20_000,
                5,
            )
        };

    let floor_object = load_reference_program(FLOOR_PROGRAM_NAME).expect("loading the floor");
    let floor: &aya::programs::Xdp = floor_object
        .program(FLOOR_PROGRAM_NAME)
        .expect("the floor program")
        .try_into()
        .expect("an XDP program");
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
    let mut installs: Vec<serde_json::Value> = Vec::new();
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
                installs.push(serde_json::json!({
                    "allowlist": size,
                    "lookup": name,
                    "install_seconds": install.as_secs_f64(),
                    "map_bytes": memory,
                    "table_chunks_per_slot": if lookup == Lookup::Table { table_chunks } else { 0 },
                }));
                for class in classes(&prefixes_v4, &prefixes_v6, frames_per_class) {
                    if let Some(filter) = &options.filter
                        && !class.name.contains(filter.as_str())
                    {
                        continue;
                    }
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

    if let Some(path) = options.json {
        let json = serde_json::json!({
            "floor_ns": floor_ns,
            "repeat": repeat,
            "runs": runs,
            "frames_per_class": frames_per_class,
            "quick": options.quick,
            "installs": installs,
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
