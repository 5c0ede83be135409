//! The load test's traffic generator: an XDP program run by `BPF_PROG_RUN`
//! in live-frames mode. Loaded only by `cargo xtask loadtest`.
