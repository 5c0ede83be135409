//! A gateway in a network namespace for end-to-end tests: a veth pair to an
//! "internet" namespace, an SMTP listener, and `gatekeeper run` attached to
//! the gateway's end, each removed when the test ends, also on failure.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    netns::Link,
    support::{gatekeeper_bin, require_root},
};

/// The policy most live tests run: enforce mode, port 25, one connector
/// holding the internet side's first address of each family.
pub const ENFORCE_POLICY: &str = r#"
mode = "enforce"
ports = [25]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]
"#;

/// A policy file in a scratch directory of its own, removed on drop.
pub struct PolicyFile {
    dir: PathBuf,
    path: PathBuf,
}

impl PolicyFile {
    /// Writes `text` as a new policy file.
    pub fn new(text: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gk-policy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the policy directory");
        let file = Self {
            path: dir.join("policy.toml"),
            dir,
        };
        file.replace(text);
        file
    }

    /// Replaces the file the way editors save: write a new file, rename it
    /// over the old one.
    pub fn replace(&self, text: &str) {
        let next = self.dir.join(".policy.toml.new");
        std::fs::write(&next, text).expect("writing the new policy");
        std::fs::rename(&next, &self.path).expect("renaming the new policy into place");
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The banner the listener greets every client with.
pub const BANNER: &str = "220 gateway.example ESMTP\r\n";

/// Addresses of the internet side: one inside the test policies' connector,
/// one outside it, for each family.
pub const OUTSIDE_ADDRS: [&str; 4] = [
    "198.51.100.7/24",
    "203.0.113.9/24",
    "2001:db8:100::7/64",
    "2001:db8:bad::9/64",
];

/// The gateway's addresses on the same subnets.
pub const GATEWAY_ADDRS: [&str; 4] = [
    "198.51.100.1/24",
    "203.0.113.1/24",
    "2001:db8:100::1/64",
    "2001:db8:bad::1/64",
];

/// Where a client on the internet side connects to leave from its address
/// inside the test policies' connector ([`OUTSIDE_ADDRS`] and
/// [`GATEWAY_ADDRS`] share a subnet per source), for each family.
pub const ALLOWED_V4: &str = "198.51.100.1:25";
/// See [`ALLOWED_V4`].
pub const ALLOWED_V6: &str = "[2001:db8:100::1]:25";
/// Where a client connects to leave from its address outside every
/// connector.
pub const STRANGER_V4: &str = "203.0.113.1:25";
/// See [`STRANGER_V4`].
pub const STRANGER_V6: &str = "[2001:db8:bad::1]:25";

/// How long a client waits for a handshake. Shorter than TCP's initial
/// retransmission timeout (1 s), so each refused attempt sends exactly one
/// SYN and the counters can be checked exactly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);

/// An SMTP listener on port 25 of every gateway address, answering each
/// connection with [`BANNER`]; stopped on drop.
pub struct SmtpListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpListener {
    /// Starts listening inside `link`'s gateway namespace.
    pub fn start(link: &Link) -> Self {
        let listener = link.gateway.run(|| {
            let listener = TcpListener::bind("[::]:25").expect("binding port 25");
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            listener
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(BANNER.as_bytes());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SmtpListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from the internet side to `server` and reads the banner;
/// `Err` with the reason when no connection is made.
pub fn smtp_connect(link: &Link, server: &str) -> Result<String, String> {
    let server: SocketAddr = server.parse().expect("a socket address");
    link.outside.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut banner = String::new();
        stream
            .read_to_string(&mut banner)
            .map_err(|e| e.to_string())?;
        Ok(banner)
    })
}

/// A veth pair between an internet side with [`OUTSIDE_ADDRS`] and a
/// gateway with [`GATEWAY_ADDRS`] and an SMTP listener.
pub fn gateway() -> (Link, SmtpListener) {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    let listener = SmtpListener::start(&link);
    (link, listener)
}

/// Panics unless a client connecting to `server` reads the banner.
#[track_caller]
pub fn assert_admitted(link: &Link, server: &str) {
    assert_eq!(
        smtp_connect(link, server).as_deref(),
        Ok(BANNER),
        "a client connecting to {server} should read the banner"
    );
}

/// Panics unless a client connecting to `server` gets no connection.
#[track_caller]
pub fn assert_refused(link: &Link, server: &str) {
    let result = smtp_connect(link, server);
    assert!(
        result.is_err(),
        "a client connecting to {server} should get no SYN-ACK, got {result:?}"
    );
}

/// Detaches whatever is pinned in the directory when dropped: for a test
/// whose runs leave their program attached, or fail half way.
pub struct Pins(pub PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        cleanup_pins(&self.0);
    }
}

/// A pin directory of its own for one test, on the host's bpffs.
pub fn pin_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/sys/fs/bpf/gk-test-{}-{n}", std::process::id()))
}

/// `gatekeeper run` attached to the gateway's veth end. On drop it is
/// stopped with SIGTERM, and whatever it left pinned is detached.
pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// Detached on drop; `None` once the test chose to keep the pins.
    pin_dir: Option<PathBuf>,
}

impl Daemon {
    /// Starts `gatekeeper run` in the gateway namespace (entering only the
    /// network namespace, so it pins on the host's bpffs) and waits until it
    /// says it is running.
    pub fn start(link: &Link, policy: &Path, pin_dir: &Path, extra: &[&str]) -> Self {
        let child = spawn_run(link, policy, pin_dir, extra);
        let mut daemon = Self::watch(child, pin_dir);
        daemon.wait_for_log("gatekeeper running", Duration::from_secs(20));
        daemon
    }

