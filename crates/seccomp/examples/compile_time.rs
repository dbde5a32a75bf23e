//! How long `compile` takes for the Docker-like fixture (about 350 syscalls, three ABIs).
//!
//! `cargo run --release -p berth-seccomp --example compile_time [RUNS]`

use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxSeccomp;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 51,
    };
    let profile: LinuxSeccomp =
        serde_json::from_str(include_str!("../tests/fixtures/docker-like.json"))?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut len = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let program = berth_seccomp::compile(&profile)?;
        times.push(start.elapsed());
        len = program.instructions.len();
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "compile(docker-like.json): {len} BPF instructions; median {median:?} over {} runs \
         (min {:?}, max {:?})",
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}
