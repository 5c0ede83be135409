//! Network namespaces, veth pairs and background processes for tests, each
//! owned by a guard that removes it when dropped, also when a test panics.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Runs `ip` with `args`, panicking with its output on failure.
#[track_caller]
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running ip {args:?}: {error}"));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace that is deleted, with every link in it, on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates a namespace named after `role`, this process and a counter,
    /// so that concurrent test runs never collide, with loopback up.
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("gk-{role}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let namespace = Self { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection on the links made later, link-local
        // addresses included: until it finishes, neighbour discovery for a
        // new link can stall the first IPv6 connections.
        namespace.run(|| {
            for scope in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{scope}/accept_dad");
                std::fs::write(&path, "0").unwrap_or_else(|e| panic!("writing {path}: {e}"));
            }
        });
        namespace
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args`.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// The MAC address of `link` in this namespace.
    pub fn mac(&self, link: &str) -> String {
        let path = format!("/sys/class/net/{link}/address");
        let output = self
            .command("cat")
            .arg(&path)
            .output()
            .unwrap_or_else(|error| panic!("reading {path}: {error}"));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `f` on a thread that has entered the namespace, so sockets it
    /// creates belong to the namespace, and returns what `f` returns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Like [`Namespace::run`], for an `f` that borrows from the caller:
    /// attaching a program the caller owns to a link in the namespace, say.
    pub fn run_scoped<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&path);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves the calling thread into the namespace for the rest of its life:
    /// for threads spawned to work there, such as a traffic generator.
    pub fn enter(&self) {
        enter(&self.path());
    }

    /// The namespace's file, for [`enter`] from a thread that cannot
    /// borrow the namespace.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|error| panic!("opening {path}: {error}"));
    // SAFETY: setns on a valid namespace descriptor only changes the calling
    // thread's network namespace.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "setns into {path}: {}",
        std::io::Error::last_os_error()
    );
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `outside` (the internet side) and
/// `gateway`, with the given addresses on each end.
#[derive(Debug)]
pub struct Link {
    /// The internet side.
    pub outside: Namespace,
    /// The gateway side.
    pub gateway: Namespace,
    /// The veth end in `outside`.
    pub outside_if: String,
    /// The veth end in `gateway`.
    pub gateway_if: String,
}

impl Link {
    /// Creates both namespaces and the veth pair, brings it up and assigns
    /// `outside_addrs` and `gateway_addrs` (CIDR strings, IPv6 without DAD).
    pub fn new(outside_addrs: &[&str], gateway_addrs: &[&str]) -> Self {
        let outside = Namespace::new("out");
        let gateway = Namespace::new("gw");
        let outside_if = "gk-out".to_owned();
        let gateway_if = "gk-gw".to_owned();
        // Created inside `outside`, so the pair never appears in the test
        // runner's own namespace.
        outside.ip(&[
            "link",
            "add",
            &outside_if,
            "type",
            "veth",
            "peer",
            "name",
            &gateway_if,
            "netns",
            gateway.name(),
        ]);
        for (namespace, link) in [(&outside, &outside_if), (&gateway, &gateway_if)] {
            namespace.ip(&["link", "set", link, "up"]);
        }
        let link = Self {
            outside,
            gateway,
            outside_if,
            gateway_if,
        };
        link.configure(
            &link.outside_if,
            &link.gateway_if,
            outside_addrs,
            gateway_addrs,
        );
        link
    }

    /// Like [`Link::new`], with the addresses on a VLAN device (tag `vid`)
    /// on each veth end instead of on the veth ends themselves, so every
    /// frame between them carries an 802.1Q tag. `None` when the kernel has
    /// no VLAN support (`CONFIG_VLAN_8021Q`).
    pub fn with_vlan(vid: u16, outside_addrs: &[&str], gateway_addrs: &[&str]) -> Option<Self> {
        let link = Self::new(&[], &[]);
        let probe = Command::new("ip")
            .args([
                "-n",
                link.outside.name(),
                "link",
                "add",
                "link",
                &link.outside_if,
            ])
            .args(["name", "gk-vlan-probe", "type", "vlan", "id", "1"])
            .output()
            .expect("running ip");
        if !probe.status.success() {
            return None;
        }
        link.outside.ip(&["link", "del", "gk-vlan-probe"]);
        let vid = vid.to_string();
        let outside_vlan = format!("{}-v", link.outside_if);
        let gateway_vlan = format!("{}-v", link.gateway_if);
        for (namespace, parent, vlan) in [
            (&link.outside, &link.outside_if, &outside_vlan),
            (&link.gateway, &link.gateway_if, &gateway_vlan),
        ] {
            namespace.ip(&[
                "link", "add", "link", parent, "name", vlan, "type", "vlan", "id", &vid,
            ]);
            namespace.ip(&["link", "set", vlan, "up"]);
        }
        link.configure(&outside_vlan, &gateway_vlan, outside_addrs, gateway_addrs);
        Some(link)
    }

    /// Puts the addresses on `outside_dev` and `gateway_dev`, with permanent
    /// neighbour entries for each other: right after a veth pair comes up,
    /// the first neighbour solicitations can go unanswered, and a test's
    /// first IPv6 connection would wait a second for the retry.
    fn configure(
        &self,
        outside_dev: &str,
        gateway_dev: &str,
        outside_addrs: &[&str],
        gateway_addrs: &[&str],
    ) {
        for (namespace, dev, addrs) in [
            (&self.outside, outside_dev, outside_addrs),
            (&self.gateway, gateway_dev, gateway_addrs),
        ] {
            for addr in addrs {
                if addr.contains(':') {
                    namespace.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
                } else {
                    namespace.ip(&["addr", "add", addr, "dev", dev]);
                }
            }
        }
        let outside_mac = self.outside.mac(outside_dev);
        let gateway_mac = self.gateway.mac(gateway_dev);
        for (namespace, dev, peer_addrs, peer_mac) in [
            (&self.outside, outside_dev, gateway_addrs, &gateway_mac),
            (&self.gateway, gateway_dev, outside_addrs, &outside_mac),
        ] {
            for addr in peer_addrs {
                let addr = addr.split('/').next().unwrap_or(addr);
                namespace.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
    }
}

/// A child process that is killed and reaped on drop.
#[derive(Debug)]
pub struct Background {
    child: Child,
}

impl Background {
    /// Starts `command` with its stderr piped and waits until a stderr line
    /// contains `ready`, panicking after `timeout`.
    pub fn start(mut command: Command, ready: &str, timeout: Duration) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let guard = Self { child };

        let (sender, receiver) = std::sync::mpsc::channel();
        let ready = ready.to_owned();
        thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = sender.send(Ok(()));
                    // Keep draining so the child never blocks on a full pipe.
                    continue;
                }
                seen.push(line);
            }
            let _ = sender.send(Err(seen.join("\n")));
        });
        let deadline = Instant::now() + timeout;
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => guard,
            Ok(Err(output)) => panic!("{command:?} exited before it was ready:\n{output}"),
            Err(_) => panic!("{command:?} was not ready within {timeout:?}"),
        }
    }

    /// Stops the process with SIGINT (so it can flush what it holds) and
    /// waits for it.
    pub fn interrupt(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit pid_t");
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
