//! Integration tests: drive the real `pipeline` binary in temporary project directories.
//!
//! Each test mirrors a promise of the engine (README, "What the cache promises").

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pipeline");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A pipeline file for a small, fast project: tiny images, two epochs.
const SMALL_PIPELINE: &str = "\
stages:
  ingest:
    kind: ingest
    files: {csv: data/movies.csv}
  download:
    kind: download
    inputs: {movies: ingest}
    files: {root: data}
  filter:
    kind: filter
    inputs: {movies: ingest, posters: download}
    params: {min_year: 2000, min_genre_count: 5}
  resize:
    kind: resize
    inputs: {movies: filter, posters: download}
    params:
      width: 24
      height: 24
      shard_rows: 64
  split:
    kind: split
    inputs: {shards: resize}
  train:
    kind: train
    inputs: {data: split}
    params: {epochs: 2, batch_size: 16}
  evaluate:
    kind: evaluate
    inputs: {model: train, data: split, ingest: ingest, download: download, filter: filter}
    publish: reports
";

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Project {
    /// A project with the first `movies` sample movies, the sample's bad rows, and `pipeline`.
    fn small(movies: usize, pipeline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let sample = Path::new(REPO).join("data/sample");
        std::fs::create_dir_all(root.join("data/posters")).unwrap();
        let csv = std::fs::read(sample.join("movies.csv")).unwrap();
        let lines: Vec<&[u8]> = csv
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let bad_start = lines
            .iter()
            .position(|l| l.starts_with(b"9000000,"))
            .expect("the sample has bad rows");
        let mut out = Vec::new();
        for line in lines[..=movies].iter().chain(&lines[bad_start..]) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        std::fs::write(root.join("data/movies.csv"), out).unwrap();
        for entry in std::fs::read_dir(sample.join("posters")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                root.join("data/posters").join(entry.file_name()),
            )
            .unwrap();
        }
        std::fs::write(root.join("pipeline.yaml"), pipeline).unwrap();
        Self { _dir: dir, root }
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.root)
            .env_remove("PIPELINE_THREADS")
            .output()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "pipeline {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn edit(&self, from: &str, to: &str) {
        let path = self.root.join("pipeline.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "pipeline.yaml has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn status(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// The cache output directory of `stage`, from the lock file.
    fn output_of(&self, stage: &str) -> PathBuf {
        let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(self.root.join("pipeline.lock")).unwrap(),
        )
        .unwrap();
        let key = lock["stages"][stage]["key"].as_str().unwrap().to_string();
        self.root.join("cache/v1/entries").join(key).join("out")
    }
}

/// Stage names on lines starting with `prefix` (e.g. `Running`).
fn stages_with(stdout: &str, prefix: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const ALL: [&str; 7] = [
    "ingest", "download", "filter", "resize", "split", "train", "evaluate",
];

#[test]
fn default_pipeline_runs_offline_and_beats_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::copy(
        Path::new(REPO).join("pipeline.yaml"),
        root.join("pipeline.yaml"),
    )
    .unwrap();
    for dir in ["data", "models"] {
        let status = Command::new("cp")
            .args(["-r", &format!("{REPO}/{dir}"), &root.display().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = Command::new(BIN)
        .arg("run")
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut default_stages = set(&ALL);
    default_stages.extend(["stats", "embed", "cnn"].map(String::from));
    assert_eq!(stages_with(&stdout, "Running "), default_stages);
    assert!(stdout.contains("Report: reports/index.html"), "{stdout}");
    let html = std::fs::read_to_string(root.join("reports/index.html")).unwrap();
    assert!(html.contains("Test metrics"));
    assert!(
        html.contains("<h2>Dataset</h2>"),
        "the stats branch feeds the report"
    );
    assert!(!html.contains("<script>"), "CSV text must be escaped");
    assert!(
        html.contains("&lt;script&gt;"),
        "the sample's hostile title is shown escaped"
    );
    assert!(
        html.len() < 5_000_000,
        "self-contained but small: {} bytes",
        html.len()
    );
    for section in [
        "run",
        "summary",
        "training",
        "decisions",
        "genres",
        "curves",
        "co-occurrence",
        "gallery",
        "dataset",
        "data",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{section}\">")),
            "no `{section}` section"
        );
    }
    assert!(
        html.contains("data:image/jpeg;base64,"),
        "the gallery embeds its thumbnails"
    );
    // A real browser: no console error, no failed request, every thumbnail decodes, no script,
    // and the hostile title is on the page as text. The screenshot is for a person to look at.
    let python = python_with(&["playwright"], "playwright");
    let screenshot = Path::new(REPO).join("target/report-screenshot.png");
    let out = Command::new(&python)
        .arg(Path::new(REPO).join("tests/report_in_browser.py"))
        .arg(root.join("reports/index.html"))
        .arg(&screenshot)
        .arg("<script>alert('escaped?')</script> & Friends")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the report fails in Chromium:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("{}")
            .as_bytes(),
    )
    .unwrap();
    assert!(
        seen["images"].as_u64().unwrap() >= 20 && seen["svgs"].as_u64().unwrap() >= 6,
        "{seen}"
    );
    assert!(screenshot.is_file());
    let folders: Vec<_> = std::fs::read_dir(root.join("reports"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("run.json").is_file())
        .collect();
    assert_eq!(folders.len(), 1, "the run keeps its own report folder");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("reports/metrics.json")).unwrap())
            .unwrap();
    // The primary model, the head on ImageNet embeddings, beats both constant baselines clearly
    // on the test split, under its decision rule.
    let model = &metrics["models"][0];
    let value = |card: &serde_json::Value, pointer: &str| {
        card.pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no {pointer} in {card}"))
    };
    for baseline in model["baselines"].as_array().unwrap() {
        for (metric, margin) in [("macro_f1", 0.1), ("micro_f1", 0.05)] {
            let pointer = format!("/test/decided/{metric}");
            assert!(
                value(model, &pointer) > value(baseline, &pointer) + margin,
                "{metric} {} vs baseline {} {}",
                value(model, &pointer),
                baseline["name"],
                value(baseline, &pointer)
            );
        }
    }
    assert!(
        value(model, "/test/ranking/roc_auc_macro") > 0.7,
        "{metrics}"
    );
    // Both models are listed, primary first, each with the decision rule it ran.
    let models = metrics["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{metrics}");
    assert_eq!(models[0]["architecture"], "mlp");
    assert_eq!(models[1]["architecture"], "small-cnn");
    for m in models {
        assert!(
            m["decision"]["rule"].is_string() && m["decision"]["rule"] != "auto",
            "{m}"
        );
    }
    assert!(html.contains("Decision rules") && html.contains("small-cnn"));
    assert!(metrics["n_test"].as_u64().unwrap() > 50);
    let genre = &model["test"]["per_genre"][0];
    assert_eq!(genre["genre"], metrics["genres"][0]);
    for pointer in [
        "/decided/precision",
        "/decided/recall",
        "/decided/f1",
        "/support",
        "/roc_auc",
    ] {
        assert!(!genre.pointer(pointer).unwrap().is_null(), "{pointer}");
    }
    assert_eq!(
        metrics["thresholds"].as_object().unwrap().len(),
        metrics["genres"].as_array().unwrap().len()
    );
    // The report lists what was skipped, by reason.
    for reason in [
        "no genre",
        "no poster",
        "duplicate imdbId",
        "truncated JPEG",
        "not an image",
        "no year in title",
    ] {
        assert!(html.contains(reason), "report lacks `{reason}`");
    }
}

#[test]
fn second_run_is_all_fresh() {
    let p = Project::small(120, SMALL_PIPELINE);
    let first = p.ok(&["run"]);
    assert_eq!(stages_with(&first, "Running "), set(&ALL));
    let second = p.ok(&["run"]);
    assert_eq!(stages_with(&second, "Fresh "), set(&ALL));
    assert!(stages_with(&second, "Running ").is_empty(), "{second}");
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
}

#[test]
fn param_change_reruns_stage_and_downstream_and_dry_run_predicts_it() {
    let p = Project::small(120, SMALL_PIPELINE);
    p.ok(&["run"]);
    p.edit("width: 24", "width: 32");
    let status = p.status();
    let resize = status.iter().find(|s| s["name"] == "resize").unwrap();
    assert_eq!(resize["state"], "dirty");
    assert_eq!(resize["reason"], "params changed: resize.width 24 -> 32");
    let lock_before = std::fs::read(p.root.join("pipeline.lock")).unwrap();
    let dry = p.ok(&["run", "--dry-run"]);
    assert_eq!(
        std::fs::read(p.root.join("pipeline.lock")).unwrap(),
        lock_before,
        "dry run wrote the lock"
    );
    let run = p.ok(&["run"]);
    let expected = set(&["resize", "split", "train", "evaluate"]);
    assert_eq!(stages_with(&dry, "Would run "), expected, "{dry}");
    assert_eq!(stages_with(&run, "Running "), expected, "{run}");
    assert_eq!(
        stages_with(&run, "Fresh "),
        set(&["ingest", "download", "filter"])
    );
}

#[test]
fn identical_output_stops_propagation() {
    let p = Project::small(120, SMALL_PIPELINE);
    p.ok(&["run"]);
    // The sample is latin-1, which `auto` detects: forcing latin-1 changes ingest's key, not its output.
    p.edit(
        "files: {csv: data/movies.csv}",
        "files: {csv: data/movies.csv}\n    params: {encoding: latin-1}",
    );
    let run = p.ok(&["run"]);
    assert_eq!(stages_with(&run, "Running "), set(&["ingest"]), "{run}");
    assert!(
        run.contains("Fresh download (upstream ingest reran with identical output)"),
        "{run}"
    );
}

