//! The cache's promises on the real pipeline: what reruns and why, crash and kill safety, locks,
//! verify and gc. (The same promises on toy stages, without burn or polars: `engine/tests`.)

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn second_run_is_all_fresh() {
    let p = Project::small(120, SMALL_PIPELINE);
    p.ok(&["run"]);
    assert_eq!(p.last_run("ran"), set(&ALL));
    let second = p.ok(&["run"]);
    assert_eq!(p.last_run("fresh"), set(&ALL));
    assert!(p.last_run("ran").is_empty(), "{second}");
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
    // The text is the contract here: what a person reads before rerunning anything.
    insta::assert_snapshot!("status_after_a_param_change", p.ok(&["status"]));
    let lock_before = std::fs::read(p.root.join("pipeline.lock")).unwrap();
    let dry = p.ok(&["run", "--dry-run"]);
    insta::assert_snapshot!("dry_run_after_a_param_change", dry);
    assert_eq!(
        std::fs::read(p.root.join("pipeline.lock")).unwrap(),
        lock_before,
        "dry run wrote the lock"
    );
    let run = p.ok(&["run"]);
    let expected = set(&["resize", "split", "train", "evaluate"]);
    assert_eq!(stages_with(&dry, "Would run "), expected, "{dry}");
    assert_eq!(p.last_run("ran"), expected, "{run}");
    assert_eq!(p.last_run("fresh"), set(&["ingest", "download", "filter"]));
    // Keys, run ids, times and durations vary; the rest of `pipeline log` does not.
    insta::with_settings!({filters => vec![
        (r"\b[0-9a-f]{64}\b", "[key]"),
        (r"\b[0-9a-f]{12,16}\b", "[key]"),
        (r"\d{8}-\d{6}(-\d+)?", "[run-id]"),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[time]"),
        // Right-aligned durations: the padding goes with the digits.
        (r" *\+?\d+\.\d+ ?s\b", " [seconds]"),
    ]}, {
        insta::assert_snapshot!("log_of_two_runs", p.ok(&["log"]));
    });
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
    assert_eq!(p.last_run("ran"), set(&["ingest"]), "{run}");
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
    assert_eq!(p.last_run("ran"), set(&["resize"]), "{run}");
    assert!(p.output_of("resize").join("meta.json").exists());
}

#[test]
fn thread_count_does_not_invalidate_cache() {
    let p = Project::small(80, SMALL_PIPELINE);
    p.ok(&["run", "--threads", "1"]);
    let again = p.ok(&["run", "--threads", "2"]);
    assert!(p.last_run("ran").is_empty(), "{again}");
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
    p.ok(&["run", "train"]);
    assert_eq!(
        p.last_run("ran"),
        set(&["ingest", "download", "filter", "resize", "split", "train"])
    );
    assert!(!p.root.join("reports").exists());
    let status = p.status();
    let evaluate = status.iter().find(|s| s["name"] == "evaluate").unwrap();
    assert_eq!(evaluate["state"], "dirty");
    assert_eq!(evaluate["reason"], "never run");
    p.ok(&["run", "train", "--force", "split"]);
    assert_eq!(
        p.last_run("ran"),
        set(&["split"]),
        "identical split output keeps train fresh"
    );
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
    assert_eq!(p.last_run("ran"), set(&["train", "evaluate"]), "{run}");
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
    // And the whole output: no clock reading or file order tells the resumed run apart.
    assert_eq!(
        differing_files(&whole, &killed, "train"),
        Vec::<String>::new(),
        "the resumed training's output differs from the uninterrupted one's"
    );
    assert_eq!(
        locked_outputs(&whole)["train"],
        locked_outputs(&killed)["train"]
    );
    assert_eq!(
        checkpoints(),
        Vec::<String>::new(),
        "committed: the working area is gone"
    );
    // Finished is finished: nothing reruns.
    let again = killed.ok(&["run", "train"]);
    assert!(killed.last_run("ran").is_empty(), "{again}");
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
    p.ok(&["run", "split", "--downstream"]);
    assert_eq!(p.last_run("ran"), set(&ALL));
    let forced = p.ok(&["run", "--force", "split"]);
    assert_eq!(p.last_run("ran"), set(&["split"]), "{forced}");
    let forced = p.ok(&["run", "--force", "split", "--force-downstream"]);
    assert_eq!(
        p.last_run("ran"),
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
    assert_eq!(p.last_run("ran"), set(&["resize"]), "{run}");
    assert!(p.ok(&["verify"]).contains("0 damaged"));
}

#[test]
fn gc_removes_unreferenced_entries_and_log_records_runs() {
    // Under umask 022 every file the run writes is readable by all, as `cp` would make it (the
    // test processes share one umask, and 022 is what they run under anyway).
    // SAFETY: umask only sets the process's file-mode mask.
    unsafe { libc::umask(0o022) };
    let p = Project::small(60, SMALL_PIPELINE);
    p.ok(&["run"]);
    for dir in ["cache", "reports"] {
        for (rel, _) in tree(&p.root.join(dir)) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.root.join(dir).join(&rel))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o044,
                0o044,
                "{dir}/{rel} is {mode:o} under umask 022"
            );
        }
    }
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
    // By default every recorded run keeps what it used, and gc says so.
    let kept = p.ok(&["gc"]);
    assert!(
        kept.starts_with("Removed 0 entries") && kept.contains("2 of the 2 recorded runs"),
        "{kept}"
    );
    let gc = p.ok(&["gc", "--keep", "0"]);
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

/// `Removed N entries and M per-item results ...` -> M.
fn items_removed(gc: &str) -> usize {
    gc.split(" and ")
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
    let gc = p.ok(&["gc", "--keep", "1"]);
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
    for stage in [
        "ingest", "download", "filter", "resize", "split", "train", "evaluate",
    ] {
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
