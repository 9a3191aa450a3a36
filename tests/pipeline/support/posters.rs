use super::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `pipeline args` in `root` and returns its peak resident set in bytes, from the kernel's
/// accounting of the finished child (`wait4`'s `ru_maxrss`), not from sampling.
// The child is reaped by `wait4` (which reports its resources), not `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn peak_rss_of_run(root: &Path, args: &[&str]) -> u64 {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(root)
        .env_remove("PIPELINE_THREADS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = String::new();
    child.stderr.unwrap().read_to_string(&mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: zeroed `rusage` is a valid value; `pid` is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "pipeline {args:?} failed ({} MiB free on the disk of {}): {stderr}",
        free_bytes(root) >> 20,
        root.display()
    );
    // Linux reports kilobytes.
    usage.ru_maxrss as u64 * 1024
}

/// A 182x268 JPEG like `bench/`'s synthetic posters: a two-colour vertical gradient and a few
/// boxes, all chosen from `seed`.
pub fn flat_poster_jpeg(seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move |below: u32| {
        // xorshift32: enough to vary colours and boxes between posters.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state % below
    };
    let top = [next(256), next(256), next(256)];
    let bottom = [next(256), next(256), next(256)];
    let mut image = image::RgbImage::from_fn(182, 268, |_, y| {
        let mix = |a: u32, b: u32| ((a * (267 - y) + b * y) / 267) as u8;
        image::Rgb([
            mix(top[0], bottom[0]),
            mix(top[1], bottom[1]),
            mix(top[2], bottom[2]),
        ])
    });
    for _ in 0..2 + next(4) {
        let (x0, y0, w, h) = (next(150), next(240), 10 + next(50), 10 + next(50));
        let colour = image::Rgb([next(256) as u8, next(256) as u8, next(256) as u8]);
        for y in y0..(y0 + h).min(268) {
            for x in x0..(x0 + w).min(182) {
                image.put_pixel(x, y, colour);
            }
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&image)
        .unwrap();
    jpeg
}

/// Free bytes on the filesystem holding `path`, for failure messages (a full disk is the usual
/// reason a big run fails on a test machine).
pub fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed `statvfs` is a valid value; `c_path` is a NUL-terminated string.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return 0;
    }
    stats.f_bavail as u64 * stats.f_frsize as u64
}

/// A project of `posters` distinct flat posters (see [`flat_poster_jpeg`]) on disk, in four genre
/// combinations, with `pipeline` as its `pipeline.yaml`.
pub fn flat_poster_project(posters: usize, pipeline: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("data/posters")).unwrap();
    let bases: Vec<Vec<u8>> = (0..256).map(flat_poster_jpeg).collect();
    let genres = ["Drama", "Comedy|Drama", "Action|Thriller", "Horror"];
    let mut csv = String::from("imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n");
    for i in 0..posters {
        // Every poster distinct: a base poster with a comment segment naming it, so nothing
        // is deduplicated by content and every one is decoded.
        let base = &bases[i % bases.len()];
        let comment = format!("poster {i}");
        let mut jpeg = base[..2].to_vec();
        jpeg.extend_from_slice(&[0xFF, 0xFE]);
        jpeg.extend_from_slice(&(comment.len() as u16 + 2).to_be_bytes());
        jpeg.extend_from_slice(comment.as_bytes());
        jpeg.extend_from_slice(&base[2..]);
        std::fs::write(root.join(format!("data/posters/{i}.jpg")), jpeg).unwrap();
        csv.push_str(&format!(
            "{},l,Movie {i} (2010),6.5,{},posters/{i}.jpg\n",
            i + 1,
            genres[i % genres.len()]
        ));
    }
    std::fs::write(root.join("data/movies.csv"), csv).unwrap();
    std::fs::write(root.join("pipeline.yaml"), pipeline).unwrap();
    Project { _dir: dir, root }
}
