//! Restarting `gatekeeper run` on a live veth link, after a clean stop or
//! a crash: the program stays attached while no controller runs, each new
//! run switches the same XDP link to its own program atomically, and
//! clients connecting all the while see no gap: every allowed connection
//! succeeds, no unauthorized one does.

use std::{
    collections::BTreeSet,
    ffi::CString,
    io::Read as _,
    net::{SocketAddr, TcpStream},
    os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use gatekeeper_tests::{
    live::{
        ALLOWED_V4, BANNER, Daemon, ENFORCE_POLICY, GATEWAY_ADDRS, OUTSIDE_ADDRS, Pins, PolicyFile,
        STRANGER_V4, assert_admitted, assert_refused, gatekeeper, gateway, pin_dir,
    },
    netns::Link,
    support::require_root,
};

const STRANGER_SOURCE: &str = "203.0.113.9";
const ALLOWED_SOURCE: &str = "198.51.100.7";

/// The one XDP link pinned in `dir`.
fn link_pin(dir: &Path) -> PathBuf {
    let links: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the pin directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("link_"))
        .map(|entry| entry.path())
        .collect();
    assert_eq!(links.len(), 1, "one link pinned in {}", dir.display());
    links[0].clone()
}

/// The kernel's ids of the pinned link and of the program attached through
/// it, from the fdinfo of a descriptor opened on the pin.
fn link_and_program(pin: &Path) -> (u32, u32) {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = CString::new(pin.as_os_str().as_bytes()).expect("a path without NUL");
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET reads the attribute, which outlives the call, and
    // the path it points to.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            std::ptr::from_ref(&attr),
            size_of::<ObjGet>(),
        )
    };
    assert!(
        fd >= 0,
        "opening {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let info = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .expect("the link's fdinfo");
    let field = |name: &str| -> u32 {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    (field("link_id:"), field("prog_id:"))
}

/// What the clients saw while the controller restarted.
#[derive(Default)]
struct Tally {
    allowed_ok: u64,
    allowed_failed: Vec<String>,
    stranger_refused: u64,
    stranger_admitted: u64,
}

/// Connects from the internet side (the namespace at `outside`) to
/// `server` until `stop`, each attempt with `timeout`; returns the banners
/// read and why the other attempts failed.
fn client(outside: &str, server: &str, timeout: Duration, stop: &AtomicBool) -> (u64, Vec<String>) {
    gatekeeper_tests::netns::enter(outside);
    let server: SocketAddr = server.parse().expect("a socket address");
    let (mut ok, mut failed) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let outcome = TcpStream::connect_timeout(&server, timeout).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut banner = String::new();
            stream.read_to_string(&mut banner)?;
            Ok(banner)
        });
        match outcome {
            Ok(banner) if banner == BANNER => ok += 1,
            Ok(other) => failed.push(format!("unexpected banner {other:?}")),
            Err(error) => failed.push(error.to_string()),
        }
    }
    (ok, failed)
}

#[test]
fn twenty_restarts_leave_no_gap_and_keep_the_link() {
    require_root();
    const RESTARTS: usize = 20;
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let _pins = Pins(pins.clone());
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    // Sources the inventory must still know after the restarts.
    const EARLY_STRANGER_SYNS: u64 = 5;
    for _ in 0..EARLY_STRANGER_SYNS {
        assert_refused(&link, STRANGER_V4);
    }
    assert_admitted(&link, ALLOWED_V4);

    let pin = link_pin(&pins);
    let (link_id, first_program) = link_and_program(&pin);
    let mut programs = BTreeSet::from([first_program]);

    // The allowed client's timeout is under TCP's 1 s SYN retransmission,
    // so one SYN lost to a gap fails its attempt; the strangers' timeout is
    // short, so that one starts every few tens of milliseconds.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = std::iter::once((ALLOWED_V4, Duration::from_millis(500)))
        .chain(std::iter::repeat_n(
            (STRANGER_V4, Duration::from_millis(100)),
            3,
        ))
        .map(|(server, timeout)| {
            let stop = Arc::clone(&stop);
            let outside = link.outside.path();
            thread::spawn(move || (server, client(&outside, server, timeout, &stop)))
        })
        .collect();

    for round in 0..RESTARTS {
        // Every other round ends the run as a crash would.
        if round % 2 == 0 {
            let status = daemon.stop_keeping_pins();
            assert!(
                status.success(),
                "round {round}: gatekeeper run exited {status}"
            );
        } else {
            daemon.crash_keeping_pins();
        }
        // No controller runs now: the program must still be attached,
        // through the same link.
        assert_eq!(link_and_program(&pin).0, link_id, "round {round}");
        thread::sleep(Duration::from_millis(50));
        daemon = Daemon::start(&link, policy.path(), &pins, &[]);
        assert!(
            daemon
                .log()
                .contains("took over the earlier run's link: switched to the new program"),
            "round {round}: {}",
            daemon.log()
        );
        let (id, program) = link_and_program(&pin);
        assert_eq!(
            id, link_id,
            "round {round}: the link was replaced, not updated"
        );
        assert!(
            programs.insert(program),
            "round {round}: program {program} was attached before"
        );
    }

    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for handle in clients {
        let (server, (ok, failed)) = handle.join().expect("a client thread");
        if server == ALLOWED_V4 {
            tally.allowed_ok += ok;
            tally.allowed_failed.extend(failed);
        } else {
            tally.stranger_admitted += ok;
            tally.stranger_refused += failed.len() as u64;
        }
    }
    println!(
        "restarts: {RESTARTS} (half after SIGTERM, half after SIGKILL), allowed connections {} ok and {} failed, unauthorized \
         {} admitted and {} refused, {} programs through link {link_id}",
        tally.allowed_ok,
        tally.allowed_failed.len(),
        tally.stranger_admitted,
        tally.stranger_refused,
        programs.len()
    );
    assert_eq!(
        tally.allowed_failed,
        Vec::<String>::new(),
        "allowed connections failed"
    );
    assert_eq!(
        tally.stranger_admitted, 0,
        "unauthorized connections admitted"
    );
    assert!(tally.allowed_ok >= RESTARTS as u64 && tally.stranger_refused >= RESTARTS as u64);
    assert_eq!(programs.len(), RESTARTS + 1);

    // One more restart with no traffic at all: what the inventory knows
    // after it was carried over, not seen again.
    let status = daemon.stop_keeping_pins();
    assert!(status.success());
    daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    let inventory = gatekeeper(&["inventory", "--json", "--pin-dir", pins.to_str().unwrap()]);
    assert!(inventory.status.success());
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&inventory.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let attempts = |source: &str| {
        entries
            .iter()
            .find(|entry| entry["source"] == source)
            .and_then(|entry| entry["attempts"].as_u64())
            .unwrap_or_else(|| panic!("{source} is not in the inventory: {entries:?}"))
    };
    let stranger = attempts(STRANGER_SOURCE);
    assert!(
        (EARLY_STRANGER_SYNS..=EARLY_STRANGER_SYNS + tally.stranger_refused).contains(&stranger),
        "{stranger} attempts from {STRANGER_SOURCE}"
    );
    assert!(attempts(ALLOWED_SOURCE) >= 1);
    drop(daemon);
}