#[test]
fn missing_output_invalidates_cache() {
    let p = Project::small(120, SMALL_PIPELINE);
    p.ok(&["run"]);
    std::fs::remove_file(p.output_of("resize").join("meta.json")).unwrap();
    let status = p.status();
    let resize = status.iter().find(|s| s["name"] == "resize").unwrap();
    assert_eq!(resize["state"], "dirty");
    assert_eq!(resize["reason"], "output missing: `meta.json`");
    let run = p.ok(&["run"]);
    // Resize reruns and reproduces the same bytes, so nothing downstream reruns.
    assert_eq!(stages_with(&run, "Running "), set(&["resize"]), "{run}");
    assert!(p.output_of("resize").join("meta.json").exists());
}

#[test]
fn thread_count_does_not_invalidate_cache() {
    let p = Project::small(80, SMALL_PIPELINE);
    p.ok(&["run", "--threads", "1"]);
    let again = p.ok(&["run", "--threads", "2"]);
    assert!(stages_with(&again, "Running ").is_empty(), "{again}");
}

#[test]
fn moving_project_dir_keeps_cache() {
    let p = Project::small(80, SMALL_PIPELINE);
    p.ok(&["run"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args([
            "-r",
            &p.root.display().to_string(),
            &elsewhere.path().join("moved").display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new(BIN)
        .args(["run"])
        .current_dir(elsewhere.path().join("moved"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(stages_with(&stdout, "Fresh "), set(&ALL), "{stdout}");
}

#[test]
fn run_stage_brings_it_and_its_upstream_up_to_date_and_nothing_downstream() {
    let p = Project::small(80, SMALL_PIPELINE);
    let run = p.ok(&["run", "train"]);
    assert_eq!(
        stages_with(&run, "Running "),
        set(&["ingest", "download", "filter", "resize", "split", "train"])
    );
    assert!(!p.root.join("reports").exists());
    let status = p.status();
    let evaluate = status.iter().find(|s| s["name"] == "evaluate").unwrap();
    assert_eq!(evaluate["state"], "dirty");
    assert_eq!(evaluate["reason"], "never run");
    let forced = p.ok(&["run", "train", "--force", "split"]);
    assert_eq!(
        stages_with(&forced, "Running "),
        set(&["split"]),
        "identical split output keeps train fresh"
    );
}

#[test]
fn yaml_errors_name_file_line_and_key() {
    let p = Project::small(10, SMALL_PIPELINE);
    p.edit("width: 24", "width: [24");
    let out = p.pipeline(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `width: [24` is line 17; the parser notices the missing `]` on the next line.
    let line: usize = stderr
        .strip_prefix("error: pipeline.yaml:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `pipeline.yaml:LINE:` up front: {stderr}"));
    assert!((17..=18).contains(&line), "{stderr}");
    assert!(stderr.contains("stages.resize.params.width"), "{stderr}");

    let p = Project::small(10, SMALL_PIPELINE);
    p.edit("width: 24", "width: wide");
    let out = p.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.yaml:17"), "{stderr}");
    assert!(stderr.contains("stages.resize.params.width"), "{stderr}");

    let p = Project::small(10, SMALL_PIPELINE);
    p.edit("kind: resize", "kind: resise");
    let out = p.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.yaml:14"), "{stderr}");
    assert!(stderr.contains("did you mean `resize`?"), "{stderr}");

    let p = Project::small(10, SMALL_PIPELINE);
    p.edit("inputs: {shards: resize}", "inputs: {shards: train}");
    let out = p.pipeline(&["dag"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cycle"), "{stderr}");
}

#[test]
fn a_failing_stage_exits_1_and_leaves_no_entry() {
    let p = Project::small(10, SMALL_PIPELINE);
    std::fs::write(p.root.join("data/movies.csv"), "id,title\n1,x\n").unwrap();
    let out = p.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    // The reason is on stderr, next to the `error:` line, not only on stdout.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Failed ingest"), "{stderr}");
    assert!(stderr.contains("has no column `imdbId`"), "{stderr}");
    let entries = std::fs::read_dir(p.root.join("cache/v1/entries"))
        .unwrap()
        .count();
    assert_eq!(entries, 0);
    assert!(p.status().iter().all(|s| s["state"] == "dirty"));
}

#[test]
fn kill_during_training_leaves_no_fresh_looking_entry() {
    let p = Project::small(120, &SMALL_PIPELINE.replace("epochs: 2", "epochs: 40"));
    let mut child = Command::new(BIN)
        .args(["run", "--threads", "1"])
        .current_dir(&p.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the run reaches train").unwrap();
        if line.starts_with("Running train") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();
    let status = p.status();
    let state = |name: &str| status.iter().find(|s| s["name"] == name).unwrap()["state"].clone();
    assert_eq!(state("split"), "fresh");
    assert_eq!(state("train"), "dirty");
    let train_key = status.iter().find(|s| s["name"] == "train").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!p.root.join("cache/v1/entries").join(&train_key).exists());
    // The next run picks up where the killed one stopped.
    p.edit("epochs: 40", "epochs: 1");
    let run = p.ok(&["run"]);
    assert_eq!(
        stages_with(&run, "Running "),
        set(&["train", "evaluate"]),
        "{run}"
    );
    let leftovers = std::fs::read_dir(p.root.join("cache/v1/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "the next run clears what the killed one left");
}

#[test]
fn a_training_killed_mid_way_resumes_at_its_last_epoch_and_ends_with_the_uninterrupted_weights() {
    let pipeline = SMALL_PIPELINE.replace(
        "params: {epochs: 2, batch_size: 16}",
        "params: {epochs: 10, batch_size: 16, augment: {hflip: true, crop_min_area: 0.8}, schedule: {decay: cosine, warmup_epochs: 1}}",
    );
    let whole = Project::small(120, &pipeline);
    whole.ok(&["run", "train"]);
    let killed = Project::small(120, &pipeline);
    let mut child = Command::new(BIN)
        .args(["run", "train"])
        .current_dir(&killed.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 as soon as the checkpoint after epoch 6 is complete: epoch 7 is under way.
    let work = killed.root.join("cache/v1/work");
    let checkpoints = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&work)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|key| {
                std::fs::read_dir(key.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|c| c.file_name().to_string_lossy().to_string())
            .filter(|name| !name.ends_with(".partial"))
            .collect();
        names.sort();
        names
    };
    let started = std::time::Instant::now();
    while !checkpoints()
        .iter()
        .any(|c| c.as_str() >= "checkpoint-0006")
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint after epoch 6"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch 7"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();
    // The newest is used (a kill between writing it and dropping the one before leaves both).
    let left = checkpoints();
    assert!((1..=2).contains(&left.len()), "{left:?}");
    let epoch: usize = left.last().unwrap()["checkpoint-".len()..].parse().unwrap();
    assert!((6..10).contains(&epoch), "{left:?}");

    // Other params are another key: that run starts from scratch and leaves the checkpoint alone.
    killed.edit("epochs: 10", "epochs: 3");
    let other = killed.ok(&["run", "train"]);
    assert!(!other.contains("resuming"), "{other}");
    killed.edit("epochs: 3", "epochs: 10");
    let resumed = killed.ok(&["run", "train"]);
    assert!(
        resumed.contains(&format!(
            "resuming from the checkpoint after epoch {epoch} of 10"
        )),
        "{resumed}"
    );
    let weights = |p: &Project| std::fs::read(p.output_of("train").join("model.bpk")).unwrap();
    assert!(
        weights(&whole) == weights(&killed),
        "the resumed training ended with other weights than the uninterrupted one"
    );
    let model = |p: &Project| std::fs::read(p.output_of("train").join("model.json")).unwrap();
    assert_eq!(model(&whole), model(&killed));
    assert_eq!(
        checkpoints(),
        Vec::<String>::new(),
        "committed: the working area is gone"
    );
    // Finished is finished: nothing reruns.
    let again = killed.ok(&["run", "train"]);
    assert!(stages_with(&again, "Running ").is_empty(), "{again}");
}

#[test]
fn a_device_the_binary_cannot_use_fails_before_anything_runs_with_the_fix() {
    let p = Project::small(20, SMALL_PIPELINE);
    // No GPU here or in CI: `cuda` is unusable in a flex build (no libtorch) and in a libtorch build
    // alike (no device), and both say what to use instead.
    for args in [
        &["run", "--device", "cuda"][..],
        &["run", "--device", "cuda:1"],
    ] {
        let out = p.pipeline(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--device flex"), "{stderr}");
    }
    let out = Command::new(BIN)
        .args(["run"])
        .env("PIPELINE_DEVICE", "tpu")
        .current_dir(&p.root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown device `tpu`"), "{stderr}");
    assert!(!p.root.join("cache").exists(), "nothing ran");
    let flex = p.ok(&["run", "--device", "flex", "train"]);
    assert!(flex.contains("on flex (CPU)"), "{flex}");
}

/// A real HTTP/1.1 server on 127.0.0.1: `respond` turns a request path into the raw response bytes.
fn http_server(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    http_server_raw(move |path, stream| {
        let _ = stream.write_all(&respond(path));
        let _ = stream.flush();
    })
}

/// A real HTTP/1.1 server on 127.0.0.1 whose handler writes to the connection itself (for slow
/// bodies and resets). Each connection serves one request.
fn http_server_raw(handle: impl Fn(&str, &mut std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&request)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                handle(&path, &mut stream);
            });
        }
    });
    port
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn http_status(code: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One route per download behaviour; counts requests to the flaky route.
fn serve(jpeg: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let flaky_hits = Arc::new(AtomicUsize::new(0));
    let hits = flaky_hits.clone();
    let port = http_server(move |path| match path {
        "/ok.jpg" => http_ok(&jpeg),
        "/missing.jpg" => http_status("404 Not Found"),
        "/error.jpg" => http_status("500 Internal Server Error"),
        "/flaky.jpg" => {
            if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                http_status("500 Internal Server Error")
            } else {
                http_ok(&jpeg)
            }
        }
        "/slow.jpg" => {
            std::thread::sleep(Duration::from_secs(4));
            http_ok(&jpeg)
        }
        "/truncated.jpg" => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                jpeg.len()
            )
            .into_bytes();
            r.extend_from_slice(&jpeg[..jpeg.len() / 2]);
            r
        }
        _ => http_status("404 Not Found"),
    });
    (port, flaky_hits)
}

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
    let (port, flaky_hits) = serve(jpeg.clone());
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
    assert_eq!(
        flaky_hits.load(Ordering::SeqCst),
        2,
        "flaky was retried once"
    );
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

/// Two independent branches, one of which fails.
const BRANCHES: &str = "\
stages:
  broken:
    kind: ingest
    files: {csv: data/bad.csv}
  fetch_broken:
    kind: download
    inputs: {movies: broken}
    files: {root: data}
  movies:
    kind: ingest
    files: {csv: data/movies.csv}
  fetch:
    kind: download
    inputs: {movies: movies}
    files: {root: data}
";

#[test]
fn keep_going_runs_independent_branches_and_still_fails() {
    let p = Project::small(20, BRANCHES);
    std::fs::write(p.root.join("data/bad.csv"), "id,title\n1,x\n").unwrap();
    // One stage at a time, so nothing else has started when `broken` fails.
    let out = p.pipeline(&["run", "-j", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stages_with(&stdout, "Running ").len() == 1,
        "stops at the first failure: {stdout}"
    );

    let out = p.pipeline(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "a failure still fails the run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stages_with(&stdout, "Running "),
        set(&["broken", "movies", "fetch"]),
        "{stdout}"
    );
    assert_eq!(
        stages_with(&stdout, "Skipped "),
        set(&["fetch_broken"]),
        "{stdout}"
    );
    assert!(
        stdout.contains("Skipped fetch_broken (upstream failed: broken)"),
        "{stdout}"
    );
}

#[test]
fn downstream_and_force_downstream_widen_the_run() {
    let p = Project::small(60, SMALL_PIPELINE);
    let dry = p.ok(&["run", "--dry-run"]);
    assert_eq!(stages_with(&dry, "Would run "), set(&ALL));
    assert!(!p.root.join("cache").exists(), "a dry run creates nothing");
    let run = p.ok(&["run", "split", "--downstream"]);
    assert_eq!(stages_with(&run, "Running "), set(&ALL));
    let forced = p.ok(&["run", "--force", "split"]);
    assert_eq!(
        stages_with(&forced, "Running "),
        set(&["split"]),
        "{forced}"
    );
    let forced = p.ok(&["run", "--force", "split", "--force-downstream"]);
    assert_eq!(
        stages_with(&forced, "Running "),
        set(&["split", "train", "evaluate"]),
        "{forced}"
    );
}

#[test]
fn a_second_run_waits_for_the_first_or_fails_with_no_wait() {
    let p = Project::small(20, SMALL_PIPELINE);
    p.ok(&["run", "ingest"]);
    let lock = std::fs::File::options()
        .write(true)
        .open(p.root.join("cache/v1/run.lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = p.pipeline(&["run", "ingest", "--no-wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `pipeline run` holds"));
    // `status` works while a run holds the project.
    assert!(
        p.status()
            .iter()
            .any(|s| s["name"] == "ingest" && s["state"] == "fresh")
    );
    let mut waiting = Command::new(BIN)
        .args(["run", "ingest"])
        .current_dir(&p.root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("Waiting for another `pipeline run`"),
        "{first}"
    );
    drop(lock);
    assert!(waiting.wait().unwrap().success());
    assert_eq!(lines.next().unwrap().unwrap(), "Fresh ingest");
}

#[test]
fn verify_finds_corruption_that_a_run_refuses_to_use_and_repair_evicts_it() {
    let p = Project::small(60, SMALL_PIPELINE);
    p.ok(&["run"]);
    assert!(p.ok(&["verify"]).contains("0 damaged"));
    let shard = p.output_of("resize").join("shard-00000.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF; // same size: only a rehash can tell
    std::fs::write(&shard, bytes).unwrap();

    let out = p.pipeline(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(stage `resize`): `shard-00000.parquet` does not match its hash"),
        "{stdout}"
    );

    let out = p.pipeline(&["run", "--force", "split"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the cached output of `resize` is corrupted"),
        "{stderr}"
    );

    assert!(p.ok(&["verify", "--repair"]).contains("Evicted"));
    let run = p.ok(&["run"]);
    assert_eq!(stages_with(&run, "Running "), set(&["resize"]), "{run}");
    assert!(p.ok(&["verify"]).contains("0 damaged"));
}

#[test]
fn gc_removes_unreferenced_entries_and_log_records_runs() {
    let p = Project::small(60, SMALL_PIPELINE);
    p.ok(&["run"]);
    p.edit("width: 24", "width: 16");
    p.ok(&["run"]);
    let entries = || {
        std::fs::read_dir(p.root.join("cache/v1/entries"))
            .unwrap()
            .count()
    };
    assert_eq!(
        entries(),
        11,
        "7 current + 4 from the first resize..evaluate"
    );
    assert!(
        p.ok(&["gc", "--keep", "2"])
            .starts_with("Removed 0 entries")
    );
    let gc = p.ok(&["gc"]);
    assert!(gc.starts_with("Removed 4 entries"), "{gc}");
    assert_eq!(entries(), 7);
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
    let log = p.ok(&["log", "--json"]);
    let runs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2);
    let second: Vec<(&str, &str)> = runs[1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["action"].as_str().unwrap()))
        .collect();
    assert_eq!(second[2], ("filter", "fresh"));
    assert_eq!(second[3], ("resize", "ran"));
    let text = p.ok(&["log"]);
    assert!(
        text.contains("params changed: resize.width 24 -> 16"),
        "{text}"
    );
    // Resize keeps no per-item files (it reuses rows of its earlier outputs); the decode verdicts
    // are all used by the current filter entry: no item goes.
    assert_eq!(items_removed(&gc), 0, "{gc}");
    let forced = p.ok(&["run", "--force", "resize"]);
    assert!(
        decoded_line(&forced, "resize")
            .trim()
            .starts_with("decoded 0,"),
        "a forced rerun takes every row from the output it replaces: {forced}"
    );
    p.edit("width: 16", "width: 24");
    let back = p.ok(&["run"]);
    assert!(
        decoded_line(&back, "resize").contains(", reused 0 from")
            && !decoded_line(&back, "resize").contains("decoded 0,"),
        "the 24x24 output was collected, so every poster is decoded again: {back}"
    );
}

/// `Removed N entries and M items ...` -> M.
fn items_removed(gc: &str) -> usize {
    gc.split(" entries and ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{gc}"))
}

#[test]
fn gc_collects_the_items_only_collected_entries_used() {
    let p = Project::small(60, SMALL_PIPELINE);
    let csv_path = p.root.join("data/movies.csv");
    let full = std::fs::read(&csv_path).unwrap();
    p.ok(&["run", "filter"]);
    // Keep the header and the first 20 movies: the first filter entry is the only user of the
    // other posters' decode verdicts.
    let lines: Vec<&[u8]> = full.split_inclusive(|&b| b == b'\n').collect();
    std::fs::write(&csv_path, lines[..21].concat()).unwrap();
    p.ok(&["run", "filter"]);
    let gc = p.ok(&["gc"]);
    let removed = items_removed(&gc);
    assert!(removed > 10, "{gc}");
    // Each collected verdict must be recomputed, and nothing else.
    std::fs::write(&csv_path, &full).unwrap();
    let run = p.ok(&["run", "filter"]);
    assert!(
        decoded_line(&run, "filter").contains(&format!("decoded {removed} posters")),
        "{removed} verdicts collected: {run}"
    );
}

const INCREMENTAL: &str = "\
stages:
  ingest:
    kind: ingest
    files: {csv: data/movies.csv}
  download:
    kind: download
    inputs: {movies: ingest}
    files: {root: data}
  filter:
    kind: filter
    inputs: {movies: ingest, posters: download}
    params: {min_year: null, min_genre_count: 1}
  resize:
    kind: resize
    inputs: {movies: filter, posters: download}
    params: {width: 24, height: 24}
";

/// The second summary line of a stage (`Finished X` then two indented lines).
fn decoded_line<'a>(stdout: &'a str, stage: &str) -> &'a str {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("Finished {stage}")));
    lines
        .find(|l| l.contains("decoded"))
        .unwrap_or_else(|| panic!("no decode line for {stage}: {stdout}"))
}

#[test]
fn adding_movies_fetches_and_decodes_only_the_new_posters() {
    let sample = Path::new(REPO).join("data/sample");
    let posters = sample.join("posters");
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let port = http_server(move |path| {
        counter.fetch_add(1, Ordering::SeqCst);
        match std::fs::read(posters.join(path.trim_start_matches("/posters/"))) {
            Ok(bytes) => http_ok(&bytes),
            Err(_) => http_status("404 Not Found"),
        }
    });
    let csv = std::fs::read(sample.join("movies.csv")).unwrap();
    let lines: Vec<Vec<u8>> = csv
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let text = l.iter().map(|&b| b as char).collect::<String>();
            let text = text.replace(",posters/", &format!(",http://127.0.0.1:{port}/posters/"));
            text.chars().map(|c| c as u8).collect()
        })
        .collect();
    let p = Project::small(0, INCREMENTAL);
    let write_movies = |range: std::ops::Range<usize>| {
        let mut out = lines[0].clone();
        out.push(b'\n');
        for line in &lines[range] {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        std::fs::write(p.root.join("data/movies.csv"), out).unwrap();
    };

    write_movies(1..36);
    let run = p.ok(&["run"]);
    assert_eq!(requests.load(Ordering::SeqCst), 35);
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
        requests.load(Ordering::SeqCst),
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
    assert_eq!(
        requests.load(Ordering::SeqCst),
        40,
        "removing movies fetches nothing"
    );
    assert!(
        decoded_line(&run, "filter").contains("decoded 0 posters"),
        "{run}"
    );
    assert!(decoded_line(&run, "resize").contains("decoded 0,"), "{run}");

    p.edit("width: 24", "width: 16");
    let run = p.ok(&["run"]);
    assert_eq!(stages_with(&run, "Running "), set(&["resize"]), "{run}");
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
    let fetched = requests.load(Ordering::SeqCst);
    let run = p.ok(&[
        "run",
        "--force",
        "download",
        "--force",
        "resize",
        "--no-reuse",
    ]);
    assert_eq!(requests.load(Ordering::SeqCst), fetched + 30, "{run}");
    assert!(
        decoded_line(&run, "resize").contains("decoded 30, reused 0"),
        "{run}"
    );
}

/// The small pipeline with a second model and a statistics stage, both beside `train`.
fn with_parallel_branches() -> String {
    SMALL_PIPELINE.replace(
        "  evaluate:\n",
        "  train_b:\n    kind: train\n    inputs: {data: split}\n    params: {epochs: 2, batch_size: 16, seed: 8}\n  stats:\n    kind: stats\n    inputs: {data: split}\n  evaluate:\n",
    )
}

/// `(started, ended)` of each stage that ran in the last recorded run.
fn last_run_spans(p: &Project) -> std::collections::BTreeMap<String, (f64, f64)> {
    let log = p.ok(&["log", "-n", "1", "--json"]);
    let run: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "ran")
        .map(|s| {
            let started = s["started"].as_f64().unwrap();
            let seconds = s["seconds"].as_f64().unwrap();
            (
                s["name"].as_str().unwrap().to_string(),
                (started, started + seconds),
            )
        })
        .collect()
}

#[test]
fn independent_stages_overlap_with_jobs_and_not_with_one_job() {
    let p = Project::small(120, &with_parallel_branches());
    p.ok(&["run", "--jobs", "2", "--threads", "1"]);
    let spans = last_run_spans(&p);
    let (a, b) = (spans["train"], spans["train_b"]);
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "train {a:?} and train_b {b:?} should overlap with --jobs 2"
    );
    // A chain never overlaps: split waited for resize to finish.
    assert!(spans["resize"].1 <= spans["split"].0, "{spans:?}");
    // The run record is the same outputs either way: one job reruns them one after another.
    p.ok(&[
        "run",
        "-j",
        "1",
        "--force",
        "train",
        "--force",
        "train_b",
        "--threads",
        "1",
    ]);
    let spans = last_run_spans(&p);
    let (a, b) = (spans["train"], spans["train_b"]);
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "train {a:?} and train_b {b:?} must not overlap with -j 1"
    );
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
}

/// Sets the mtime of every file below `dir` to an hour ago, so the stat cache trusts them
/// (files modified in the last two seconds are always rehashed).
fn age_files(dir: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age_files(&path);
        } else {
            set_mtime(&path, past);
        }
    }
}

fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn verify_catches_a_content_change_that_kept_size_mtime_and_inode() {
    let p = Project::small(30, SMALL_PIPELINE);
    age_files(&p.root.join("data"));
    p.ok(&["run", "--dry-run"]);
    assert!(
        !p.root.join("cache").exists(),
        "a dry run keeps no stat cache"
    );
    p.ok(&["run"]);
    assert!(p.root.join("cache/v1/stat-cache.json").exists());

    // Rewrite the CSV in place with one title letter changed: same size, same inode, old mtime.
    let csv = p.root.join("data/movies.csv");
    let mtime = std::fs::metadata(&csv).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&csv).unwrap();
    // The second character of the first movie's title (after `imdbId,Imdb Link,`).
    let row = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let commas: Vec<usize> = (row..bytes.len())
        .filter(|&i| bytes[i] == b',')
        .take(2)
        .collect();
    let at = commas[1] + 2;
    assert!(bytes[at].is_ascii_alphabetic(), "a title letter");
    bytes[at] ^= 0x20; // swap its case
    std::fs::write(&csv, &bytes).unwrap();
    set_mtime(&csv, mtime);

    // By design the stat cache trusts the unchanged stamp (as git and DVC do)...
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
    // ...and verify rehashes, names the file and fails.
    let out = p.pipeline(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Stale data/movies.csv"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pipeline verify --repair"),
        "the error says how to fix it"
    );
    let repaired = p.ok(&["verify", "--repair"]);
    assert!(repaired.contains("Rehashed data/movies.csv"), "{repaired}");
    let status = p.status();
    let ingest = status.iter().find(|s| s["name"] == "ingest").unwrap();
    assert_eq!(ingest["state"], "dirty");
    assert_eq!(
        ingest["reason"], "file changed: `data/movies.csv`",
        "{ingest}"
    );
    assert!(p.ok(&["verify"]).contains("0 changed unseen"));
}

