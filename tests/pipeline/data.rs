//! The data path: downloads from real HTTP servers, per-poster increments, Parquet shards that
//! pyarrow reads, and memory bounds at 20,000 posters.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn download_handles_a_real_http_server() {
    let sample = Path::new(REPO).join("data/sample/posters");
    let jpeg = std::fs::read(
        std::fs::read_dir(&sample)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    let server = posters(jpeg.clone());
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    let mut csv = String::from("imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n");
    for (id, route) in [
        "ok.jpg",
        "missing.jpg",
        "error.jpg",
        "flaky.jpg",
        "slow.jpg",
        "truncated.jpg",
    ]
    .iter()
    .enumerate()
    {
        csv.push_str(&format!(
            "{},l,Movie {id} (2010),5,Drama,{}\n",
            id + 1,
            url(route)
        ));
    }
    std::fs::write(root.join("data/movies.csv"), csv).unwrap();
    std::fs::write(
        root.join("pipeline.yaml"),
        "stages:\n  ingest:\n    kind: ingest\n    files: {csv: data/movies.csv}\n  download:\n    kind: download\n    inputs: {movies: ingest}\n    files: {root: data}\n    params: {timeout_secs: 1, retries: 1, backoff_ms: 10}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Project {
        _dir: tempfile::tempdir().unwrap(),
        root: root.to_path_buf(),
    };
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.output_of("download").join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["stored"], 2,
        "ok and flaky (after a retry): {summary:#}"
    );
    assert_eq!(
        summary["distinct_files"], 1,
        "identical posters are stored once"
    );
    assert_eq!(server.hits("/flaky.jpg"), 2, "flaky was retried once");
    let reasons: Vec<(u64, String)> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_u64().unwrap(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reason = |id: u64| reasons.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    assert_eq!(reason(2), "HTTP 404");
    assert!(
        reason(3).starts_with("HTTP 500 (after 2 attempts)"),
        "{}",
        reason(3)
    );
    assert!(reason(5).starts_with("timed out"), "{}", reason(5));
    assert!(reason(6).starts_with("transfer failed"), "{}", reason(6));
    let stored = std::fs::read(
        p.output_of("download")
            .join("posters")
            .join(blake3::hash(&jpeg).to_hex().as_str()),
    )
    .unwrap();
    assert_eq!(stored, jpeg);
}

#[test]
fn adding_movies_fetches_and_decodes_only_the_new_posters() {
    let (server, lines) = sample_over_http();
    let p = Project::small(0, INCREMENTAL);
    let write_movies = |range| write_movie_lines(&p.root, &lines, range);

    write_movies(1..36);
    let run = p.ok(&["run"]);
    assert_eq!(server.total_hits(), 35);
    assert!(
        decoded_line(&run, "filter").contains("decoded 35 posters"),
        "{run}"
    );
    assert!(
        decoded_line(&run, "resize").contains("decoded 35,"),
        "{run}"
    );

    write_movies(1..41);
    let run = p.ok(&["run"]);
    assert_eq!(
        server.total_hits(),
        40,
        "only the 5 new posters are fetched"
    );
    assert!(
        decoded_line(&run, "filter").contains("decoded 5 posters"),
        "{run}"
    );
    assert!(decoded_line(&run, "resize").contains("decoded 5,"), "{run}");

    write_movies(1..31);
    let run = p.ok(&["run"]);
    assert_eq!(server.total_hits(), 40, "removing movies fetches nothing");
    assert!(
        decoded_line(&run, "filter").contains("decoded 0 posters"),
        "{run}"
    );
    assert!(decoded_line(&run, "resize").contains("decoded 0,"), "{run}");

    p.edit("width: 24", "width: 16");
    let run = p.ok(&["run"]);
    assert_eq!(p.last_run("ran"), set(&["resize"]), "{run}");
    assert!(
        decoded_line(&run, "resize").contains("decoded 30,"),
        "a new width re-decodes everything: {run}"
    );

    // Back to 24 in shards of 7 (a new key): an earlier run's 24x24 output, made the same way,
    // is still in the cache (the newest earlier output, 16x16, is not); its rows are taken.
    p.edit("width: 16", "width: 24");
    p.edit("height: 24}", "height: 24, shard_rows: 7}");
    let run = p.ok(&["run"]);
    assert!(
        decoded_line(&run, "resize").contains("decoded 0, reused 30"),
        "{run}"
    );

    // A damaged earlier output is never trusted: rows come from another one, or are decoded.
    let out = p.output_of("resize");
    let shard = out.join("shard-00000.parquet");
    let good = std::fs::read(&shard).unwrap();
    let _ = std::fs::remove_file(&shard);
    std::fs::write(&shard, vec![0u8; good.len()]).unwrap();
    let run = p.ok(&["run", "--force", "resize"]);
    assert!(decoded_line(&run, "resize").contains("reused"), "{run}");
    assert_eq!(
        std::fs::read(p.output_of("resize").join("shard-00000.parquet")).unwrap(),
        good
    );

    // --no-reuse recomputes every item of the stages that run: download fetches again.
    let fetched = server.total_hits();
    let run = p.ok(&[
        "run",
        "--force",
        "download",
        "--force",
        "resize",
        "--no-reuse",
    ]);
    assert_eq!(server.total_hits(), fetched + 30, "{run}");
    assert!(
        decoded_line(&run, "resize").contains("decoded 30, reused 0"),
        "{run}"
    );
}

