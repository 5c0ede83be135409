//! Compiles a policy's source prefixes into the table the XDP program looks
//! sources up in, and walks such a table the way the program does.
//!
//! The layout is described in [`gatekeeper_common::table`]: a multibit trie
//! with 8-bit strides whose first two bytes are resolved by one read, kept
//! in 1 KiB chunks of a BPF array. Compiling inserts the prefixes shortest
//! first. A prefix then never lands on an entry that already points to a
//! child chunk (only a longer prefix creates one), and a child chunk starts
//! as 256 copies of the leaf it replaces, which is how shorter prefixes
//! reach the addresses below them that no longer prefix claims.

use std::net::IpAddr;

use gatekeeper_common::{
    TableChunk,
    table::{CHILD, CHUNK_ENTRIES, NO_CONNECTOR, ROOT_CHUNKS, V6_ROOTS},
};
use ipnet::IpNet;

/// Bytes in one chunk.
pub const CHUNK_BYTES: usize = std::mem::size_of::<TableChunk>();

/// One slot's table: its root chunks, then the child chunks, with every
/// child index already offset by the slot's first chunk in the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    base: u32,
    chunks: Vec<TableChunk>,
}

/// A table needs more child chunks than its pool holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the policy's sources compile to {needed} table chunks; the table holds {capacity} per \
     policy (raise it with --table-chunks)"
)]
pub struct TableFull {
    /// Child chunks the policy needs.
    pub needed: usize,
    /// Child chunks a slot holds.
    pub capacity: usize,
}

impl Table {
    /// Compiles `sources` (each a prefix and the id of the connector that
    /// lists it) for a slot whose region starts at chunk `base` of the map.
    /// Prefixes must be distinct; where they overlap, the longest wins.
    ///
    /// # Errors
    ///
    /// [`TableFull`] when the table needs more than `capacity` child chunks
    /// (or more than chunk indices can address); nothing is built then.
    pub fn compile<'a>(
        sources: impl IntoIterator<Item = (&'a IpNet, u32)>,
        base: u32,
        capacity: usize,
    ) -> Result<Self, TableFull> {
        let mut sorted: Vec<(&IpNet, u32)> = sources.into_iter().collect();
        // Counted first, so that a policy too large for the pool is refused
        // before its chunks take memory here.
        let needed = chunks_needed(sorted.iter().map(|(net, _)| *net));
        let addressable = (CHILD - 1).saturating_sub(base + ROOT_CHUNKS) as usize;
        let capacity = capacity.min(addressable);
        if needed > capacity {
            return Err(TableFull { needed, capacity });
        }
        sorted.sort_by_key(|(net, _)| net.prefix_len());
        let mut table = Self {
            base,
            chunks: Vec::with_capacity(ROOT_CHUNKS as usize + needed),
        };
        table
            .chunks
            .resize(ROOT_CHUNKS as usize, TableChunk::default());
        for (net, id) in sorted {
            table.insert(net, id + 1);
        }
        debug_assert_eq!(table.child_chunks(), needed);
        Ok(table)
    }

    fn insert(&mut self, net: &IpNet, leaf: u32) {
        let (bytes, root): (Vec<u8>, u32) = match net.network() {
            IpAddr::V4(addr) => (addr.octets().to_vec(), 0),
            IpAddr::V6(addr) => (addr.octets().to_vec(), V6_ROOTS),
        };
        let len = usize::from(net.prefix_len());
        // Bytes 0 and 1 are resolved together by the root chunks: a prefix
        // shorter than 16 bits covers several root chunks.
        if len < 16 {
            let first = usize::from(bytes[0]);
            let (chunks, entries) = if len <= 8 {
                (1usize << (8 - len), CHUNK_ENTRIES)
            } else {
                (1, 1usize << (16 - len))
            };
            for chunk in first..first + chunks {
                let start = if len <= 8 { 0 } else { usize::from(bytes[1]) };
                let entries_of = &mut self.chunks[root as usize + chunk].entries;
                entries_of[start..start + entries].fill(leaf);
            }
            return;
        }
        let mut chunk = root as usize + usize::from(bytes[0]);
        let mut depth = 1;
        // Entries at `depth` resolve bits 8*depth..8*depth+8.
        while len > 8 * (depth + 1) {
            let index = usize::from(bytes[depth]);
            let entry = self.chunks[chunk].entries[index];
            chunk = if entry & CHILD == 0 {
                let child = self.chunks.len();
                self.chunks.push(TableChunk {
                    entries: [entry; CHUNK_ENTRIES],
                });
                self.chunks[chunk].entries[index] = CHILD | (self.base + child as u32);
                child
            } else {
                ((entry & !CHILD) - self.base) as usize
            };
            depth += 1;
        }
        let span = 1usize << (8 * (depth + 1) - len);
        let start = usize::from(bytes[depth]);
        self.chunks[chunk].entries[start..start + span].fill(leaf);
    }