/// Output digest of each stage, from the lock file.
fn locked_outputs(p: &Project) -> std::collections::BTreeMap<String, String> {
    let lock: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(p.root.join("pipeline.lock")).unwrap())
            .unwrap();
    lock["stages"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, stage)| {
            (
                name.as_str().unwrap().to_string(),
                stage["outputs"]["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Starts `pipeline run --force <stage>`, waits for `Running <stage>`, sleeps `delay_ms` and sends
/// SIGKILL. Returns whether the kill interrupted the stage (it had not printed `Finished <stage>`).
fn kill_inside(p: &Project, stage: &str, delay_ms: u64) -> bool {
    let mut child = Command::new(BIN)
        .args(["run", "--threads", "1", "--force", stage])
        .current_dir(&p.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with(&format!("Running {stage} ")));
    assert!(started, "a forced stage always runs");
    std::thread::sleep(Duration::from_millis(delay_ms));
    child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
    child.wait().unwrap();
    // What it printed before dying is still in the pipe.
    !lines
        .map_while(Result::ok)
        .any(|line| line.starts_with(&format!("Finished {stage} ")))
}

#[test]
fn kill_at_several_points_in_several_stages_never_leaves_a_fresh_looking_partial_entry() {
    let pipeline = SMALL_PIPELINE.replace("epochs: 2", "epochs: 20");
    let reference = Project::small(300, &pipeline);
    reference.ok(&["run", "--threads", "1"]);

    let p = Project::small(300, &pipeline);
    p.ok(&["run", "--threads", "1"]);
    let mut interrupted = Vec::new();
    for stage in ["download", "filter", "resize", "split", "train", "evaluate"] {
        for delay_ms in [0, 20, 150] {
            if kill_inside(&p, stage, delay_ms) {
                interrupted.push(format!("{stage}+{delay_ms}ms"));
            }
            // Every entry that exists is complete and matches its manifest...
            let verify = p.pipeline(&["verify"]);
            assert!(
                verify.status.success(),
                "after a kill in {stage} at +{delay_ms} ms: {}",
                String::from_utf8_lossy(&verify.stdout)
            );
            // ...and a stage is fresh only with a complete entry behind it: every file its
            // manifest lists is there with that content (hashed here, not by the binary).
            for s in p.status() {
                if s["state"] == "fresh" {
                    let key = s["key"].as_str().unwrap();
                    let entry = p.root.join("cache/v1/entries").join(key);
                    let manifest: serde_json::Value = serde_json::from_slice(
                        &std::fs::read(entry.join("manifest.json")).unwrap(),
                    )
                    .unwrap();
                    let files = manifest["files"].as_object().unwrap();
                    for (rel, file) in files {
                        let bytes =
                            std::fs::read(entry.join("out").join(rel)).unwrap_or_else(|e| {
                                panic!("{stage}+{delay_ms}ms: `{rel}` of fresh {s}: {e}")
                            });
                        assert_eq!(
                            file["blake3"].as_str(),
                            Some(blake3::hash(&bytes).to_hex().as_str()),
                            "{stage}+{delay_ms}ms: `{rel}` of fresh {s}"
                        );
                    }
                }
            }
        }
    }
    // The kills right after a stage started caught it mid-run (train takes long enough for every
    // delay; the other stages at least at +0 ms).
    for must in [
        "download+0ms",
        "filter+0ms",
        "resize+0ms",
        "train+0ms",
        "train+20ms",
        "train+150ms",
        "evaluate+0ms",
    ] {
        assert!(
            interrupted.iter().any(|i| i == must),
            "{must} was not interrupted: {interrupted:?}"
        );
    }
    // The next run finishes the job, with the same outputs as a run that was never killed.
    p.ok(&["run", "--threads", "1"]);
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
    let (got, want) = (locked_outputs(&p), locked_outputs(&reference));
    for stage in ["ingest", "download", "filter", "resize", "split"] {
        assert_eq!(
            got[stage], want[stage],
            "{stage} output differs after the kills"
        );
    }
    assert!(
        std::fs::read_dir(p.root.join("cache/v1/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no leftovers of killed runs"
    );
}

fn http_redirect(to: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Closes the connection with a TCP reset instead of an orderly shutdown.
fn reset(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

type Hits = Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<std::time::Instant>>>>;

/// Every way a poster server can misbehave, one route each; records when each route was hit.
fn hostile_server(jpeg: Vec<u8>) -> (u16, Hits) {
    let hits: Hits = Default::default();
    let log = hits.clone();
    let port = http_server_raw(move |path, stream| {
        let n = {
            let mut log = log.lock().unwrap();
            let times = log.entry(path.to_string()).or_default();
            times.push(std::time::Instant::now());
            times.len()
        };
        let head = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        let response = match path {
            "/ok.jpg" | "/chain-end.jpg" => http_ok(&jpeg),
            "/gone.jpg" => http_status("410 Gone"),
            "/missing.jpg" => http_status("404 Not Found"),
            "/flaky.jpg" if n == 1 => http_status("500 Internal Server Error"),
            "/flaky.jpg" => http_ok(&jpeg),
            "/busy.jpg" if n == 1 => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            "/busy.jpg" => http_ok(&jpeg),
            "/too-busy.jpg" => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            "/slow-body.jpg" => {
                let _ = stream.write_all(head(jpeg.len()).as_bytes());
                let _ = stream.write_all(&jpeg[..jpeg.len() / 2]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_secs(3));
                jpeg[jpeg.len() / 2..].to_vec()
            }
            "/reset.jpg" => {
                let _ = stream.write_all(head(jpeg.len()).as_bytes());
                let _ = stream.write_all(&jpeg[..jpeg.len() / 3]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_millis(50));
                reset(stream.try_clone().unwrap());
                return;
            }
            "/cut.jpg" => {
                // A complete HTTP body that holds only the first half of a JPEG.
                let half = &jpeg[..jpeg.len() / 2];
                let mut r = head(half.len()).into_bytes();
                r.extend_from_slice(half);
                r
            }
            "/page.jpg" => {
                let page = b"<!DOCTYPE html><html><body>Poster not available</body></html>";
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", page.len()).into_bytes();
                r.extend_from_slice(page);
                r
            }
            "/huge.jpg" => {
                let mut r = head(3_000_000).into_bytes();
                r.extend(std::iter::repeat_n(0u8, 3_000_000));
                r
            }
            "/huge-undeclared.jpg" => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n".to_vec();
                r.extend(std::iter::repeat_n(0u8, 3_000_000));
                r
            }
            "/chain-1.jpg" => http_redirect("/chain-2.jpg"),
            "/chain-2.jpg" => http_redirect("/chain-3.jpg"),
            "/chain-3.jpg" => http_redirect("/chain-end.jpg"),
            "/loop-a.jpg" => http_redirect("/loop-b.jpg"),
            "/loop-b.jpg" => http_redirect("/loop-a.jpg"),
            _ => http_status("404 Not Found"),
        };
        let _ = stream.write_all(&response);
        let _ = stream.flush();
    });
    (port, hits)
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
    let (port, hits) = hostile_server(jpeg.clone());
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

    let count = |route: &str| hits.lock().unwrap().get(route).map_or(0, Vec::len);
    assert_eq!(count("/flaky.jpg"), 2, "500 then 200: retried once");
    assert_eq!(count("/gone.jpg"), 1, "410 is final");
    assert_eq!(
        count("/too-busy.jpg"),
        1,
        "a wait over the limit is not waited for"
    );
    assert_eq!(count("/reset.jpg"), 2, "a reset is retried");
    let busy = hits.lock().unwrap()["/busy.jpg"].clone();
    assert_eq!(busy.len(), 2);
    assert!(
        busy[1] - busy[0] >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        busy[1] - busy[0]
    );
    assert!(count("/loop-a.jpg") <= 4, "a loop stops");

    // Failures are remembered: a rerun (the CSV grew) does not request them again...
    let before: usize = hits.lock().unwrap().values().map(Vec::len).sum();
    std::fs::write(
        root.join("data/movies.csv"),
        format!(
            "{header}{rows}100,l,Movie 100 (2011),5,Drama,{}\n",
            url("ok.jpg")
        ),
    )
    .unwrap();
    let second = p.ok(&["run"]);
    let after: usize = hits.lock().unwrap().values().map(Vec::len).sum();
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

/// A poster server that answers after `delay`, counting how many requests it serves at once.
/// Returns the port and (requests in flight now, the most ever in flight).
fn counting_server(
    jpeg: Vec<u8>,
    delay: Duration,
    everywhere: Arc<(AtomicUsize, AtomicUsize)>,
) -> (u16, Arc<(AtomicUsize, AtomicUsize)>) {
    let here = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let counts = here.clone();
    let port = http_server(move |_| {
        for (now, max) in [&*counts, &*everywhere].map(|c| (&c.0, &c.1)) {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
        }
        std::thread::sleep(delay);
        for now in [&counts.0, &everywhere.0] {
            now.fetch_sub(1, Ordering::SeqCst);
        }
        http_ok(&jpeg)
    });
    (port, here)
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
    let everywhere = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let delay = Duration::from_millis(300);
    // Two ports on 127.0.0.1 are two hosts (`host:port`).
    let (port_a, a) = counting_server(jpeg.clone(), delay, everywhere.clone());
    let (port_b, b) = counting_server(jpeg.clone(), delay, everywhere.clone());
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
    assert_eq!(
        a.1.load(Ordering::SeqCst),
        2,
        "host A never saw more than 2"
    );
    assert_eq!(
        b.1.load(Ordering::SeqCst),
        2,
        "host B never saw more than 2"
    );
    assert!(
        everywhere.1.load(Ordering::SeqCst) >= 3,
        "the hosts were served side by side (max {} in flight)",
        everywhere.1.load(Ordering::SeqCst)
    );
    // Concurrency limits tune how, not what: changing them reruns nothing.
    p.edit("max_per_host: 2", "max_per_host: 4");
    p.edit("max_in_flight: 8", "max_in_flight: 3");
    let second = p.ok(&["run"]);
    assert!(stages_with(&second, "Running").is_empty(), "{second}");
    // A bad limit is an error that names the param.
    p.edit("max_per_host: 4", "max_per_host: 0");
    let out = p.pipeline(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("max_per_host"), "{stderr}");
}

#[test]
fn remembered_failures_expire_after_the_configured_time_and_are_retried() {
    let (port, hits) = hostile_server(Vec::new());
    let url = format!("http://127.0.0.1:{port}/missing.jpg");
    // 0.004 h = 14.4 s, rounded up to 15 s: room for the second run to come before it is due
    // on any machine, so the check below always runs.
    let p = download_only_project(&[url], "retries: 0, retry_failed_after_hours: 0.004");
    let count = || hits.lock().unwrap().get("/missing.jpg").map_or(0, Vec::len);
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
    assert!(stages_with(&again, "Running").is_empty(), "{again}");
    assert_eq!(count(), 1, "not asked again before it is due");
    // Due at most 15 s after the first run's download began.
    std::thread::sleep(Duration::from_millis(15_500).saturating_sub(first_done.elapsed()));
    let status = p.ok(&["status"]);
    assert!(status.contains("output expired"), "{status}");
    assert!(status.contains("retry_failed_after_hours"), "{status}");
    let retried = p.ok(&["run"]);
    assert_eq!(
        stages_with(&retried, "Running"),
        set(&["download"]),
        "{retried}"
    );
    assert_eq!(count(), 2, "asked again once due");
}

/// The Python of `.venv` with pyarrow, made on first use (what `.ci/run` does up front).
fn python_with_pyarrow() -> PathBuf {
    python_with(&["pyarrow>=15"], "pyarrow")
}

/// `.venv`'s Python with `packages` installed (made when `import modules` fails, as `.ci/run`
/// makes it).
fn python_with(packages: &[&str], modules: &str) -> PathBuf {
    let venv = Path::new(REPO).join(".venv");
    let python = venv.join("bin/python");
    let has_them = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_them(&python) {
        let made = (python.exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success()))
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made && has_them(&python),
            "this test needs Python with {}: `python3 -m venv .venv && .venv/bin/pip install {}` (as .ci/run does)",
            modules,
            packages.join(" ")
        );
    }
    python
}

/// Runs a Python `script` with `args` and parses what it prints as JSON; fails with its stderr.
fn python_json(python: &Path, script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const READ_WITH_PYARROW: &str = r#"
import json, sys
import pyarrow.parquet as pq
path = sys.argv[1]
meta = json.load(open(sys.argv[2]))
f = pq.ParquetFile(path)
t = f.read()
images = t.column("image").to_pylist()
print(json.dumps({
    "types": {field.name: str(field.type) for field in t.schema},
    "row_groups": f.num_row_groups,
    "ids": t.column("imdbId").to_pylist(),
    "posters": t.column("poster").to_pylist(),
    "image_lengths": sorted({len(b) for b in images}),
    "images_hex": [b.hex() for b in images],
    "pixel_0_0": list(images[0][:3]),
    "pixel_last": list(images[0][-3:]),
    "labels": t.column("labels").to_pylist(),
    "shape": [meta["height"], meta["width"], meta["channels"]],
}))
"#;

#[test]
fn metrics_agree_with_scikit_learn_for_thresholds_and_top_k_and_both_baselines() {
    let python = python_with(&["pyarrow>=15", "scikit-learn>=1.3"], "pyarrow, sklearn");
    let p = Project::small(300, SMALL_PIPELINE);
    for decision in ["micro-f1", "top-k"] {
        p.edit(
            "params: {epochs: 2, batch_size: 16",
            &format!("params: {{decision: {decision}, epochs: 2, batch_size: 16"),
        );
        p.ok(&["run"]);
        let reports = p.root.join("reports");
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reports.join("metrics.json")).unwrap())
                .unwrap();
        let model = &metrics["models"][0];
        assert_eq!(model["decision"]["rule"], decision, "{model}");
        assert_eq!(model["top_k"].is_null(), decision != "top-k", "{model}");
        assert!(reports.join("predictions.parquet").is_file());
        let out = Command::new(&python)
            .arg(Path::new(REPO).join("tests/metrics_vs_sklearn.py"))
            .arg(&reports)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{decision}`: metrics.json disagrees with scikit-learn:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every genre, both operating points, the model and two baselines: hundreds of values.
        let checked: usize = stdout
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        assert!(checked > 300, "{stdout}");
        p.edit(&format!("decision: {decision}, "), "");
    }
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

/// Runs `pipeline args` in `root` and returns its peak resident set in bytes, from the kernel's
/// accounting of the finished child (`wait4`'s `ru_maxrss`), not from sampling.
// The child is reaped by `wait4` (which reports its resources), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn peak_rss_of_run(root: &Path, args: &[&str]) -> u64 {
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
fn flat_poster_jpeg(seed: u32) -> Vec<u8> {
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
fn free_bytes(path: &Path) -> u64 {
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
fn flat_poster_project(posters: usize, pipeline: &str) -> Project {
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

#[test]
fn training_at_224_streams_4000_posters_in_less_memory_than_the_split_takes_decoded() {
    const POSTERS: usize = 4_000;
    const SIDE: usize = 224;
    // EfficientNet-Lite0 with its blocks frozen: the cheapest network that trains at 224x224 here
    // (about 15 posters/s on 2 cores; the small CNN's 3 would make this a 15-minute test). The
    // data path is the one every image network streams through. Small shards, window and batch,
    // so the bound left for the data (one shard, the window, 3 packed batches) is far below the
    // split's own size. Measured here: 370 MiB peak over 2,880 posters (413 MiB decoded), most of
    // it the network and glibc's heap growth over the epoch (250 MiB with a fixed mmap threshold),
    // so 4,000 posters leave a clear margin.
    let p = flat_poster_project(
        POSTERS,
        &format!(
            "{}  split:
    kind: split
    inputs: {{shards: resize}}
    params: {{val_fraction: 0.02, test_fraction: 0.02}}
  train:
    kind: train
    inputs: {{data: split}}
    files: {{weights: weights.pth}}
    params: {{architecture: efficientnet-lite0, finetune_blocks: 0, epochs: 1, batch_size: 8, shuffle_window: 64}}
",
            INCREMENTAL.replace(
                "{width: 24, height: 24}",
                "{width: 224, height: 224, mode: stretch, shard_rows: 128}",
            )
        ),
    );
    std::fs::copy(Path::new(REPO).join(WEIGHTS), p.root.join("weights.pth")).unwrap();
    p.ok(&["run", "split"]);
    let started = std::time::Instant::now();
    let peak = peak_rss_of_run(&p.root, &["run", "train"]);
    let seconds = started.elapsed().as_secs_f64();
    let history: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.output_of("train").join("history.json")).unwrap(),
    )
    .unwrap();
    let train_rows = history["train_rows"].as_u64().unwrap() as usize;
    // What holding the training split in memory would take, as u8 pixels (as f32, 4 times this).
    let split_bytes = (train_rows * SIDE * SIDE * 3) as u64;
    eprintln!(
        "train at {SIDE}x{SIDE} over {train_rows} posters: peak resident {} MiB, the split decoded {} MiB, {seconds:.1} s",
        peak >> 20,
        split_bytes >> 20
    );
    assert!(train_rows >= POSTERS * 9 / 10, "{history}");
    assert_eq!(history["epochs"].as_array().unwrap().len(), 1, "{history}");
    assert!(
        peak < split_bytes,
        "peak resident {} MiB, more than the {} MiB the split takes decoded",
        peak >> 20,
        split_bytes >> 20
    );
}

/// The backbone checkpoint shipped in the repository.
const WEIGHTS: &str = "models/efficientnet-lite0/efficientnet-lite0-57934424.pth";

/// [`INCREMENTAL`], then `split` and `embed` at a small input size so the tests run in seconds.
fn embedding_pipeline() -> String {
    format!(
        "{INCREMENTAL}  split:
    kind: split
    inputs: {{shards: resize}}
  embed:
    kind: embed
    inputs: {{data: split, posters: download}}
    files: {{weights: weights.pth}}
    params: {{width: 64, height: 96}}
"
    )
}

/// The line of `stage`'s summary that counts computed embeddings.
fn computed_line<'a>(stdout: &'a str, stage: &str) -> &'a str {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("Finished {stage}")))
        .find(|l| l.contains("computed"))
        .unwrap_or_else(|| panic!("no `computed` line for {stage}: {stdout}"))
}

fn computed(stdout: &str, stage: &str) -> (usize, usize) {
    let line = computed_line(stdout, stage);
    let number_after = |word: &str| -> usize {
        line.split(word)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no `{word}` count in `{line}`"))
    };
    (number_after("computed "), number_after("reused "))
}

#[test]
fn adding_movies_computes_only_the_new_embeddings() {
    let p = Project::small(0, &embedding_pipeline());
    std::fs::copy(Path::new(REPO).join(WEIGHTS), p.root.join("weights.pth")).unwrap();
    let sample = std::fs::read(Path::new(REPO).join("data/sample/movies.csv")).unwrap();
    let lines: Vec<&[u8]> = sample
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let write_movies = |range: std::ops::Range<usize>| {
        let mut out = lines[0].to_vec();
        out.push(b'\n');
        for line in &lines[range] {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        std::fs::write(p.root.join("data/movies.csv"), out).unwrap();
    };

    write_movies(1..41);
    let run = p.ok(&["run"]);
    let (first, reused) = computed(&run, "embed");
    assert_eq!(reused, 0, "{run}");
    assert!(
        first >= 30,
        "most of the 40 movies have a usable poster: {run}"
    );

    write_movies(1..51);
    let run = p.ok(&["run"]);
    let (new, reused) = computed(&run, "embed");
    assert_eq!(
        (new, reused),
        (10, first),
        "10 new movies, 10 forward passes: {run}"
    );

    write_movies(1..31);
    let run = p.ok(&["run"]);
    let (none, _) = computed(&run, "embed");
    assert_eq!(none, 0, "removing movies computes nothing: {run}");

    // Another split moves movies between train, val and test: found by poster, not recomputed.
    let shards = |p: &Project| {
        let out = p.output_of("embed");
        ["train", "val", "test"]
            .map(|s| std::fs::read_to_string(out.join(s).join("meta.json")).unwrap())
    };
    let before = shards(&p);
    p.edit(
        "inputs: {shards: resize}",
        "inputs: {shards: resize}\n    params: {seed: 5}",
    );
    let run = p.ok(&["run"]);
    assert_eq!(computed(&run, "embed").0, 0, "{run}");
    assert_ne!(shards(&p), before, "the seed moved movies");

    p.edit("width: 64, height: 96", "width: 64, height: 64");
    let run = p.ok(&["run"]);
    let (all, reused) = computed(&run, "embed");
    assert_eq!(reused, 0, "a new input size recomputes everything: {run}");
    let movies = all;

    // Other weights (one value of the last tensor changed) are a new key and recompute it all.
    let path = p.root.join("weights.pth");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 8;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let run = p.ok(&["run"]);
    assert!(run.contains("Running embed (file changed"), "{run}");
    assert_eq!(computed(&run, "embed"), (movies, 0), "{run}");
}

/// The Python of `.venv` with pyarrow (see [`python_with_pyarrow`]).
#[test]
fn embeddings_are_readable_by_pyarrow_with_their_labels() {
    let p = Project::small(40, &embedding_pipeline());
    std::fs::copy(Path::new(REPO).join(WEIGHTS), p.root.join("weights.pth")).unwrap();
    p.ok(&["run"]);
    let python = python_with_pyarrow();
    let dir = p.output_of("embed").join("train");
    let script = r#"
import json, sys, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
meta = json.load(open(d + "/meta.json"))
rows = 0
for s in meta["shards"]:
    t = pq.read_table(d + "/" + s["file"])
    assert t.column_names == ["imdbId", "poster", "embedding", "labels"], t.column_names
    emb = t.column("embedding").combine_chunks()
    assert pa.types.is_fixed_size_list(emb.type) and emb.type.list_size == 1280, emb.type
    assert emb.type.value_type == pa.float32(), emb.type
    assert all(len(v) == meta["dim"] for v in emb.to_pylist())
    assert all(0.0 <= x <= 6.0 for v in emb.to_pylist() for x in v)
    lab = t.column("labels").to_pylist()
    assert all(len(v) == len(meta["genres"]) and set(v) <= {0, 1} for v in lab)
    rows += t.num_rows
assert rows == sum(s["rows"] for s in meta["shards"])
print(rows)
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(rows > 10, "{rows}");
}

#[test]
fn fine_tuning_the_backbone_needs_its_weights_and_runs_from_the_pipeline() {
    let pipeline = SMALL_PIPELINE
        .replace("width: 24\n      height: 24", "width: 32\n      height: 32")
        .replace(
            "params: {epochs: 2, batch_size: 16}",
            "params: {architecture: efficientnet-lite0, finetune_blocks: 1, epochs: 1, batch_size: 16}",
        );
    assert!(pipeline.contains("efficientnet-lite0") && pipeline.contains("width: 32"));
    let p = Project::small(60, &pipeline);
    let out = p.pipeline(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("add `files: {weights: models/efficientnet-lite0/"),
        "the error says what to bind: {stderr}"
    );

    std::fs::copy(Path::new(REPO).join(WEIGHTS), p.root.join("weights.pth")).unwrap();
    p.edit(
        "inputs: {data: split}\n",
        "inputs: {data: split}\n    files: {weights: weights.pth}\n",
    );
    let run = p.ok(&["run"]);
    assert!(run.contains("efficientnet-lite0 on 32x32 images"), "{run}");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.root.join("reports/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["models"][0]["architecture"], "efficientnet-lite0");
}

/// The id of the last recorded run.
fn last_run(p: &Project) -> serde_json::Value {
    let log = p.ok(&["log", "--json", "-n", "1"]);
    serde_json::from_str(log.trim()).unwrap()
}

/// The run folders below `reports/`, oldest first.
fn report_folders(p: &Project) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(p.root.join("reports"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("run.json").is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    found.sort();
    found
}

#[test]
fn an_override_runs_once_like_an_edit_and_metrics_diff_compares_the_published_runs() {
    let p = Project::small(150, SMALL_PIPELINE);
    p.ok(&["run"]);
    let first = last_run(&p)["id"].as_str().unwrap().to_string();
    let yaml = std::fs::read(p.root.join("pipeline.yaml")).unwrap();

    let overrides = ["train.epochs=3", "train.learning_rate=0.01"];
    let out = p.ok(&["run", "-S", overrides[0], "--set", overrides[1]]);
    assert_eq!(
        stages_with(&out, "Running "),
        set(&["train", "evaluate"]),
        "{out}"
    );
    assert!(
        out.contains("train.epochs 2 -> 3"),
        "the reason names the param: {out}"
    );
    assert_eq!(
        std::fs::read(p.root.join("pipeline.yaml")).unwrap(),
        yaml,
        "never written"
    );
    let record = last_run(&p);
    let second = record["id"].as_str().unwrap().to_string();
    assert_eq!(record["overrides"], serde_json::json!(overrides));
    assert_ne!(first, second);

    // Each run that evaluated keeps its report; the top is the latest, dressed with its context.
    assert_eq!(report_folders(&p), [first.clone(), second.clone()]);
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.root.join("reports/run.json")).unwrap())
            .unwrap();
    assert_eq!(latest["id"], second.as_str());
    assert_eq!(latest["stages"]["train"]["params"]["epochs"], 3);
    let html = std::fs::read_to_string(p.root.join("reports/index.html")).unwrap();
    assert_eq!(
        html,
        std::fs::read_to_string(p.root.join("reports").join(&second).join("index.html")).unwrap()
    );
    assert!(
        html.contains(&format!(
            "compared with the run before it, <code>{first}</code>"
        )),
        "the summary compares with the previous run"
    );
    assert!(html.contains("-S train.epochs=3"));

    // `metrics diff` (previous against latest) and `metrics show`, as JSON.
    let diff: serde_json::Value =
        serde_json::from_str(&p.ok(&["metrics", "diff", "--json"])).unwrap();
    assert_eq!(
        (diff["old"].as_str(), diff["new"].as_str()),
        (Some(first.as_str()), Some(second.as_str()))
    );
    let metric = |name: &str| {
        diff["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {diff}"))
            .clone()
    };
    let micro = metric("primary.micro_f1");
    let read = |run: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(p.root.join("reports").join(run).join("metrics.json"))
                .unwrap(),
        )
        .unwrap()
    };
    let micro_of = |run: &str| {
        read(run)["models"][0]["test"]["decided"]["micro_f1"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(micro["old"].as_f64(), Some(micro_of(&first)));
    assert_eq!(micro["new"].as_f64(), Some(micro_of(&second)));
    assert!(
        (micro["change"].as_f64().unwrap() - (micro_of(&second) - micro_of(&first))).abs() < 1e-12
    );
    assert_eq!(
        metric("baseline-prior.macro_f1")["change"],
        0.0,
        "same test split, same baseline"
    );
    let show: serde_json::Value =
        serde_json::from_str(&p.ok(&["metrics", "show", "--json", "previous"])).unwrap();
    assert_eq!(show["run"], first.as_str());
    assert_eq!(
        show["metrics"]["primary.micro_f1"].as_f64(),
        Some(micro_of(&first))
    );
    let text = p.ok(&["metrics", "diff", &first, &second]);
    assert!(
        text.lines().any(|l| l.starts_with("primary.micro_f1")),
        "{text}"
    );

    // `predict --model RUN` asks the model that run had: the first run's probabilities for a
    // test poster, as that run's evaluate wrote them, not the latest model's.
    let split = p.output_of("split").join("test");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("meta.json")).unwrap()).unwrap();
    let genres = meta["genres"].as_array().unwrap().len();
    let shard = stage_shards::read_shard_labels(
        &split.join(meta["shards"][0]["file"].as_str().unwrap()),
        genres,
    )
    .unwrap();
    let poster = p.output_of("download").join(&shard.posters[0]);
    let probs_of = |args: &[&str]| -> Vec<f64> {
        let answer: serde_json::Value = serde_json::from_str(&p.ok(args)).unwrap();
        answer["posters"][0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let poster = poster.to_str().unwrap();
    for run in [&first, &second] {
        let evaluated = stage_shards::predictions::Predictions::read(
            &p.root.join("reports").join(run).join("predictions.parquet"),
            genres,
        )
        .unwrap();
        let row = evaluated
            .ids
            .iter()
            .position(|&id| id == shard.ids[0])
            .unwrap();
        let got = probs_of(&["predict", "--json", "--model", run, poster]);
        for (a, b) in got
            .iter()
            .zip(&evaluated.probs[row * genres..(row + 1) * genres])
        {
            assert!((a - f64::from(*b)).abs() < 1e-5, "run {run}: {a} vs {b}");
        }
    }
    assert_ne!(
        probs_of(&["predict", "--json", "--model", &first, poster]),
        probs_of(&["predict", "--json", poster]),
        "two epochs and three give other weights"
    );

    // The same values written into the file key the same: nothing is dirty.
    p.edit(
        "params: {epochs: 2, batch_size: 16}",
        "params: {epochs: 3, learning_rate: 0.01, batch_size: 16}",
    );
    assert!(
        p.status().iter().all(|s| s["state"] == "fresh"),
        "{:?}",
        p.status()
    );
    p.ok(&["run"]);
    assert_eq!(
        report_folders(&p).len(),
        2,
        "a run that changed nothing publishes nothing new"
    );

    // A bad override is a usage error naming the override, before anything runs.
    let out = p.pipeline(&["run", "-S", "train.epochs=many"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pipeline.yaml") && stderr.contains("`-S train.epochs=many`"),
        "{stderr}"
    );
    let out = p.pipeline(&["run", "-S", "trian.epochs=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stage `trian`"));
}

#[test]
fn dag_prints_dot_that_a_graphviz_parser_reads_and_a_mermaid_flowchart() {
    let python = python_with(&["pydot"], "pydot");
    let p = Project::small(10, SMALL_PIPELINE);
    let dot = p.ok(&["dag", "--format", "dot"]);
    let script = r#"
import json, sys, pydot
(graph,) = pydot.graph_from_dot_data(sys.stdin.read())
edges = sorted([e.get_source().strip('"'), e.get_destination().strip('"'), e.get_label().strip('"')] for e in graph.get_edges())
print(json.dumps(edges))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{dot}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edges: Vec<[String; 3]> = serde_json::from_slice(&out.stdout).unwrap();
    let expected: BTreeSet<[String; 3]> = [
        ["file:data/movies.csv", "ingest", "csv"],
        ["ingest", "download", "movies"],
        ["file:data", "download", "root"],
        ["ingest", "filter", "movies"],
        ["download", "filter", "posters"],
        ["filter", "resize", "movies"],
        ["download", "resize", "posters"],
        ["resize", "split", "shards"],
        ["split", "train", "data"],
        ["train", "evaluate", "model"],
        ["split", "evaluate", "data"],
        ["ingest", "evaluate", "ingest"],
        ["download", "evaluate", "download"],
        ["filter", "evaluate", "filter"],
    ]
    .map(|e| e.map(String::from))
    .into_iter()
    .collect();
    assert_eq!(
        edges.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "{dot}"
    );

    let mermaid = p.ok(&["dag", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    let arrows = mermaid
        .lines()
        .filter(|l| l.contains("-->|") || l.contains("-.->|"))
        .count();
    assert_eq!(arrows, expected.len(), "{mermaid}");
    assert!(mermaid.contains("s0[\"ingest"), "{mermaid}");
    let text = p.ok(&["dag"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("evaluate") && l.contains("train (model)")),
        "{text}"
    );
}

#[test]
fn trained_models_are_written_as_safetensors_that_python_reads_with_their_metadata() {
    let python = python_with(&["safetensors", "numpy"], "safetensors, numpy");
    let p = Project::small(150, SMALL_PIPELINE);
    p.ok(&["run", "train"]);
    let out_dir = p.output_of("train");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("model.json")).unwrap())
            .unwrap();
    let script = r#"
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], "np") as f:
    print(json.dumps({"metadata": f.metadata(), "shapes": {k: list(f.get_tensor(k).shape) for k in f.keys()},
                      "dtypes": sorted({str(f.get_tensor(k).dtype) for k in f.keys()})}))
"#;
    let read = python_json(&python, script, &[&out_dir.join("model.safetensors")]);
    let meta = &read["metadata"];
    let genres: serde_json::Value = serde_json::from_str(meta["genres"].as_str().unwrap()).unwrap();
    assert_eq!(genres, spec["genres"]);
    let n = genres.as_array().unwrap().len();
    assert_eq!(meta["architecture"], "small-cnn");
    assert_eq!(
        (meta["width"].as_str(), meta["height"].as_str()),
        (Some("24"), Some("24"))
    );
    assert_eq!(meta["layout"], "pytorch");
    assert_eq!(meta["decision_rule"], spec["decision"]["rule"]);
    let thresholds: serde_json::Value =
        serde_json::from_str(meta["thresholds"].as_str().unwrap()).unwrap();
    assert_eq!(thresholds, spec["decision"]["thresholds"]);
    assert_eq!(thresholds.as_array().unwrap().len(), n);
    // PyTorch's names and layouts: no enum variant in the path, Linear `[out, in]`, norms'
    // `weight`/`bias`, running stats kept.
    let shapes = &read["shapes"];
    assert_eq!(
        shapes["blocks.0.conv.weight"],
        serde_json::json!([32, 3, 3, 3]),
        "{shapes}"
    );
    assert_eq!(
        shapes["head.weight"],
        serde_json::json!([n, 128]),
        "{shapes}"
    );
    assert_eq!(shapes["head.bias"], serde_json::json!([n]), "{shapes}");
    for name in ["weight", "bias", "running_mean", "running_var"] {
        assert!(
            shapes[format!("blocks.0.norm.{name}")].is_array(),
            "{name}: {shapes}"
        );
    }
    assert_eq!(read["dtypes"], serde_json::json!(["float32"]));
}

#[test]
fn predict_answers_with_the_probabilities_evaluate_gave_and_refuses_what_the_pipeline_refuses() {
    let pipeline = format!(
        "{}  train:
    kind: train
    inputs: {{data: embed}}
    params: {{architecture: mlp, epochs: 4}}
  cnn:
    kind: train
    inputs: {{data: split}}
    params: {{epochs: 1, batch_size: 16}}
  evaluate:
    kind: evaluate
    inputs: {{model: train, data: embed, second_model: cnn, second_data: split, ingest: ingest, download: download, filter: filter}}
    publish: reports
",
        embedding_pipeline()
    );
    let p = Project::small(160, &pipeline);
    std::fs::copy(Path::new(REPO).join(WEIGHTS), p.root.join("weights.pth")).unwrap();
    // Before anything is trained there is nothing to ask.
    let poster = p.root.join("data/posters/0100001.jpg");
    let out = p.pipeline(&["predict", poster.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no trained model") && stderr.contains("pipeline run train"),
        "{stderr}"
    );
    p.ok(&["run"]);

    // Test posters, found through the split's test shard (their files in `download`'s output).
    let split = p.output_of("split").join("test");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("meta.json")).unwrap()).unwrap();
    let genres = meta["genres"].as_array().unwrap().len();
    let shard = stage_shards::read_shard(
        &split.join(meta["shards"][0]["file"].as_str().unwrap()),
        24 * 24 * 3,
        genres,
    )
    .unwrap();
    let posters = p.output_of("download");
    let picked: Vec<usize> = (0..shard.len().min(4)).collect();
    let paths: Vec<String> = picked
        .iter()
        .map(|&r| posters.join(&shard.posters[r]).display().to_string())
        .collect();
    for (model, predictions, expect_pixels) in [
        ("train", "predictions.parquet", false),
        ("cnn", "predictions-second.parquet", true),
    ] {
        let evaluated = stage_shards::predictions::Predictions::read(
            &p.root.join("reports").join(predictions),
            genres,
        )
        .unwrap();
        let mut args = vec!["predict", "--json", "--top", "3", "--model", model];
        args.extend(paths.iter().map(String::as_str));
        let answer: serde_json::Value = serde_json::from_str(&p.ok(&args)).unwrap();
        assert_eq!(answer["model"]["stage"], model);
        for (i, &r) in picked.iter().enumerate() {
            let got = &answer["posters"][i];
            let row = evaluated
                .ids
                .iter()
                .position(|&id| id == shard.ids[r])
                .unwrap();
            let want = &evaluated.probs[row * genres..(row + 1) * genres];
            let probs: Vec<f64> = got["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(probs.len(), genres);
            for (g, (a, b)) in probs.iter().zip(want).enumerate() {
                assert!(
                    (a - f64::from(*b)).abs() < 1e-5,
                    "{model}, movie {}, genre {g}: predict {a}, evaluate {b}",
                    shard.ids[r]
                );
            }
            assert_eq!(got["top"].as_array().unwrap().len(), 3);
            if expect_pixels {
                // The CNN reads exactly the pixels `resize` stored for this poster.
                let stored = &shard.images[r * 24 * 24 * 3..(r + 1) * 24 * 24 * 3];
                assert_eq!(got["input_blake3"], blake3::hash(stored).to_hex().as_str());
            }
        }
    }
    // The default is evaluate's primary model; text output lists genres with probabilities.
    let text = p.ok(&["predict", &paths[0]]);
    assert!(
        text.starts_with("mlp on efficientnet-lite0 embeddings (64x96)"),
        "{text}"
    );

    // Over HTTP through the download stage's fetcher: the same answer as from the file.
    let jpeg = std::fs::read(&paths[0]).unwrap();
    let port = http_server(move |_| http_ok(&jpeg));
    let url = format!("http://127.0.0.1:{port}/poster.jpg");
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&p.ok(args)).unwrap() };
    assert_eq!(
        json(&["predict", "--json", &url])["posters"][0]["probabilities"],
        json(&["predict", "--json", &paths[0]])["posters"][0]["probabilities"]
    );

    // What the pipeline refuses, predict refuses, each with its reason; good posters still answer.
    std::fs::write(p.root.join("notes.txt"), "not a poster").unwrap();
    std::fs::write(
        p.root.join("bomb.png"),
        stage_shards::poster::png_claiming(50_000, 50_000),
    )
    .unwrap();
    let huge = image::GrayImage::new(10_000, 10_000);
    huge.save(p.root.join("huge.png")).unwrap();
    let out = p.pipeline(&[
        "predict",
        "--json",
        &paths[0],
        "notes.txt",
        "bomb.png",
        "huge.png",
        "missing.jpg",
        "http://127.0.0.1:9/x.jpg",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> = answer["posters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(errors[0], "", "the good poster answers");
    assert!(
        errors[1].contains("not a known image format"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("too large"), "{}", errors[2]);
    assert!(
        errors[3].contains("too large") && errors[3].contains("MiB"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].contains("cannot read `missing.jpg`"),
        "{}",
        errors[4]
    );
    assert!(errors[5].contains("Connection refused"), "{}", errors[5]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 of 6 posters could not be read"));
}

/// A small deterministic generator (xorshift) for the junk below: the same junk every run.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = (self.next() % 300) as usize;
        let kind = self.next() % 4;
        (0..len)
            .map(|i| match kind {
                0 => (self.next() & 0xFF) as u8,
                1 => {
                    let json = b"{}[]\":,0123456789abcdef-e.nulltrue\n";
                    json[(self.next() % json.len() as u64) as usize]
                }
                2 => {
                    let manifest = b"{\"key\":\"files\":{\"size\":1}}";
                    manifest[i % manifest.len()]
                }
                _ => 0,
            })
            .collect()
    }
}

#[test]
fn every_command_survives_junk_in_the_cache_and_the_workspace() {
    let p = Project::small(60, SMALL_PIPELINE);
    p.ok(&["run"]);
    let v1 = p.root.join("cache/v1");
    let key = p
        .output_of("train")
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    // Hand-picked junk: what a crash, a person or another tool might leave.
    let fixed: Vec<(PathBuf, &[u8])> = vec![
        (v1.join("entries/x/manifest.json"), b"{}"),
        (v1.join("entries/\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}/manifest.json"), b"not json"),
        (v1.join("entries/0123456789abcdef0123/manifest.json"), br#"{"format":1,"key":"k","kind":"train","stage":"train","output_digest":"d","files":{"../../../../../outside.txt":{"size":1,"blake3":"00"}},"summary":[],"seconds":0,"finished_unix":0}"#),
        (v1.join("entries/justafile"), b"junk"),
        (v1.join(format!("entries/{key}/out/extra.bin")), b"extra"),
        (v1.join("items/zz/short"), b"junk"),
        (v1.join("items/q"), b"a file where a folder goes"),
        (v1.join("tmp/garbage.1.2/out/x"), b"junk"),
        (v1.join("work/w/partial"), b"junk"),
        (v1.join("published/abc.json"), b"{\"key\": 3}"),
        (p.root.join("reports/9999/run.json"), b"[1,2"),
        (p.root.join("reports/9999/metrics.json"), b"{\"models\": [{\"test\": 5}]}"),
    ];
    std::fs::write(p.root.join("outside.txt"), b"mine").unwrap();
    for (path, bytes) in &fixed {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut runs = std::fs::OpenOptions::new()
        .append(true)
        .open(v1.join("runs.jsonl"))
        .unwrap();
    runs.write_all(b"\xff\xfe{\"id\":7}\n{\"started_unix\": \"x\"}\n")
        .unwrap();
    // Seeded junk over every cache file: truncated, replaced by noise, or emptied.
    let mut junk = Junk(0x9E37_79B9_7F4A_7C15);
    let mut files = Vec::new();
    let mut todo = vec![p.root.join("cache")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    for path in &files {
        match junk.pick(&["keep", "keep", "truncate", "noise", "empty", "remove"]) {
            "truncate" => {
                let bytes = std::fs::read(path).unwrap();
                std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
            }
            "noise" => std::fs::write(path, junk.bytes()).unwrap(),
            "empty" => std::fs::write(path, b"").unwrap(),
            "remove" => std::fs::remove_file(path).unwrap(),
            _ => {}
        }
    }
    std::fs::write(p.root.join("pipeline.lock"), junk.bytes()).unwrap();
    let poster = p
        .root
        .join("data/posters/0100001.jpg")
        .display()
        .to_string();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["run", "--dry-run"],
        &["log"],
        &["log", "--json"],
        &["dag", "--format", "dot"],
        &["metrics"],
        &["metrics", "diff"],
        &["predict", &poster],
        &["verify"],
        &["gc"],
        &["verify", "--repair"],
        &["run"],
        &["verify"],
    ] {
        let out = p.pipeline(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c <= 2) && !stderr.contains("panicked"),
            "pipeline {args:?} did not survive the junk (exit {:?}):\n{stderr}",
            out.status.code()
        );
    }
    // After `verify --repair` and a run, the project is whole again.
    p.ok(&["verify"]);
    assert!(p.status().iter().all(|s| s["state"] == "fresh"));
    assert_eq!(
        std::fs::read(p.root.join("outside.txt")).unwrap(),
        b"mine",
        "a manifest naming a file outside its entry never reaches it"
    );
}
