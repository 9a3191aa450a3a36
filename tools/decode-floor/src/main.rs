//! Decode-only floor for `bench/resize-vs-pillow.sh`: decodes every file in a directory to RGB with
//! `stage_shards::poster::decode_rgb` (the decoder `filter` and `resize` use) on N threads and
//! prints images per second. Files are read into memory first, so only decoding is timed.
//!
//! With `WIDTH HEIGHT`, it also times decode + resize (`stage_resize::resize_into`, the stage's
//! stretch path) without writing anything: how far resizing alone is from the decode floor.
//!
//! Usage: `decode-floor DIR THREADS [WIDTH HEIGHT]`

#![allow(clippy::print_stdout)] // a command-line tool: stdout is its output

use std::time::Instant;

use rayon::prelude::*;
use stage_resize::{Mode, ResizeParams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize| args.get(i).and_then(|t| t.parse::<u32>().ok());
    let (Some(dir), Some(threads)) = (args.get(1), number(2)) else {
        eprintln!("usage: decode-floor DIR THREADS [WIDTH HEIGHT]");
        std::process::exit(2);
    };
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|e| std::fs::read(e.expect("an entry").path()).expect("a readable file"))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads as usize)
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
    let mut resized = String::new();
    if let (Some(width), Some(height)) = (number(3), number(4)) {
        let params = ResizeParams {
            width,
            height,
            mode: Mode::Stretch,
            shard_rows: 1,
        };
        let started = Instant::now();
        pool.install(|| {
            files.par_iter().for_each_init(
                || vec![0u8; (width * height * 3) as usize],
                |dst, bytes| {
                    if let Ok(rgb) = stage_shards::poster::decode_rgb(bytes) {
                        let _ = stage_resize::resize_into(
                            rgb.width(),
                            rgb.height(),
                            rgb.into_raw(),
                            &params,
                            dst,
                        );
                    }
                },
            )
        });
        resized = format!(
            ", \"decode_resize_seconds\": {:.4}",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{{\"images\": {}, \"seconds\": {seconds:.4}, \"images_per_second\": {:.1}, \"bytes_decoded\": {pixels}{resized}}}",
        files.len(),
        files.len() as f64 / seconds
    );
}
