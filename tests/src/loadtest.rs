//! The pieces of `cargo xtask loadtest` (the `gatekeeper-loadtest`
//! binary): the flood the generator sends, the policy gatekeeper and
//! nftables enforce against it, the template frame, the legitimate client,
//! and a guard for each thing a setup changes on the gateway, undone on
//! drop.
//!
//! Every address that goes on a link is in a documentation range: the link
//! is 192.0.2.0/24 (gateway 192.0.2.1, client 192.0.2.100), allowed flood
//! sources come from 198.51.100.0/25, denied ones from 203.0.113.0/24 and
//! 198.51.100.128/25.

use std::{
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use gatekeeper::{
    generator::Flood,
    policy::{Connector, Mode, Policy},
};
use gatekeeper_common::generator::FRAME_LEN;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    frames::{Frame, TcpSeg},
    netns::Namespace,
};

/// The gateway's address on the link, the one the flood is sent to.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The gateway's end of the link.
pub const GATEWAY_CIDR: &str = "192.0.2.1/24";
/// The legitimate client's address: the internet side's only address, so
/// its connections leave from it without binding.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The internet side's end of the link.
pub const CLIENT_CIDR: &str = "192.0.2.100/24";
/// The gated port.
pub const SMTP_PORT: u16 = 25;

/// Frames per thousand whose source is allowed.
pub const ALLOWED_PER_MILLE: u32 = 100;

/// The range allowed flood sources come from; the policy splits it.
pub const ALLOWED_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 25);
/// The ranges denied flood sources come from: no connector covers them.
pub const DENIED_V4: [Ipv4Net; 2] = [
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 128), 25),
];

/// The IPv6 part of the flood connector, never sent to (the flood is
/// IPv4): it makes the policy's IPv6 side, and nftables' IPv6 set, more
/// than trivial.
const CONNECTOR_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0), 40);

/// The connector of the flood's allowed share.
pub const FLOOD_CONNECTOR: &str = "flood-senders";
/// The connector of the legitimate client.
pub const CLIENT_CONNECTOR: &str = "client";

/// What the generator sends: [`ALLOWED_PER_MILLE`] from [`ALLOWED_V4`],
/// the rest from [`DENIED_V4`].
pub fn flood() -> Flood {
    Flood {
        allowed_per_mille: ALLOWED_PER_MILLE,
        allowed: vec![ALLOWED_V4],
        denied: DENIED_V4.to_vec(),
    }
}

/// The policy under test, in enforce mode on port 25. The flood's allowed
/// range is split so that lookups go the whole depth of the table: its
/// first half as 64 /32s, the next quarter as 8 /30s, the last quarter as
/// 2 /28s. The connector also holds [`CONNECTOR_V6`] as /52s, 4,096 of
/// them (16 with `quick`). The client has a connector of its own.
pub fn policy(quick: bool) -> Policy {
    let base = u32::from(ALLOWED_V4.network());
    let split = |offset: u32, count: u32, len: u8| {
        let step = 1 << (32 - u32::from(len));
        (0..count).map(move |i| {
            IpNet::V4(Ipv4Net::new_assert(
                Ipv4Addr::from(base + offset + i * step),
                len,
            ))
        })
    };
    let mut sources: Vec<IpNet> = split(0, 64, 32)
        .chain(split(64, 8, 30))
        .chain(split(96, 2, 28))
        .collect();
    let v6_count: u128 = if quick { 16 } else { 4096 };
    let v6_base = u128::from(CONNECTOR_V6.network());
    sources.extend((0..v6_count).map(|i| {
        IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::from(v6_base | (i << (128 - 52))),
            52,
        ))
    }));
    Policy {
        mode: Mode::Enforce,
        ports: vec![SMTP_PORT],
        destinations: Vec::new(),
        connectors: vec![
            Connector {
                name: FLOOD_CONNECTOR.to_owned(),
                sources,
            },
            Connector {
                name: CLIENT_CONNECTOR.to_owned(),
                sources: vec![IpNet::V4(Ipv4Net::new_assert(CLIENT, 32))],
            },
        ],
    }
}