    /// Runs `gatekeeper run` and returns how it ended; for starts that must
    /// fail.
    pub fn start_expecting_failure(
        link: &Link,
        policy: &Path,
        pin_dir: &Path,
        extra: &[&str],
    ) -> Output {
        let mut child = spawn_run(link, policy, pin_dir, extra);
        // A run that hangs instead of failing must fail the test, not hang
        // the suite.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("polling gatekeeper run").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child
                    .wait_with_output()
                    .expect("waiting for gatekeeper run");
                panic!(
                    "gatekeeper run was expected to fail but still ran after 60 s:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        child
            .wait_with_output()
            .expect("waiting for gatekeeper run")
    }

    fn watch(mut child: Child, pin_dir: &Path) -> Self {
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log lock").push(line);
            }
        });
        Self {
            child: Some(child),
            log,
            pin_dir: Some(pin_dir.to_owned()),
        }
    }

    /// Waits until `count` log lines contain `needle`; panics with the log
    /// after `timeout`.
    pub fn wait_for_logs(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .filter(|line| line.contains(needle))
                .count();
            if seen >= count {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "gatekeeper run exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gatekeeper run did not log {needle:?} {count} times within {timeout:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first log line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_logs(needle, 1, timeout);
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The process id, for signals.
    pub fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("the daemon is running");
        libc::pid_t::try_from(child.id()).expect("pids fit pid_t")
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Kills the daemon with SIGKILL, leaving its pins behind as a crash
    /// would (they are still removed when the guard drops).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status; whatever
    /// it left pinned is then detached.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("the daemon is running");
        child.wait().expect("waiting for gatekeeper run")
    }

    /// Kills the daemon with SIGKILL, as a crash would, leaving what it
    /// pinned for the next run to take over (see [`Daemon::stop_keeping_pins`]).
    pub fn crash_keeping_pins(mut self) {
        self.pin_dir = None;
        self.crash();
    }

    /// Stops the daemon with SIGTERM and returns its exit status, leaving
    /// what it pinned for the next run to take over. The test must clean up
    /// itself ([`Pins`], or a later [`Daemon`] on the same pins).
    pub fn stop_keeping_pins(mut self) -> std::process::ExitStatus {
        self.pin_dir = None;
        self.stop()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(
                    libc::pid_t::try_from(child.id()).unwrap_or(0),
                    libc::SIGTERM,
                )
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pin_dir) = &self.pin_dir {
            cleanup_pins(pin_dir);
        }
    }
}

/// Detaches and removes whatever is pinned in `dir`.
pub fn cleanup_pins(dir: &Path) {
    if dir.exists() {
        let _ = Command::new(gatekeeper_bin())
            .arg("detach")
            .arg("--pin-dir")
            .arg(dir)
            .output();
        let _ = std::fs::remove_dir(dir);
    }
}

fn spawn_run(link: &Link, policy: &Path, pin_dir: &Path, extra: &[&str]) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", link.gateway.name()))
        .arg(gatekeeper_bin())
        .args(["run", "--iface", &link.gateway_if, "--policy"])
        .arg(policy)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gatekeeper run")
}

/// Runs a `gatekeeper` command (status, check, detach...) from the host.
pub fn gatekeeper(args: &[&str]) -> Output {
    Command::new(gatekeeper_bin())
        .args(args)
        .output()
        .expect("running gatekeeper")
}

/// `gatekeeper status --json` for `pin_dir`.
pub fn status_json(pin_dir: &Path) -> serde_json::Value {
    let dir = pin_dir.to_str().expect("a UTF-8 pin dir");
    let output = gatekeeper(&["status", "--json", "--pin-dir", dir]);
    assert!(
        output.status.success(),
        "gatekeeper status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status prints JSON")
}

/// `GET path` on the metrics endpoint that `gatekeeper run` serves inside the
/// gateway namespace (its default, 127.0.0.1:9925); returns the status line
/// and the body.
pub fn http_get(link: &Link, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let response = link.gateway.run(move || {
        let mut stream = TcpStream::connect("127.0.0.1:9925").expect("connecting to /metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        stream
            .write_all(request.as_bytes())
            .expect("sending the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading the response");
        response
    });
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as printed) in
/// a Prometheus text exposition; panics when it is missing.
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{exposition}"))
}