#[test]
fn download_gives_every_hostile_server_behaviour_the_right_outcome() {
    let jpeg = std::fs::read(
        std::fs::read_dir(Path::new(REPO).join("data/sample/posters"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jpg"))
            .unwrap(),
    )
    .unwrap();
    let server = posters(jpeg.clone());
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    // (route or source, expected outcome: "stored" or the start of the failure reason)
    let cases: Vec<(String, &str)> = vec![
        (url("ok.jpg"), "stored"),
        (url("gone.jpg"), "HTTP 410"),
        (url("missing.jpg"), "HTTP 404"),
        (url("flaky.jpg"), "stored"),
        (url("busy.jpg"), "stored"),
        (
            url("too-busy.jpg"),
            "HTTP 429: the server asked to retry after 3600 s",
        ),
        (url("slow-body.jpg"), "timed out"),
        (url("reset.jpg"), "transfer failed"),
        (url("cut.jpg"), "truncated JPEG"),
        (url("page.jpg"), "not an image: the server sent HTML"),
        (url("huge.jpg"), "too large"),
        (url("huge-undeclared.jpg"), "too large"),
        (url("chain-1.jpg"), "stored"),
        (url("loop-a.jpg"), "too many redirects"),
        (url("relative-1.jpg"), "stored"),
        (
            url("to-file.jpg"),
            "refused: redirected to a `file:` URL; only http and https redirects are followed",
        ),
        ("pipe.jpg".to_string(), "not a regular file: it is a FIFO"),
        ("file:///etc/passwd".to_string(), "refused"),
        (
            "ftp://127.0.0.1/poster.jpg".to_string(),
            "unsupported scheme",
        ),
    ];
    let header = "imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n";
    let rows: String = cases
        .iter()
        .enumerate()
        .map(|(i, (source, _))| format!("{},l,Movie {i} (2010),5,Drama,{source}\n", i + 1))
        .collect();
    std::fs::write(root.join("data/movies.csv"), format!("{header}{rows}")).unwrap();
    std::fs::write(
        root.join("pipeline.yaml"),
        "stages:\n  ingest:\n    kind: ingest\n    files: {csv: data/movies.csv}\n  download:\n    kind: download\n    inputs: {movies: ingest}\n    files: {root: data}\n    params: {timeout_secs: 1, retries: 1, backoff_ms: 10, max_bytes: 2000000}\n",
    )
    .unwrap();
    // A FIFO among the local posters is refused, not read (a read would wait forever).
    assert!(
        std::process::Command::new("mkfifo")
            .arg(root.join("data/pipe.jpg"))
            .status()
            .unwrap()
            .success()
    );
    let p = Project {
        _dir: dir,
        root: root.clone(),
    };
    let first = p.ok(&["run"]);

    let downloads = |p: &Project| -> Vec<serde_json::Value> {
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.output_of("download").join("summary.json")).unwrap(),
        )
        .unwrap();
        summary["failures"].as_array().unwrap().clone()
    };
    let failures = downloads(&p);
    for (i, (source, expected)) in cases.iter().enumerate() {
        let id = (i + 1) as u64;
        let failure = failures.iter().find(|f| f["id"] == id);
        match (*expected, failure) {
            ("stored", None) => {}
            ("stored", Some(f)) => panic!("{source} should be stored, failed: {f}"),
            (want, Some(f)) => {
                let reason = f["reason"].as_str().unwrap();
                assert!(
                    reason.starts_with(want),
                    "{source}: `{reason}`, want `{want}`"
                );
            }
            (want, None) => panic!("{source} should fail with `{want}`, was stored"),
        }
    }
    // Only real posters were stored, and only one file for the four identical ones.
    let posters: Vec<PathBuf> = std::fs::read_dir(p.output_of("download").join("posters"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(posters.len(), 1, "{posters:?}");
    assert_eq!(std::fs::read(&posters[0]).unwrap(), jpeg);

    let count = |route: &str| server.hits(route);
    assert_eq!(count("/flaky.jpg"), 2, "500 then 200: retried once");
    assert_eq!(count("/gone.jpg"), 1, "410 is final");
    assert_eq!(
        count("/too-busy.jpg"),
        1,
        "a wait over the limit is not waited for"
    );
    assert_eq!(count("/reset.jpg"), 2, "a reset is retried");
    let busy = server.hit_times("/busy.jpg");
    assert_eq!(busy.len(), 2);
    assert!(
        busy[1] - busy[0] >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        busy[1] - busy[0]
    );
    assert!(count("/loop-a.jpg") <= 4, "a loop stops");
    assert_eq!(
        count("/to-file.jpg"),
        1,
        "a refused redirect is not retried"
    );
    assert_eq!(
        count("/file:///etc/passwd"),
        0,
        "another scheme is never requested as a path on the same host"
    );

    // Failures are remembered: a rerun (the CSV grew) does not request them again...
    let before: usize = server.total_hits();
    std::fs::write(
        root.join("data/movies.csv"),
        format!(
            "{header}{rows}100,l,Movie 100 (2011),5,Drama,{}\n",
            url("ok.jpg")
        ),
    )
    .unwrap();
    let second = p.ok(&["run"]);
    let after: usize = server.total_hits();
    assert_eq!(after, before, "only known-good URLs, all reused: {second}");
    assert!(
        second.contains("failures remembered from earlier runs"),
        "{second}"
    );
    assert_eq!(
        downloads(&p).len(),
        failures.len(),
        "still recorded as failed"
    );
    // ...until asked.
    let retried = p.ok(&["run", "--retry-failed"]);
    assert!(count("/gone.jpg") == 2, "{retried}");
    assert!(count("/missing.jpg") == 2, "{retried}");
    assert!(first.contains("Finished download"), "{first}");
}

fn download_only_project(rows: &[String], params: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let mut csv = String::from("imdbId,Imdb Link,Title,IMDB Score,Genre,Poster\n");
    for (i, source) in rows.iter().enumerate() {
        csv.push_str(&format!("{},l,Movie {i} (2010),5,Drama,{source}\n", i + 1));
    }
    std::fs::write(root.join("data/movies.csv"), csv).unwrap();
    std::fs::write(
        root.join("pipeline.yaml"),
        format!("stages:\n  ingest:\n    kind: ingest\n    files: {{csv: data/movies.csv}}\n  download:\n    kind: download\n    inputs: {{movies: ingest}}\n    files: {{root: data}}\n    params: {{{params}}}\n"),
    )
    .unwrap();
    Project { _dir: dir, root }
}

#[test]
fn downloads_keep_to_the_per_host_limit_and_the_limits_are_not_keyed() {
    let jpeg = std::fs::read(Path::new(REPO).join("data/sample/posters/0100001.jpg")).unwrap();
    let everywhere = Arc::new(InFlight::default());
    let delay = Duration::from_millis(300);
    // Two ports on 127.0.0.1 are two hosts (`host:port`).
    let slow = |jpeg: Vec<u8>| {
        move |_: &str, _: usize, _: &mut std::net::TcpStream| {
            std::thread::sleep(delay);
            Some(http_ok(&jpeg))
        }
    };
    let a = Server::start_counted(slow(jpeg.clone()), Some(everywhere.clone()));
    let b = Server::start_counted(slow(jpeg.clone()), Some(everywhere.clone()));
    let (port_a, port_b) = (a.port, b.port);
    let rows: Vec<String> = (0..8)
        .flat_map(|i| {
            [
                format!("http://127.0.0.1:{port_a}/{i}.jpg"),
                format!("http://127.0.0.1:{port_b}/{i}.jpg"),
            ]
        })
        .collect();
    let p = download_only_project(&rows, "max_per_host: 2, max_in_flight: 8");
    let first = p.ok(&["run"]);
    assert!(first.contains("Finished download"), "{first}");
    assert_eq!(a.max_in_flight(), 2, "host A never saw more than 2");
    assert_eq!(b.max_in_flight(), 2, "host B never saw more than 2");
    assert!(
        everywhere.max() >= 3,
        "the hosts were served side by side (max {} in flight)",
        everywhere.max()
    );
    // Concurrency limits tune how, not what: changing them reruns nothing.
    p.edit("max_per_host: 2", "max_per_host: 4");
    p.edit("max_in_flight: 8", "max_in_flight: 3");
    let second = p.ok(&["run"]);
    assert!(p.last_run("ran").is_empty(), "{second}");
    // A bad limit is an error that names the param.
    p.edit("max_per_host: 4", "max_per_host: 0");
    let out = p.pipeline(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("max_per_host"), "{stderr}");
}

#[test]
fn remembered_failures_expire_after_the_configured_time_and_are_retried() {
    let server = posters(Vec::new());
    let port = server.port;
    let url = format!("http://127.0.0.1:{port}/missing.jpg");
    // 0.004 h = 14.4 s, rounded up to 15 s: room for the second run to come before it is due
    // on any machine, so the check below always runs.
    let p = download_only_project(&[url], "retries: 0, retry_failed_after_hours: 0.004");
    let count = || server.hits("/missing.jpg");
    let started = std::time::Instant::now();
    p.ok(&["run"]);
    let first_done = std::time::Instant::now();
    assert_eq!(count(), 1);
    let again = p.ok(&["run"]);
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "two tiny runs took {:?}: the machine is too loaded for this test's clock",
        started.elapsed()
    );
    assert!(p.last_run("ran").is_empty(), "{again}");
    assert_eq!(count(), 1, "not asked again before it is due");
    // Due at most 15 s after the first run's download began.
    std::thread::sleep(Duration::from_millis(15_500).saturating_sub(first_done.elapsed()));
    let status = p.ok(&["status"]);
    assert!(status.contains("output expired"), "{status}");
    assert!(status.contains("retry_failed_after_hours"), "{status}");
    let retried = p.ok(&["run"]);
    assert_eq!(p.last_run("ran"), set(&["download"]), "{retried}");
    assert_eq!(count(), 2, "asked again once due");
}

#[test]
fn shards_are_readable_by_pyarrow_as_is() {
    let p = Project::small(80, SMALL_PIPELINE);
    p.ok(&["run", "resize"]);
    let out = p.output_of("resize");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    let shard_file = meta["shards"][0]["file"].as_str().unwrap();
    let python = python_with_pyarrow();
    let py = python_json(
        &python,
        READ_WITH_PYARROW,
        &[&out.join(shard_file), &out.join("meta.json")],
    );

    // The Rust side, through the crate the stages use.
    let (width, height) = (
        meta["width"].as_u64().unwrap() as usize,
        meta["height"].as_u64().unwrap() as usize,
    );
    let genres = meta["genres"].as_array().unwrap().len();
    let shard =
        stage_shards::read_shard(&out.join(shard_file), width * height * 3, genres).unwrap();

    assert_eq!(py["types"]["imdbId"], "int64");
    // BYTE_ARRAY in Parquet; pyarrow >= 16 follows the Arrow schema polars embeds (binary_view).
    assert!(
        ["binary", "binary_view"].contains(&py["types"]["image"].as_str().unwrap()),
        "{}",
        py["types"]
    );
    assert_eq!(
        py["types"]["labels"],
        format!("fixed_size_list<element: uint8>[{genres}]")
    );
    assert_eq!(py["row_groups"], 1);
    assert_eq!(py["shape"], serde_json::json!([height, width, 3]));
    assert_eq!(py["image_lengths"], serde_json::json!([height * width * 3]));
    let ids: Vec<i64> = serde_json::from_value(py["ids"].clone()).unwrap();
    assert_eq!(ids, shard.ids);
    let posters: Vec<String> = serde_json::from_value(py["posters"].clone()).unwrap();
    assert_eq!(posters, shard.posters);
    assert!(
        posters
            .iter()
            .all(|p| p.starts_with("posters/") && p.len() > 60),
        "each row names its poster by content hash: {posters:?}"
    );
    assert!(
        ["string", "large_string", "string_view"]
            .contains(&py["types"]["poster"].as_str().unwrap())
    );
    let labels: Vec<Vec<u8>> = serde_json::from_value(py["labels"].clone()).unwrap();
    assert_eq!(labels.concat(), shard.labels);
    let pixels = width * height * 3;
    let first: Vec<u8> = serde_json::from_value(py["pixel_0_0"].clone()).unwrap();
    assert_eq!(first, shard.images[..3]);
    let last: Vec<u8> = serde_json::from_value(py["pixel_last"].clone()).unwrap();
    assert_eq!(last, shard.images[pixels - 3..pixels]);
    let images: Vec<String> = serde_json::from_value(py["images_hex"].clone()).unwrap();
    assert_eq!(images.len(), shard.len());
    for (i, hex) in images.iter().enumerate() {
        let rust: String = shard.images[i * pixels..(i + 1) * pixels]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(*hex == rust, "image {i} differs between pyarrow and Rust");
    }
}

#[test]
fn resizing_20000_posters_to_224_stays_under_1_gib_resident() {
    const POSTERS: usize = 20_000;
    // Flat posters (a gradient and a few boxes, as in `bench/`), not the sample's noisy ones: at
    // 224x224 those compress only ~1.2x and the shards alone took 2.5 GB of disk, which a CI machine
    // may not have; these take a few hundred MB. The memory bound is about the pipeline's buffers
    // (a shard in the workers, one in the writer, decoders per thread), which are sized by rows
    // and pixels, not by how well the pixels compress.
    let p = flat_poster_project(
        POSTERS,
        // The original project's size, and its shard size.
        &INCREMENTAL.replace(
            "{width: 24, height: 24}",
            "{width: 224, height: 224, mode: stretch, shard_rows: 1024}",
        ),
    );
    p.ok(&["run", "filter"]);
    let started = std::time::Instant::now();
    let peak = peak_rss_of_run(&p.root, &["run", "resize"]);
    let seconds = started.elapsed().as_secs_f64();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.output_of("resize").join("meta.json")).unwrap(),
    )
    .unwrap();
    let shards: Vec<PathBuf> = std::fs::read_dir(p.output_of("resize"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    let rows: usize = shards
        .iter()
        .map(|shard| {
            stage_shards::read_columns(shard, &["imdbId"])
                .unwrap()
                .height()
        })
        .sum();
    let shard_bytes: u64 = shards
        .iter()
        .map(|shard| shard.metadata().unwrap().len())
        .sum();
    eprintln!(
        "resize of {POSTERS} posters to 224x224: peak resident {} MiB, {seconds:.1} s, shards {} MiB",
        peak >> 20,
        shard_bytes >> 20
    );
    assert_eq!(
        (&meta["width"], &meta["height"]),
        (&224.into(), &224.into())
    );
    assert_eq!(rows, POSTERS, "every poster resized: {meta}");
    assert!(
        peak < 1 << 30,
        "peak resident {} MiB, over 1 GiB",
        peak >> 20
    );
}