/// `policy` as a policy file, the text `gatekeeper run --policy` reads.
pub fn policy_file_text(policy: &Policy) -> String {
    let quoted = |nets: &[IpNet]| {
        nets.iter()
            .map(|net| format!("\"{net}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ports = policy
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "# Written by gatekeeper-loadtest.\nmode = \"{}\"\nports = [{ports}]\ndestinations = [{}]\n",
        policy.mode,
        quoted(&policy.destinations),
    );
    for connector in &policy.connectors {
        let _ = write!(
            text,
            "\n[[connector]]\nname = \"{}\"\nsources = [{}]\n",
            connector.name,
            quoted(&connector.sources),
        );
    }
    text
}

/// The frame the generator rewrites: Ethernet from `src_mac` to `dst_mac`,
/// IPv4 to [`GATEWAY`] with DF set, a TCP SYN to port 25 with an MSS option.
/// The source address, source port, sequence number and checksums are
/// placeholders the generator overwrites.
pub fn template(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    const MSS_1460: [u8; 4] = [2, 4, 0x05, 0xb4];
    let frame = Frame::ipv4(ALLOWED_V4.network(), GATEWAY)
        .src_mac(src_mac)
        .dst_mac(dst_mac)
        .dont_fragment()
        .tcp(TcpSeg::syn(40000, SMTP_PORT).options(&MSS_1460))
        .build();
    assert_eq!(frame.len(), FRAME_LEN, "the generator rewrites one layout");
    frame
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Why a setup could not be put in place or measured.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A command could not be started.
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A command's output did not say what was expected.
    #[error("`{command}` printed no {what}:\n{output}")]
    Output {
        /// The command line.
        command: String,
        /// What was looked for.
        what: &'static str,
        /// What it printed.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{what} {path}")]
    File {
        /// Reading or writing.
        what: &'static str,
        /// The file.
        path: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Something else is in the way, and the load test leaves it alone.
    #[error("{0}")]
    InTheWay(String),
}

/// The command line of `command`, for messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command`, feeding it `input`, and returns its standard output;
/// fails unless it exits with status 0.
pub fn output(command: &mut Command, input: Option<&str>) -> Result<String, SetupError> {
    let line = describe(command);
    let result = captured(command, input)?;
    if !result.status.success() {
        return Err(SetupError::Failed {
            command: line,
            status: result.status,
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

/// Runs `command`, feeding it `input`, and returns how it ended and what
/// it printed, whatever its status.
fn captured(command: &mut Command, input: Option<&str>) -> Result<Output, SetupError> {
    let line = describe(command);
    let spawn_error = |source| SetupError::Spawn {
        command: line.clone(),
        source,
    };
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits early closes its end: its status says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait_with_output().map_err(spawn_error)
}

/// `nsenter --net=...`: the namespace's network, the host's mounts, so
/// that bpffs pins land on the host's /sys/fs/bpf.
fn in_network_of(namespace: &Namespace, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", namespace.name()))
        .arg(program);
    command
}

/// The ruleset of the nftables setup: on `device`'s ingress hook (netdev
/// family, before the IP stack), drop TCP SYNs without ACK to port 25 whose
/// source is in no prefix of `policy`. Two named counters count every frame
/// the chain sees and every frame it drops.
pub fn nft_ruleset(table: &str, policy: &Policy, device: &str) -> String {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for source in policy.connectors.iter().flat_map(|c| &c.sources) {
        match source {
            IpNet::V4(net) => v4.push(net.to_string()),
            IpNet::V6(net) => v6.push(net.to_string()),
        }
    }
    let port = policy.ports.first().copied().unwrap_or(SMTP_PORT);
    let mut ruleset = String::new();
    let _ = write!(
        ruleset,
        "table netdev {table} {{\n\
         \tcounter seen {{ }}\n\
         \tcounter dropped {{ }}\n\
         \tset connectors_v4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n\
         \tset connectors_v6 {{ type ipv6_addr; flags interval; elements = {{ {} }} }}\n\
         \tchain gate {{\n\
         \t\ttype filter hook ingress device \"{device}\" priority 0; policy accept;\n\
         \t\tcounter name \"seen\"\n\
         \t\tip saddr != @connectors_v4 tcp dport {port} tcp flags & (syn | ack) == syn \
         counter name \"dropped\" drop\n\
         \t\tip6 saddr != @connectors_v6 tcp dport {port} tcp flags & (syn | ack) == syn \
         counter name \"dropped\" drop\n\
         \t}}\n\
         }}\n",
        v4.join(", "),
        v6.join(", "),
    );
    ruleset
}

/// An nftables table in a namespace, deleted on drop.
#[derive(Debug)]
pub struct NftTable<'a> {
    namespace: &'a Namespace,
    name: String,
}

impl<'a> NftTable<'a> {
    /// Loads `ruleset`, which must create the netdev table `name`, in
    /// `namespace`.
    ///
    /// # Errors
    ///
    /// `nft` refused the ruleset or is not installed.
    pub fn create(namespace: &'a Namespace, name: &str, ruleset: &str) -> Result<Self, SetupError> {
        output(namespace.command("nft").args(["-f", "-"]), Some(ruleset))?;
        Ok(Self {
            namespace,
            name: name.to_owned(),
        })
    }

    /// The packets counted by the named counters `seen` and `dropped`.
    ///
    /// # Errors
    ///
    /// `nft` failed or printed something else.
    pub fn counters(&self) -> Result<(u64, u64), SetupError> {
        let mut command = self.namespace.command("nft");
        command.args(["-j", "list", "counters", "table", "netdev", &self.name]);
        let text = output(&mut command, None)?;
        let missing = |what| SetupError::Output {
            command: describe(&command),
            what,
            output: text.clone(),
        };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| missing("JSON"))?;
        let packets = |name: &str| {
            json["nftables"]
                .as_array()?
                .iter()
                .find(|item| item["counter"]["name"] == name)?["counter"]["packets"]
                .as_u64()
        };
        let seen = packets("seen").ok_or_else(|| missing("counter `seen`"))?;
        let dropped = packets("dropped").ok_or_else(|| missing("counter `dropped`"))?;
        Ok((seen, dropped))
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = self
            .namespace
            .command("nft")
            .args(["delete", "table", "netdev", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where xdp-filter pins its maps, and libxdp its dispatchers: on the
/// host's bpffs, shared by every network namespace.
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";
const LIBXDP_PINS: &str = "/sys/fs/bpf/xdp";

/// xdp-filter (xdp-tools) loaded on an interface in a namespace, dropping
/// TCP to one destination port; unloaded on drop.
#[derive(Debug)]
pub struct XdpFilter<'a> {
    namespace: &'a Namespace,
    interface: String,
    libxdp_dir_was_there: bool,
}

/// What `xdp-filter status` counts: its own per-action statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpFilterCounts {
    /// Frames passed.
    pub pass: u64,
    /// Frames dropped.
    pub drop: u64,
    /// Frames aborted.
    pub aborted: u64,
}

impl<'a> XdpFilter<'a> {
    /// `xdp-filter load --mode native --features tcp IFACE`, then `xdp-filter
    /// port --proto tcp --mode dst PORT`: every TCP segment to `port` is
    /// dropped, SYN or not, whatever its source (xdp-filter has no
    /// allowlist). `tcp` is the fewest features that rule needs, which makes
    /// the fastest of xdp-filter's programs.
    ///
    /// # Errors
    ///
    /// Another xdp-filter is loaded on this host (the load test does not
    /// share its pins), or a command failed.
    pub fn load(namespace: &'a Namespace, interface: &str, port: u16) -> Result<Self, SetupError> {
        if Path::new(XDP_FILTER_PINS).exists() {
            return Err(SetupError::InTheWay(format!(
                "{XDP_FILTER_PINS} exists: xdp-filter is in use on this host, and the load \
                 test does not share its pins; see `xdp-filter status`"
            )));
        }
        let guard = Self {
            namespace,
            interface: interface.to_owned(),
            libxdp_dir_was_there: Path::new(LIBXDP_PINS).exists(),
        };
        output(
            in_network_of(namespace, "xdp-filter").args([
                "load",
                "--mode",
                "native",
                "--features",
                "tcp",
                interface,
            ]),
            None,
        )?;
        output(
            in_network_of(namespace, "xdp-filter").args([
                "port",
                "--proto",
                "tcp",
                "--mode",
                "dst",
                &port.to_string(),
            ]),
            None,
        )?;
        Ok(guard)
    }

    /// `xdp-filter status`: its aggregate per-action statistics.
    ///
    /// # Errors
    ///
    /// The command failed or printed no statistics.
    pub fn counts(&self) -> Result<XdpFilterCounts, SetupError> {
        let mut command = in_network_of(self.namespace, "xdp-filter");
        command.arg("status");
        // xdp-tools 1.3.1's `status` exits with 254 after printing its
        // report in full: the report, not the status, says whether it read
        // the statistics.
        let result = captured(&mut command, None)?;
        let text = String::from_utf8_lossy(&result.stdout).into_owned();
        let count = |action: &str| {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(action))
                    .then(|| words.next()?.parse::<u64>().ok())
                    .flatten()
            })
        };
        let (Some(pass), Some(drop), Some(aborted)) =
            (count("XDP_PASS"), count("XDP_DROP"), count("XDP_ABORTED"))
        else {
            return Err(SetupError::Output {
                command: describe(&command),
                what: "per-action statistics",
                output: format!(
                    "{text}(exit status {}; stderr: {})",
                    result.status,
                    String::from_utf8_lossy(&result.stderr).trim()
                ),
            });
        };
        Ok(XdpFilterCounts {
            pass,
            drop,
            aborted,
        })
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let unloaded = in_network_of(self.namespace, "xdp-filter")
            .args(["unload", &self.interface])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !unloaded {
            // Detach whatever is there; the pins are removed below.
            let _ = self
                .namespace
                .command("ip")
                .args(["link", "set", "dev", &self.interface, "xdp", "off"])
                .status();
        }
        // The load test checked that no xdp-filter was loaded before it.
        let _ = std::fs::remove_dir_all(XDP_FILTER_PINS);
        if !self.libxdp_dir_was_there {
            // Only when empty: anything else in it is someone else's.
            let _ = std::fs::remove_dir(LIBXDP_PINS);
        }
    }
}

/// The sysctl that makes the kernel time every BPF program run.
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while it lives; the value it had before is
/// restored on drop.
#[derive(Debug)]
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    /// Turns the statistics on.
    ///
    /// # Errors
    ///
    /// The sysctl cannot be read or written.
    pub fn enable() -> Result<Self, SetupError> {
        let file_error = |what| {
            move |source| SetupError::File {
                what,
                path: BPF_STATS_SYSCTL.to_owned(),
                source,
            }
        };
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL).map_err(file_error("reading"))?;
        std::fs::write(BPF_STATS_SYSCTL, "1").map_err(file_error("writing"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS_SYSCTL, &self.previous);
    }
}

/// The id of the XDP program attached to `interface` in `namespace`, as
/// `ip -j link` reports it.
///
/// # Errors
///
/// `ip` failed, or no program is attached.
pub fn attached_program_id(namespace: &Namespace, interface: &str) -> Result<u32, SetupError> {
    let mut command = namespace.command("ip");
    command.args(["-j", "link", "show", "dev", interface]);
    let text = output(&mut command, None)?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let xdp = &json[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
        .ok_or(SetupError::Output {
            command: describe(&command),
            what: "attached XDP program",
            output: text,
        })
}

/// Run time and run count of the program with id `id`, from the kernel's
/// BPF statistics (zero unless [`BpfStats`] is on).
///
/// # Errors
///
/// No loaded program has that id.
pub fn program_stats(id: u32) -> Result<(Duration, u64), SetupError> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .map(|info| (info.run_time(), info.run_count()))
        .ok_or_else(|| SetupError::InTheWay(format!("no loaded BPF program has id {id}")))
}

/// A veth end's counters: `ip -s link` totals and the driver's own
/// per-queue XDP counters (`ethtool -S`), summed over queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethCounters {
    /// `rx_packets`: every frame received, through XDP or not.
    pub rx_packets: u64,
    /// `rx_dropped`.
    pub rx_dropped: u64,
    /// `rx_queue_N_xdp_packets`: frames the receive path took off its ring.
    pub xdp_packets: u64,
    /// `rx_queue_N_xdp_drops`: frames its XDP program dropped.
    pub xdp_drops: u64,
    /// `tx_queue_N_xdp_xmit`: frames sent into the peer's ring with
    /// `ndo_xdp_xmit` (by XDP_TX or XDP_REDIRECT on this end).
    pub xdp_xmit: u64,
    /// `tx_queue_N_xdp_xmit_errors`: frames the peer's ring could not take.
    pub xdp_xmit_errors: u64,
}

impl VethCounters {
    /// Reads them for `interface` in `namespace`.
    ///
    /// # Errors
    ///
    /// `ip` or `ethtool` failed or printed something else.
    pub fn read(namespace: &Namespace, interface: &str) -> Result<Self, SetupError> {
        let mut ip = namespace.command("ip");
        ip.args(["-j", "-s", "link", "show", "dev", interface]);
        let text = output(&mut ip, None)?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let rx = &json[0]["stats64"]["rx"];
        let (Some(rx_packets), Some(rx_dropped)) = (rx["packets"].as_u64(), rx["dropped"].as_u64())
        else {
            return Err(SetupError::Output {
                command: describe(&ip),
                what: "stats64 rx packets and dropped",
                output: text,
            });
        };

        let mut ethtool = namespace.command("ethtool");
        ethtool.args(["-S", interface]);
        let text = output(&mut ethtool, None)?;
        let mut counters = Self {
            rx_packets,
            rx_dropped,
            ..Self::default()
        };
        let mut found = false;
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            let Some(field) = name.split_once("_queue_").map(|(_, rest)| rest) else {
                continue;
            };
            // "0_xdp_packets" and so on: the queue number, then the name.
            let Some((_, stat)) = field.split_once('_') else {
                continue;
            };
            let slot = match (name.starts_with("rx"), stat) {
                (true, "xdp_packets") => &mut counters.xdp_packets,
                (true, "xdp_drops") => &mut counters.xdp_drops,
                (false, "xdp_xmit") => &mut counters.xdp_xmit,
                (false, "xdp_xmit_errors") => &mut counters.xdp_xmit_errors,
                _ => continue,
            };
            *slot += value;
            found = true;
        }
        if !found {
            return Err(SetupError::Output {
                command: describe(&ethtool),
                what: "per-queue XDP counters",
                output: text,
            });
        }
        Ok(counters)
    }

    /// The counters that grew from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            rx_packets: self.rx_packets.wrapping_sub(earlier.rx_packets),
            rx_dropped: self.rx_dropped.wrapping_sub(earlier.rx_dropped),
            xdp_packets: self.xdp_packets.wrapping_sub(earlier.xdp_packets),
            xdp_drops: self.xdp_drops.wrapping_sub(earlier.xdp_drops),
            xdp_xmit: self.xdp_xmit.wrapping_sub(earlier.xdp_xmit),
            xdp_xmit_errors: self.xdp_xmit_errors.wrapping_sub(earlier.xdp_xmit_errors),
        }
    }
}