/// Whether the gateway's side of `link`, or the named device there, has an
/// XDP program attached.
fn has_xdp(link: &Link, device: &str) -> bool {
    let output = std::process::Command::new("ip")
        .args(["-n", link.gateway.name(), "-d", "link", "show", device])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&output.stdout).contains("prog/xdp")
}

#[test]
fn a_bad_policy_at_restart_leaves_the_earlier_program_enforcing() {
    require_root();
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let _pins = Pins(pins.clone());
    let daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    let (link_id, program) = link_and_program(&link_pin(&pins));
    assert!(daemon.stop_keeping_pins().success());

    policy.replace(
        "mode = \"enforce\"\nports = [25]\n[[connector]]\nname = \"x\"\nsources = [\"nonsense\"]\n",
    );
    let failed = Daemon::start_expecting_failure(&link, policy.path(), &pins, &[]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("nonsense"), "{stderr}");
    // Untouched: the same program through the same link, still enforcing.
    assert_eq!(link_and_program(&link_pin(&pins)), (link_id, program));
    assert_admitted(&link, ALLOWED_V4);
    assert_refused(&link, STRANGER_V4);

    policy.replace(ENFORCE_POLICY);
    let daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    let (id, new_program) = link_and_program(&link_pin(&pins));
    assert_eq!(id, link_id);
    assert_ne!(new_program, program);
    assert_admitted(&link, ALLOWED_V4);
    assert_refused(&link, STRANGER_V4);
    drop(daemon);
}

#[test]
fn detach_on_exit_opens_the_port_when_the_run_stops() {
    require_root();
    let (link, _listener) = gateway();
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let _pins = Pins(pins.clone());
    let daemon = Daemon::start(&link, policy.path(), &pins, &["--detach-on-exit"]);
    assert_refused(&link, STRANGER_V4);
    assert!(daemon.stop_keeping_pins().success());
    assert!(!pins.exists(), "pins left in {}", pins.display());
    assert!(!has_xdp(&link, &link.gateway_if));
    assert_admitted(&link, STRANGER_V4);
}

#[test]
fn an_interface_no_longer_given_is_detached_at_the_next_start() {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    // A second interface on the gateway: a veth pair of its own there, which
    // goes with the namespace.
    let second = "gk-second".to_owned();
    link.gateway.ip(&[
        "link",
        "add",
        &second,
        "type",
        "veth",
        "peer",
        "name",
        "gk-second-peer",
    ]);
    let policy = PolicyFile::new(ENFORCE_POLICY);
    let pins = pin_dir();
    let _pins = Pins(pins.clone());
    let daemon = Daemon::start(&link, policy.path(), &pins, &["--iface", &second]);
    assert!(has_xdp(&link, &link.gateway_if) && has_xdp(&link, &second));
    assert!(daemon.stop_keeping_pins().success());
    assert!(has_xdp(&link, &link.gateway_if) && has_xdp(&link, &second));

    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);
    daemon.wait_for_log(
        "detached: attached by an earlier run",
        Duration::from_secs(5),
    );
    assert!(has_xdp(&link, &link.gateway_if));
    assert!(!has_xdp(&link, &second), "{second} still has the program");
    assert_eq!(
        std::fs::read_dir(&pins)
            .expect("the pin directory")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("link_"))
            .count(),
        1
    );
    drop(daemon);
}
