//! `cargo xtask demo`: gatekeeper enforcing the example policy on a real
//! veth link between two network namespaces, first in monitor mode, then in
//! enforce mode, with real SMTP connections from inside and outside the
//! connector; then the sample capture replayed under the same policy.

use std::{
    env, fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{cargo, run, workspace_root},
    setup::{Mode, setup},
};

const POLICY: &str = "examples/policy.toml";
const CAPTURE: &str = "examples/sample.pcap";

const INTERNET: &str = "gk-demo-internet";
const GATEWAY: &str = "gk-demo-gateway";
const INTERNET_IF: &str = "gk-demo-in";
const GATEWAY_IF: &str = "gk-demo-gw";
const PIN_DIR: &str = "/sys/fs/bpf/gatekeeper-demo";

/// The connector's side and the stranger's side of each subnet: the client
/// reaches the gateway address of a subnet from its own address in it.
const CLIENTS: [(&str, &str, &str); 2] = [
    (
        "198.51.100.7",
        "198.51.100.1",
        "inside connector upstream-filter",
    ),
    ("203.0.113.9", "203.0.113.1", "in no connector"),
];

/// Set by SIGINT or SIGTERM; the demo stops at the next step and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs what is missing, builds the binary, and runs the live demo and
/// the replay.
///
/// # Errors
///
/// When setup, the build, the namespaces or a gatekeeper command fail, or
/// the demo is interrupted.
pub fn demo() -> Result<()> {
    setup(Mode::Install)?;
    let root = workspace_root();

    println!("\n==> building gatekeeper");
    run(cargo().args(["build", "--package", "gatekeeper", "--bin", "gatekeeper"]))?;
    let gatekeeper = target_dir(root).join("debug").join("gatekeeper");

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let scratch = Scratch::new()?;
    let lab = Lab::create()?;
    let result = live(&gatekeeper, root, &scratch, &lab);
    drop(lab);
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; removed everything the demo created");
    }
    result?;

    println!("\n==> the sample capture under the same policy (gatekeeper replay)");
    run(Command::new(&gatekeeper)
        .args(["replay", "--policy", POLICY, "--pcap", CAPTURE])
        .current_dir(root))?;

    println!(
        "\n==> on a real gateway:\n\
         \x20   {bin} policy check my-policy.toml      # start from examples/policy.toml\n\
         \x20   tcpdump -i eth0 -w gateway.pcap 'tcp port 25'\n\
         \x20   {bin} replay --policy my-policy.toml --pcap gateway.pcap\n\
         \x20   {bin} run --iface eth0 --policy my-policy.toml   # monitor first, then enforce\n\
         \x20   {bin} status",
        bin = gatekeeper.display()
    );
    Ok(())
}

/// The live part; `_lab` is the namespaces it runs in, which must outlive it.
fn live(gatekeeper: &Path, root: &Path, scratch: &Scratch, _lab: &Lab) -> Result<()> {
    let policy = scratch.0.join("policy.toml");
    let example = fs::read_to_string(root.join(POLICY)).context("reading the example policy")?;
    fs::write(&policy, &example).context("writing the demo policy")?;
    let enforcing = example.replace("mode = \"monitor\"", "mode = \"enforce\"");
    if enforcing == example {
        bail!("{POLICY} has no `mode = \"monitor\"` line to switch");
    }

    let _listener = SmtpListener::start()?;
    let _pins = Pins(gatekeeper.to_owned());
    println!(
        "\n==> gatekeeper run --iface {GATEWAY_IF} --policy {POLICY} (in namespace {GATEWAY})"
    );
    let mut daemon = Daemon::start(gatekeeper, &policy, &scratch.0.join("run.log"))?;

    println!("\n==> monitor mode: everyone gets through, unknown sources are counted");
    expect(&connect_all()?, [true, true], "monitor")?;
    status(gatekeeper)?;

    println!("\n==> switching the file to mode = \"enforce\" (reloaded live, no restart)");
    let next = scratch.0.join("policy.toml.new");
    fs::write(&next, &enforcing).context("writing the enforcing policy")?;
    fs::rename(&next, &policy).context("replacing the policy")?;
    daemon.wait_for("policy reloaded", Duration::from_secs(10))?;
    println!("\n==> enforce mode: SYNs from outside every connector are dropped");
    expect(&connect_all()?, [true, false], "enforce")?;
    status(gatekeeper)?;

    println!("\n==> stopping gatekeeper (SIGTERM): the program stays attached, enforcing");
    daemon.stop()?;
    let first_log = daemon.log()?;
    expect(
        &connect_all()?,
        [true, false],
        "enforce, with no controller running",
    )?;

    println!("\n==> gatekeeper run again: it switches the pinned link to its program atomically");
    let mut daemon = Daemon::start(gatekeeper, &policy, &scratch.0.join("run-2.log"))?;
    expect(&connect_all()?, [true, false], "enforce, after the restart")?;
    daemon.stop()?;

    println!("\n==> gatekeeper detach: removes the program and its pins");
    detach(gatekeeper)?;
    expect(&connect_all()?, [true, true], "detached")?;
    println!("\n--- the first gatekeeper run's log ---\n{first_log}");
    println!("\n--- the second one's ---\n{}", daemon.log()?);
    Ok(())
}