/// Turns generic receive offload on for `interface`: a veth end without an
/// XDP program takes frames redirected into it (the generator's XDP_TX)
/// only when GRO is on, which starts its NAPI receive path.
///
/// # Errors
///
/// `ethtool` failed.
pub fn enable_gro(namespace: &Namespace, interface: &str) -> Result<(), SetupError> {
    output(
        namespace
            .command("ethtool")
            .args(["-K", interface, "gro", "on"]),
        None,
    )
    .map(drop)
}

/// How often the client starts a connection, and how long it waits.
pub const CLIENT_INTERVAL: Duration = Duration::from_millis(20);
/// How long the client waits for the handshake and then for the banner.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the legitimate client saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientReport {
    /// Connections started.
    pub attempts: u64,
    /// Connections that were made and read a `220` banner.
    pub succeeded: u64,
    /// Handshakes that did not finish within [`CLIENT_TIMEOUT`].
    pub timed_out: u64,
    /// Every other failure: refused, reset, no banner in time.
    pub failed: u64,
    /// Handshake times of the connections made, sorted.
    pub connect_times: Vec<Duration>,
}

impl ClientReport {
    /// The `q` quantile (0 to 1) of the handshake times, nearest rank;
    /// `None` when no connection was made.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.connect_times.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.connect_times[rank - 1])
    }
}

