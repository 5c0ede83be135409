//! The compiled source table against the kernel's LPM trie, through the real
//! program: random policies are installed into one datapath that looks
//! sources up in the table and one that uses the tries, and every probe
//! address must get the same verdict, connector included, from both.
//!
//! Prefixes and addresses here are data inside BPF_PROG_RUN: no frame
//! leaves the process, so they may lie anywhere in the address space, which
//! is what exercises every level of the table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatekeeper::{
    datapath::{Datapath, LoadSettings, Lookup, Verdict},
    policy::{Connector, Mode, Policy},
};
use gatekeeper_tests::{
    frames::{Frame, TcpSeg},
    support::require_root,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random prefix near one of a few anchors, so that prefixes nest and
/// overlap across connectors, with lengths anywhere from /0 to full.
fn prefix(rng: &mut Rng, anchors: &[u128], v6: bool) -> IpNet {
    let anchor = anchors[rng.below(anchors.len() as u64) as usize];
    if v6 {
        let len = rng.below(129) as u8;
        let noise = u128::from(rng.next()) << rng.below(72);
        let addr = Ipv6Addr::from(anchor ^ noise);
        IpNet::V6(Ipv6Net::new_assert(addr, len).trunc())
    } else {
        // Weighted toward the lengths real allowlists use.
        let len = match rng.below(10) {
            0 => rng.below(16),
            1..=3 => 16 + rng.below(8),
            _ => 24 + rng.below(9),
        } as u8;
        let noise = (rng.next() as u32) >> (8 + rng.below(24));
        let addr = Ipv4Addr::from((anchor as u32) ^ noise);
        IpNet::V4(Ipv4Net::new_assert(addr, len).trunc())
    }
}

fn random_policy(rng: &mut Rng) -> Policy {
    let anchors: Vec<u128> = (0..3)
        .map(|_| (u128::from(rng.next()) << 64) | u128::from(rng.next()))
        .collect();
    let connectors = 1 + rng.below(6) as usize;
    let mut seen = std::collections::HashSet::new();
    let connectors = (0..connectors)
        .map(|index| {
            let count = 1 + rng.below(80) as usize;
            let sources = (0..count)
                .map(|_| {
                    let v6 = rng.below(3) == 0;
                    prefix(rng, &anchors, v6)
                })
                .filter(|net| seen.insert(*net))
                .collect();
            Connector {
                name: format!("connector-{index}"),
                sources,
            }
        })
        .collect();
    Policy {
        mode: Mode::Enforce,
        ports: vec![25],
        destinations: Vec::new(),
        connectors,
    }
}

/// Edges and insides of every prefix, and addresses anywhere.
fn probes(policy: &Policy, rng: &mut Rng) -> Vec<IpAddr> {
    let mut probes = Vec::new();
    for net in policy.connectors.iter().flat_map(|c| &c.sources) {
        probes.push(net.network());
        probes.push(net.broadcast());
        probes.push(match net {
            IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(
                u32::from(net.network()) | (rng.next() as u32 & !u32::from(net.netmask())),
            )),
            IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
                u128::from(net.network()) | (u128::from(rng.next()) & !u128::from(net.netmask())),
            )),
        });
    }
    for _ in 0..100 {
        probes.push(Ipv4Addr::from(rng.next() as u32).into());
        probes.push(Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next())).into());
    }
    probes
}

fn syn_from(source: IpAddr) -> Vec<u8> {
    let segment = TcpSeg::syn(40000, 25);
    match source {
        IpAddr::V4(source) => Frame::ipv4(source, Ipv4Addr::new(192, 0, 2, 25))
            .tcp(segment)
            .build(),
        IpAddr::V6(source) => {
            Frame::ipv6(source, Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25))
                .tcp(segment)
                .build()
        }
    }
}

/// The reference answer in plain Rust: the longest prefix that contains
/// the address.
fn longest_match(policy: &Policy, addr: IpAddr) -> Verdict {
    policy
        .connectors
        .iter()
        .flat_map(|c| c.sources.iter().map(move |net| (net, &c.name)))
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map_or(Verdict::Deny, |(_, name)| Verdict::Allow(name.clone()))
}

#[test]
fn the_table_and_the_kernel_trie_agree_on_random_policies() {
    require_root();
    let load = |lookup| {
        Datapath::load_with(LoadSettings {
            lookup,
            ..LoadSettings::default()
        })
        .expect("loading the XDP program")
    };
    let mut table = load(Lookup::Table);
    let mut trie = load(Lookup::Trie);
    let mut rng = Rng(0x7ab1_e0f5_1a7e_5eed);
    let mut judged = 0;
    // Each round installs a new policy, so both slots (and so both table
    // regions) are exercised, and every reload replaces the previous one.
    for round in 0..16 {
        let policy = random_policy(&mut rng);
        table.install(&policy).expect("installing into the table");
        trie.install(&policy).expect("installing into the tries");
        for addr in probes(&policy, &mut rng) {
            let frame = syn_from(addr);
            let by_table = table.run_frame(&frame).expect("table run").verdict;
            let by_trie = trie.run_frame(&frame).expect("trie run").verdict;
            assert_eq!(
                by_table, by_trie,
                "round {round}: {addr} judged differently by the table and the trie"
            );
            assert_eq!(
                by_table,
                longest_match(&policy, addr),
                "round {round}: {addr}"
            );
            judged += 1;
        }
    }
    println!("{judged} addresses judged alike by the table, the trie and a linear scan");
    assert!(
        judged > 16 * 200,
        "every round probes at least 200 addresses"
    );
}

#[test]
fn a_policy_larger_than_the_table_is_refused_and_the_live_one_stays() {
    require_root();
    let mut datapath = Datapath::load_with(LoadSettings {
        table_chunks: 4,
        ..LoadSettings::default()
    })
    .expect("loading the XDP program");
    let small = Policy {
        mode: Mode::Enforce,
        ports: vec![25],
        destinations: Vec::new(),
        connectors: vec![Connector {
            name: "small".to_owned(),
            sources: vec!["198.51.100.0/24".parse().expect("a prefix")],
        }],
    };
    assert_eq!(datapath.install(&small).expect("one chunk fits"), 1);
    // Five /32s in five different /16s need ten chunks.
    let mut large = small.clone();
    large.connectors[0].sources = (1..=5)
        .map(|n| format!("203.{n}.113.1/32").parse().expect("a prefix"))
        .collect();
    let error = datapath.install(&large).expect_err("ten chunks do not fit");
    assert_eq!(
        error.to_string(),
        "the policy's sources compile to 10 table chunks; the table holds 4 per policy \
         (raise it with --table-chunks)"
    );
    assert_eq!(datapath.generation(), 1);
    let inside = syn_from(Ipv4Addr::new(198, 51, 100, 9).into());
    assert_eq!(
        datapath.run_frame(&inside).expect("a run").verdict,
        Verdict::Allow("small".to_owned())
    );
    let outside = syn_from(Ipv4Addr::new(203, 1, 113, 1).into());
    assert_eq!(
        datapath.run_frame(&outside).expect("a run").verdict,
        Verdict::Deny
    );
}
