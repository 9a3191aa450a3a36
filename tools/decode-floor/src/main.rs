//! Decode-only floor for `bench/resize-vs-pillow.sh`: decodes every file in a directory to RGB with
//! `stage_shards::poster::decode_rgb` (the decoder `filter` and `resize` use) on N threads and
//! prints images per second. Files are read into memory first, so only decoding is timed.
//!
//! Usage: `decode-floor DIR THREADS`

use std::time::Instant;

use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(threads)) = (args.get(1), args.get(2).and_then(|t| t.parse().ok())) else {
        eprintln!("usage: decode-floor DIR THREADS");
        std::process::exit(2);
    };
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|e| std::fs::read(e.expect("an entry").path()).expect("a readable file"))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    let started = Instant::now();
    let pixels: usize = pool.install(|| {
        files
            .par_iter()
            .map(|bytes| {
                stage_shards::poster::decode_rgb(bytes)
                    .map(|rgb| rgb.len())
                    .unwrap_or(0)
            })
            .sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"images\": {}, \"seconds\": {seconds:.4}, \"images_per_second\": {:.1}, \"bytes_decoded\": {pixels}}}",
        files.len(),
        files.len() as f64 / seconds
    );
}