/// Connects to `server` every [`CLIENT_INTERVAL`] until `stop` is set,
/// each time waiting up to [`CLIENT_TIMEOUT`] for the handshake and again
/// for the banner. Runs on the calling thread, in its namespace.
pub fn run_client(server: SocketAddr, stop: &AtomicBool) -> ClientReport {
    let mut report = ClientReport::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        report.attempts += 1;
        match TcpStream::connect_timeout(&server, CLIENT_TIMEOUT) {
            Ok(mut stream) => {
                let connected = started.elapsed();
                let mut banner = [0; 64];
                let read = stream
                    .set_read_timeout(Some(CLIENT_TIMEOUT))
                    .and_then(|()| stream.read(&mut banner));
                match read {
                    Ok(n) if banner[..n].starts_with(b"220") => {
                        report.succeeded += 1;
                        report.connect_times.push(connected);
                    }
                    _ => report.failed += 1,
                }
            }
            Err(error) if error.kind() == io::ErrorKind::TimedOut => report.timed_out += 1,
            Err(_) => report.failed += 1,
        }
        let next = started + CLIENT_INTERVAL;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    report.connect_times.sort();
    report
}

/// The client's target: the gateway's SMTP port.
pub fn smtp_server() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(GATEWAY), SMTP_PORT)
}

