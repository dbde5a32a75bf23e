//! Apply one layer file to a directory and report throughput.
//!
//! `cargo run --release -p berth-unpack --example apply -- LAYER.tar[.gz|.zst] DEST [--apply] [--hash-only]`
//!
//! The compression is sniffed from the file's first bytes; `DEST` is created if missing and
//! should be empty (overlay whiteouts are written unless `--apply` is given).

use std::io::Read;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags: Vec<&str> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(file), dest) = (pos.first(), pos.get(1)) else {
        eprintln!("usage: apply LAYER DEST [--apply] | apply LAYER --hash-only");
        std::process::exit(2);
    };
    let mut f = std::fs::File::open(file).expect("opening the layer file");
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).expect("reading the layer file");
    let compression = berth_unpack::Compression::sniff(&magic[..n]);
    let f = std::fs::File::open(file).expect("opening the layer file");
    let compressed = f.metadata().map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    if flags.contains(&"--hash-only") {
        let (d, n) = berth_unpack::diff_id(f, compression).expect("hashing the layer");
        report(t, compressed, n, 0, d.as_ref());
        return;
    }
    let dest = std::path::Path::new(dest.expect("DEST"));
    std::fs::create_dir_all(dest).expect("creating DEST");
    let opts = berth_unpack::Options {
        whiteouts: if flags.contains(&"--apply") {
            berth_unpack::Whiteouts::Apply
        } else {
            berth_unpack::Whiteouts::Overlay
        },
        ..Default::default()
    };
    let stats = match berth_unpack::apply_layer(f, compression, dest, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    report(
        t,
        compressed,
        stats.tar_bytes,
        stats.entries,
        stats.diff_id.as_ref(),
    );
}

fn report(t: Instant, compressed: u64, tar: u64, entries: u64, digest: &str) {
    let s = t.elapsed().as_secs_f64();
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "{digest}\n{entries} entries, {:.1} MB compressed, {:.1} MB tar in {s:.3} s: {:.0} MB/s uncompressed, {:.0} MB/s compressed",
        mb(compressed),
        mb(tar),
        mb(tar) / s,
        mb(compressed) / s
    );
}