    /// The chunk index of the slot's first chunk in the map.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Every chunk of the slot's region that the table uses, roots first.
    pub fn chunks(&self) -> &[TableChunk] {
        &self.chunks
    }

    /// Child chunks used, besides the roots.
    pub fn child_chunks(&self) -> usize {
        self.chunks.len() - ROOT_CHUNKS as usize
    }

    /// The connector id whose longest prefix covers `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<u32> {
        walk(self.base, addr, |index| {
            let relative = index.checked_sub(self.base)?;
            self.chunks.get(relative as usize).copied()
        })
    }
}

/// Looks `addr` up the way the XDP program does, in the table of the slot
/// whose region starts at `base`, reading chunks by their index in the map
/// with `read`. A chunk `read` cannot produce reads as no connector, as in
/// the program.
pub fn walk(
    base: u32,
    addr: IpAddr,
    mut read: impl FnMut(u32) -> Option<TableChunk>,
) -> Option<u32> {
    let (bytes, root): (Vec<u8>, u32) = match addr {
        IpAddr::V4(addr) => (addr.octets().to_vec(), 0),
        IpAddr::V6(addr) => (addr.octets().to_vec(), V6_ROOTS),
    };
    let mut entry = read(base + root + u32::from(bytes[0]))?.entries[usize::from(bytes[1])];
    for &byte in &bytes[2..] {
        if entry & CHILD == 0 {
            break;
        }
        entry = read(entry & !CHILD)?.entries[usize::from(byte)];
    }
    (entry != NO_CONNECTOR && entry & CHILD == 0).then(|| entry - 1)
}