/// Where pktgen lives when the kernel has it.
pub const PKTGEN_PROC: &str = "/proc/net/pktgen";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_full_only() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:01\n"),
            Some([2, 0, 0x5e, 0x10, 0, 1])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:01"), None);
    }

    #[test]
    fn the_policy_covers_the_allowed_range_and_nothing_denied() {
        let policy = policy(true);
        let covers = |addr: Ipv4Addr| {
            policy
                .connectors
                .iter()
                .flat_map(|c| &c.sources)
                .any(|net| net.contains(&IpAddr::V4(addr)))
        };
        for host in ALLOWED_V4
            .hosts()
            .chain([ALLOWED_V4.network(), ALLOWED_V4.broadcast()])
        {
            assert!(covers(host), "{host} is in the allowed share");
        }
        for net in DENIED_V4 {
            for host in net.hosts() {
                assert!(!covers(host), "{host} is in the denied share");
            }
        }
        assert!(covers(CLIENT));
        assert_eq!(policy.source_counts(), (64 + 8 + 2 + 1, 16));
    }

    #[test]
    fn the_policy_file_reads_back_as_the_same_policy() {
        let policy = policy(true);
        let text = policy_file_text(&policy);
        let parsed = Policy::parse(
            &text,
            "<load test>",
            gatekeeper::policy::LoadOptions::default(),
        )
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(parsed, policy);
    }

    #[test]
    fn the_ruleset_lists_every_prefix_once() {
        let policy = policy(true);
        let ruleset = nft_ruleset("t", &policy, "gk-gw");
        assert!(ruleset.contains("198.51.100.63/32, 198.51.100.64/30"));
        assert!(ruleset.contains("192.0.2.100/32"));
        assert!(ruleset.contains("2001:db8:100::/52, 2001:db8:100:1000::/52"));
        assert_eq!(ruleset.matches("counter name \"dropped\" drop").count(), 2);
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let report = ClientReport {
            connect_times: (1..=100).map(Duration::from_millis).collect(),
            ..ClientReport::default()
        };
        assert_eq!(report.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(report.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(ClientReport::default().quantile(0.5), None);
    }
}