/// Runs `gatekeeper detach` on the demo's pins.
fn detach(gatekeeper: &Path) -> Result<()> {
    interrupted()?;
    println!("    $ gatekeeper detach");
    let output = Command::new(gatekeeper)
        .args(["detach", "--pin-dir", PIN_DIR])
        .output()
        .context("running gatekeeper detach")?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("    {line}");
    }
    if !output.status.success() {
        bail!(
            "gatekeeper detach failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Detaches whatever the demo left pinned, however it ends: `gatekeeper
/// run` leaves its program attached when it stops. Holds the path of the
/// gatekeeper binary.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if Path::new(PIN_DIR).exists() {
            let _ = Command::new(&self.0)
                .args(["detach", "--pin-dir", PIN_DIR])
                .output();
        }
    }
}

/// Fails unless the clients connected as `wanted` says, so that a demo
/// that runs is a demo that worked.
fn expect(connected: &[bool], wanted: [bool; 2], mode: &str) -> Result<()> {
    if connected != wanted {
        bail!("in {mode} mode the connections went {connected:?}, not {wanted:?} as they should");
    }
    Ok(())
}

/// Connects from each client; returns which of them got the banner.
fn connect_all() -> Result<Vec<bool>> {
    let mut connected = Vec::new();
    for (client, server, role) in CLIENTS {
        interrupted()?;
        let address: SocketAddr = format!("{server}:25").parse()?;
        let outcome = in_namespace(INTERNET, move || {
            let started = Instant::now();
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(900))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut banner = String::new();
            stream.read_to_string(&mut banner)?;
            Ok::<_, std::io::Error>((banner, started.elapsed()))
        })?;
        match outcome {
            Ok((banner, took)) => {
                println!(
                    "    {client} ({role}) -> {server}:25: connected in {} ms, banner {:?}",
                    took.as_millis(),
                    banner.trim_end()
                );
                connected.push(true);
            }
            Err(error) => {
                println!(
                    "    {client} ({role}) -> {server}:25: no connection ({error}): the SYN was \
                     dropped"
                );
                connected.push(false);
            }
        }
    }
    Ok(connected)
}

fn status(gatekeeper: &Path) -> Result<()> {
    interrupted()?;
    println!("    $ gatekeeper status");
    let output = Command::new(gatekeeper)
        .args(["status", "--pin-dir", PIN_DIR])
        .output()
        .context("running gatekeeper status")?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("    {line}");
    }
    if !output.status.success() {
        bail!(
            "gatekeeper status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The two namespaces and the veth pair; removed on drop.
struct Lab;

impl Lab {
    fn create() -> Result<Self> {
        // A namespace left by an earlier, killed demo would be in the way.
        for namespace in [INTERNET, GATEWAY] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
        println!("\n==> creating namespaces {INTERNET} and {GATEWAY}, joined by a veth pair");
        let lab = Self;
        ip(&["netns", "add", INTERNET])?;
        ip(&["netns", "add", GATEWAY])?;
        ip(&[
            "-n",
            INTERNET,
            "link",
            "add",
            INTERNET_IF,
            "type",
            "veth",
            "peer",
            "name",
            GATEWAY_IF,
            "netns",
            GATEWAY,
        ])?;
        for (namespace, link) in [(INTERNET, INTERNET_IF), (GATEWAY, GATEWAY_IF)] {
            ip(&["-n", namespace, "link", "set", "lo", "up"])?;
            ip(&["-n", namespace, "link", "set", link, "up"])?;
        }
        for (client, server, role) in CLIENTS {
            ip(&[
                "-n",
                INTERNET,
                "addr",
                "add",
                &format!("{client}/24"),
                "dev",
                INTERNET_IF,
            ])?;
            ip(&[
                "-n",
                GATEWAY,
                "addr",
                "add",
                &format!("{server}/24"),
                "dev",
                GATEWAY_IF,
            ])?;
            println!("    internet side {client} ({role}), gateway {server}");
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in [INTERNET, GATEWAY] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
        println!("\n==> removed the namespaces and the veth pair");
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `name`.
fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::spawn(move || {
        // SAFETY: setns with a valid namespace descriptor changes only this
        // thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow::Error::new(std::io::Error::last_os_error()).context("setns"));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a namespace thread panicked"))?
}

/// Port 25 on the gateway, answering each connection with a banner.
struct SmtpListener {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SmtpListener {
    fn start() -> Result<Self> {
        let listener = in_namespace(GATEWAY, || {
            let listener = TcpListener::bind("0.0.0.0:25")?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        })?
        .context("listening on port 25 in the gateway namespace")?;
        println!("    SMTP listener on port 25 of the gateway");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(b"220 gateway.example ESMTP\r\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
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

/// `gatekeeper run` in the gateway namespace, logging to a file; stopped on
/// drop.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(gatekeeper: &Path, policy: &Path, log: &Path) -> Result<Self> {
        let log_file = fs::File::create(log).context("creating the log file")?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{GATEWAY}"))
            .arg(gatekeeper)
            .args([
                "run",
                "--iface",
                GATEWAY_IF,
                "--pin-dir",
                PIN_DIR,
                "--policy",
            ])
            .arg(policy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting gatekeeper run")?;
        let mut daemon = Self {
            child: Some(child),
            log: log.to_owned(),
        };
        daemon.wait_for("gatekeeper running", Duration::from_secs(20))?;
        Ok(daemon)
    }

    fn log(&self) -> Result<String> {
        fs::read_to_string(&self.log).context("reading the log")
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            interrupted()?;
            if self.log()?.contains(needle) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("gatekeeper run exited ({status}):\n{}", self.log()?);
            }
            if Instant::now() > deadline {
                bail!(
                    "gatekeeper run did not log {needle:?} in time:\n{}",
                    self.log()?
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id())?;
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let status = child.wait()?;
            if !status.success() {
                bail!("gatekeeper run ended with {status}");
            }
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A scratch directory for the policy copy and the log; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = env::temp_dir().join(format!("gatekeeper-demo-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}