/// Child chunks `sources` compile to: one for every distinct run of
/// leading bytes, two bytes long or longer, that a longer prefix extends.
/// Counted without building the chunks.
pub fn chunks_needed<'a>(sources: impl IntoIterator<Item = &'a IpNet>) -> usize {
    let mut parents = std::collections::HashSet::new();
    for net in sources {
        let (bits, width): (u128, u32) = match net.network() {
            IpAddr::V4(addr) => (u128::from(u32::from(addr)), 32),
            IpAddr::V6(addr) => (u128::from(addr), 128),
        };
        let len = u32::from(net.prefix_len());
        // A prefix of `len` bits resolves in the chunk for its first
        // ceil(len / 8) - 1 bytes; every shorter run of two or more bytes
        // leads there through a chunk of its own.
        let mut bytes = 2;
        while 8 * bytes < len {
            let run = bits >> (width - 8 * bytes);
            parents.insert((width, bytes, run));
            bytes += 1;
        }
    }
    parents.len()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// The reference: the longest listed prefix that contains `addr`.
    fn longest_match(sources: &[(IpNet, u32)], addr: IpAddr) -> Option<u32> {
        sources
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|&(_, id)| id)
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("a prefix")
    }

    fn compile(sources: &[(IpNet, u32)], base: u32) -> Table {
        Table::compile(sources.iter().map(|(net, id)| (net, *id)), base, 1 << 20).expect("fits")
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_longest_prefix_wins_at_every_boundary() {
        let sources = [
            (net("0.0.0.0/0"), 9),
            (net("198.0.0.0/7"), 1),
            (net("198.51.0.0/16"), 2),
            (net("198.51.100.0/23"), 3),
            (net("198.51.100.0/24"), 4),
            (net("198.51.100.128/25"), 5),
            (net("198.51.100.200/32"), 6),
            (net("192.0.2.0/31"), 7),
        ];
        let table = compile(&sources, 0);
        for (addr, expected) in [
            ("198.51.100.200", Some(6)),
            ("198.51.100.201", Some(5)),
            ("198.51.100.127", Some(4)),
            ("198.51.101.1", Some(3)),
            ("198.51.102.1", Some(2)),
            ("199.1.1.1", Some(1)),
            ("192.0.2.1", Some(7)),
            ("192.0.2.2", Some(9)),
            ("8.8.8.8", Some(9)),
        ] {
            let addr: IpAddr = addr.parse().expect("an address");
            assert_eq!(table.lookup(addr), expected, "{addr}");
        }
        // /25 and /32 each need a chunk for their /24; the /23, /24 and
        // /31 one for their /16: 198.51 and 192.0 → 2, 198.51.100 and
        // 192.0.2 → 2.
        assert_eq!(table.child_chunks(), 4);
    }

    #[test]
    fn an_empty_table_matches_nothing() {
        let table = compile(&[], 0);
        assert_eq!(table.lookup(Ipv4Addr::new(192, 0, 2, 1).into()), None);
        assert_eq!(table.lookup(Ipv6Addr::LOCALHOST.into()), None);
        assert_eq!(table.child_chunks(), 0);
    }

    #[test]
    fn ipv6_prefixes_resolve_to_the_last_byte() {
        let sources = [
            (net("2001:db8::/32"), 1),
            (net("2001:db8:100::/48"), 2),
            (net("2001:db8:100::25/128"), 3),
            (net("2001:db8:200::/40"), 4),
            (net("2001::/15"), 5),
        ];
        let table = compile(&sources, 7000);
        for (addr, expected) in [
            ("2001:db8:100::25", Some(3)),
            ("2001:db8:100::26", Some(2)),
            ("2001:db8:101::1", Some(1)),
            ("2001:db8:2ff::1", Some(4)),
            ("2000::1", Some(5)),
            ("2001:db9::1", Some(5)),
            ("2002::1", None),
        ] {
            let addr: IpAddr = addr.parse().expect("an address");
            assert_eq!(table.lookup(addr), expected, "{addr}");
        }
        // Child indices carry the base.
        let root = &table.chunks()[(V6_ROOTS + 0x20) as usize];
        assert_eq!(root.entries[1] & !CHILD, 7000 + ROOT_CHUNKS);
    }

    #[test]
    fn a_full_pool_is_an_error_that_names_both_sizes() {
        let sources = [(net("198.51.100.1/32"), 0), (net("203.0.113.1/32"), 1)];
        let error = Table::compile(sources.iter().map(|(net, id)| (net, *id)), 0, 3)
            .expect_err("four chunks do not fit in three");
        assert_eq!(
            error,
            TableFull {
                needed: 4,
                capacity: 3
            }
        );
        assert_eq!(
            error.to_string(),
            "the policy's sources compile to 4 table chunks; the table holds 3 per policy \
             (raise it with --table-chunks)"
        );
        assert!(Table::compile(sources.iter().map(|(net, id)| (net, *id)), 0, 4).is_ok());
        assert_eq!(chunks_needed(sources.iter().map(|(net, _)| net)), 4);
    }

    /// Random policies against a linear longest-match scan: random
    /// prefixes of every length, clustered so that they overlap, and
    /// addresses both inside them (at their edges too) and anywhere.
    #[test]
    fn random_policies_agree_with_a_longest_match_scan() {
        let mut rng = Rng(0x5eed_0f7a_b1e5);
        for round in 0..200 {
            let v6 = round % 2 == 1;
            let count = 1 + (rng.next() % 60) as usize;
            let mut sources: Vec<(IpNet, u32)> = Vec::new();
            // A small pool of high bits so prefixes nest and collide.
            let anchor = rng.next();
            while sources.len() < count {
                let bits = rng.next();
                let net = if v6 {
                    let len = (rng.next() % 129) as u8;
                    let high = (u128::from(anchor) << 64) ^ u128::from(bits & 0xffff_0000);
                    let addr = high ^ (u128::from(rng.next()) << (rng.next() % 64));
                    IpNet::V6(ipnet::Ipv6Net::new_assert(Ipv6Addr::from(addr), len).trunc())
                } else {
                    let len = (rng.next() % 33) as u8;
                    let addr = ((anchor as u32) & 0xfff0_0000) ^ (bits as u32 & 0x000f_ffff);
                    IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::from(addr), len).trunc())
                };
                if sources.iter().all(|(seen, _)| *seen != net) {
                    let id = (rng.next() % 1024) as u32;
                    sources.push((net, id));
                }
            }
            let base = (rng.next() % 100_000) as u32;
            let table = compile(&sources, base);
            let mut probes: Vec<IpAddr> = Vec::new();
            for (net, _) in &sources {
                probes.push(net.network());
                probes.push(net.broadcast());
                let host = match net {
                    IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(
                        u32::from(net.network()) | (rng.next() as u32 & !u32::from(net.netmask())),
                    )),
                    IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
                        u128::from(net.network())
                            | (u128::from(rng.next()) & !u128::from(net.netmask())),
                    )),
                };
                probes.push(host);
            }
            for _ in 0..200 {
                probes.push(if v6 {
                    Ipv6Addr::from((u128::from(anchor) << 64) | u128::from(rng.next())).into()
                } else {
                    Ipv4Addr::from(rng.next() as u32).into()
                });
            }
            for addr in probes {
                assert_eq!(
                    table.lookup(addr),
                    longest_match(&sources, addr),
                    "round {round}: {addr} in {sources:?}"
                );
            }
        }
    }
}
