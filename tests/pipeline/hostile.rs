//! The binary under hostile input, as a new user who makes every mistake would try it: params
//! and `-S` values past every range, the pipeline file (duplicate names, bindings a role cannot
//! read), workspace files of every file type, stray files in every cache folder, and run folders
//! someone emptied. Each case asserts the exit code, that the message names the thing and the
//! fix, that nothing was written, and that the next run after a repair is clean.

use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every numeric param of the small pipeline's stages with its documented range.
const INTEGER_PARAMS: &[(&str, u64, u64)] = &[
    ("download.timeout_secs", 1, 3600),
    ("download.max_bytes", 1, 1 << 30),
    ("download.retries", 0, 10),
    ("download.backoff_ms", 0, 60_000),
    ("download.max_retry_after_secs", 0, 3600),
    ("download.max_in_flight", 1, 256),
    ("download.max_per_host", 1, 256),
    ("filter.min_genre_count", 0, 10_000_000),
    ("resize.width", 1, 4096),
    ("resize.height", 1, 4096),
    ("resize.shard_rows", 1, 65_536),
    ("split.seed", 0, u64::MAX),
    ("train.epochs", 1, 10_000),
    ("train.batch_size", 1, 4096),
    ("train.hidden", 1, 65_536),
    ("train.shuffle_window", 1, 1_000_000),
    ("train.early_stopping.patience", 0, 10_000),
    ("train.finetune_blocks", 0, 16),
    ("train.schedule.step_epochs", 1, 10_000),
    ("evaluate.examples", 0, 300),
];

/// Params that take fractions, with a value inside their range.
const FLOAT_PARAMS: &[(&str, &str)] = &[
    ("download.retry_failed_after_hours", "2.5"),
    ("split.val_fraction", "0.1"),
    ("train.learning_rate", "0.01"),
    ("train.weight_decay", "0.01"),
    ("train.dropout", "0.3"),
    ("train.schedule.gamma", "0.5"),
];

/// A small deterministic generator: the property runs are the same on every machine.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn every_numeric_param_is_accepted_exactly_within_its_documented_range() {
    let p = Project::small(10, SMALL_PIPELINE);
    let mut draws = Draws(24);
    for &(param, min, max) in INTEGER_PARAMS {
        // The edges, one past them, the u64 extremes, and draws at every scale.
        let mut values = vec![min, max, 0, u64::MAX];
        values.extend(min.checked_sub(1));
        values.extend(max.checked_add(1));
        for _ in 0..6 {
            let bits = draws.next() % 64;
            values.push(draws.next() >> bits);
        }
        for value in values {
            let set = format!("{param}={value}");
            let out = bounded(&p.root, &["status", "-S", &set]);
            let accepted = (min..=max).contains(&value);
            if accepted {
                assert!(out.status.success(), "-S {set}: {}", stderr(&out));
                continue;
            }
            assert_eq!(out.status.code(), Some(2), "-S {set}: {}", stderr(&out));
            let err = stderr(&out);
            let (stage, key) = param.split_once('.').unwrap();
            assert!(
                err.contains(&format!("at key `stages.{stage}.params.{key}`")),
                "-S {set}: {err}"
            );
            assert!(err.contains(&format!("`-S {set}`")), "-S {set}: {err}");
            assert!(
                err.contains(&format!("set it from {min} to {max}"))
                    || err.contains("must be")
                    || err.contains("invalid value"),
                "-S {set} does not say the range: {err}"
            );
        }
        // Never a whole number past 64 bits, never a fraction or text where a count is asked.
        for bad in ["18446744073709551616", "-1", "2.5", "ten"] {
            let set = format!("{param}={bad}");
            let out = bounded(&p.root, &["status", "-S", &set]);
            assert_eq!(out.status.code(), Some(2), "-S {set}: {}", stderr(&out));
        }
    }
    for &(param, fine) in FLOAT_PARAMS {
        let out = bounded(&p.root, &["status", "-S", &format!("{param}={fine}")]);
        assert!(out.status.success(), "{param}={fine}: {}", stderr(&out));
        for bad in [".nan", ".inf", "-.inf", "-1", "1e300"] {
            let set = format!("{param}={bad}");
            let out = bounded(&p.root, &["status", "-S", &set]);
            assert_eq!(out.status.code(), Some(2), "-S {set}: {}", stderr(&out));
            let err = stderr(&out);
            if bad.contains("inf") || bad.contains("nan") {
                assert!(
                    err.contains(&format!("`{bad}` is not a finite number")),
                    "-S {set}: {err}"
                );
            }
        }
    }
    let out = bounded(
        &p.root,
        &["status", "-S", "download.timeout_secs=18446744073709551616"],
    );
    assert!(
        stderr(&out).contains("the number 18446744073709551616 is out of range"),
        "{}",
        stderr(&out)
    );
    assert!(
        !p.root.join("cache").exists(),
        "a refused param wrote nothing"
    );

    // The file's own params are held to the same ranges, with the line.
    p.edit("params: {epochs: 2, batch_size: 16}", "params: {epochs: 0}");
    let out = bounded(&p.root, &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pipeline.yaml:26")
            && stderr(&out).contains("`epochs` is 0, outside its range: set it from 1 to 10000"),
        "{}",
        stderr(&out)
    );
    assert!(!p.root.join("cache").exists());
}

#[test]
fn threads_and_jobs_are_bounded_before_anything_starts() {
    let p = Project::small(10, SMALL_PIPELINE);
    for args in [
        &["--threads", "100000", "status"][..],
        &["--threads", "0", "status"],
        &["run", "-j", "100000"],
    ] {
        let out = bounded(&p.root, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("is outside 1 to"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!p.root.join("cache").exists());
}

#[test]
fn the_pipeline_file_refuses_duplicate_names_and_bindings_a_role_cannot_read() {
    let p = Project::small(10, SMALL_PIPELINE);
    std::fs::write(
        p.root.join("pipeline.yaml"),
        format!("{SMALL_PIPELINE}  resize:\n    kind: resize\n    inputs: {{movies: filter, posters: download}}\n"),
    )
    .unwrap();
    let out = bounded(&p.root, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("stage `resize` is declared twice: lines 13 and 31")
            && err.contains("help: YAML would keep only the last one"),
        "{err}"
    );

    let p = Project::small(10, SMALL_PIPELINE);
    std::fs::write(
        p.root.join("pipeline.yaml"),
        format!("{SMALL_PIPELINE}  again:\n    kind: train\n    inputs: {{data: train}}\n"),
    )
    .unwrap();
    for args in [&["dag"][..], &["run", "--dry-run"]] {
        let out = bounded(&p.root, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("pipeline.yaml:33")
                && err.contains("input `data` of `again` is bound to `train`, a `train` stage")
                && err.contains("help: bind `data` to a `split` or `embed` stage: `split`"),
            "{err}"
        );
    }
    assert!(!p.root.join("cache").exists());
}

#[test]
fn workspace_files_of_every_file_type_are_refused_or_read_without_hanging() {
    let p = Project::small(10, SMALL_PIPELINE);
    let fifo = p.root.join("data/movies.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let socket = std::os::unix::net::UnixListener::bind(p.root.join("data/movies.sock")).unwrap();
    for (csv, says) in [
        (
            "/dev/zero",
            "`/dev/zero` is a character device, but `csv` takes a regular file",
        ),
        (
            "data/movies.fifo",
            "is a FIFO (named pipe), but `csv` takes a regular file",
        ),
        (
            "data/movies.sock",
            "is a socket, but `csv` takes a regular file",
        ),
        (
            "data",
            "`data` is a directory, but `csv` takes a regular file",
        ),
    ] {
        p.edit(
            "files: {csv: data/movies.csv}",
            &format!("files: {{csv: {csv}}}"),
        );
        for command in ["status", "run"] {
            let out = bounded(&p.root, &[command]);
            assert_eq!(out.status.code(), Some(2), "{csv}");
            let err = stderr(&out);
            assert!(
                err.contains(says) && err.contains("stages.ingest.files.csv"),
                "{csv}: {err}"
            );
        }
        p.edit(
            &format!("files: {{csv: {csv}}}"),
            "files: {csv: data/movies.csv}",
        );
    }
    p.edit("files: {root: data}", "files: {root: data/movies.csv}");
    let err = stderr(&bounded(&p.root, &["status"]));
    assert!(
        err.contains("`data/movies.csv` is a regular file, but `root` takes a directory"),
        "{err}"
    );
    drop(socket);
    assert!(!p.root.join("cache").exists());
}

#[test]
fn publish_outside_the_project_is_refused_and_nothing_outside_changes() {
    let p = Project::small(10, SMALL_PIPELINE);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("index.html"), "a person's page").unwrap();
    let absolute = outside.path().display().to_string();
    let parent_escape = format!(
        "../{}",
        Path::new(&absolute).strip_prefix("/").unwrap().display()
    );
    for target in [
        absolute.as_str(),
        "../outside",
        "reports/../../y",
        "cache/v1/entries",
        parent_escape.as_str(),
    ] {
        p.edit("publish: reports", &format!("publish: \"{target}\""));
        let out = bounded(&p.root, &["run"]);
        assert_eq!(out.status.code(), Some(2), "{target}");
        let err = stderr(&out);
        assert!(
            err.contains("stages.evaluate.publish")
                && err.contains("help: publish to a folder inside the project"),
            "{target}: {err}"
        );
        p.edit(&format!("publish: \"{target}\""), "publish: reports");
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("index.html")).unwrap(),
        "a person's page"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(!p.root.join("cache").exists());
}

const INGEST_ONLY: &str = "\
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
";

#[test]
fn four_stages_with_one_key_run_once_in_parallel() {
    let four: String = std::iter::once("stages:\n".to_string())
        .chain(["a", "b", "c", "d"].iter().map(|name| {
            format!("  {name}:\n    kind: ingest\n    files: {{csv: data/movies.csv}}\n")
        }))
        .collect();
    let p = Project::small(40, &four);
    let out = bounded(&p.root, &["run", "-j", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.last_run("ran"), set(&["a"]));
    assert_eq!(p.last_run("fresh"), set(&["b", "c", "d"]));
}

#[test]
fn stray_files_in_every_cache_folder_break_no_command_and_repair_keeps_them() {
    let p = Project::small(20, INGEST_ONLY);
    p.ok(&["run"]);
    let v1 = p.root.join("cache/v1");
    std::fs::create_dir_all(v1.join("work/0123/checkpoint-0001")).unwrap();
    let mut dirs = vec![p.root.join("cache")];
    let mut index = 0;
    while index < dirs.len() {
        let current = dirs[index].clone();
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
        index += 1;
    }
    for dir in &dirs {
        std::fs::write(dir.join("junk"), b"stray").unwrap();
        std::fs::write(dir.join(".DS_Store"), b"stray").unwrap();
        std::fs::create_dir_all(dir.join("stray.d")).unwrap();
    }
    for args in [
        &["status"][..],
        &["run"],
        &["verify"],
        &["verify", "--repair"],
        &["run"],
        &["gc"],
        &["log"],
        &["dag"],
    ] {
        let out = bounded(&p.root, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let verify = p.ok(&["verify"]);
    assert!(verify.contains("3 entries checked, 0 damaged"), "{verify}");
    p.ok(&["run"]);
    assert!(p.last_run("ran").is_empty(), "the next run is clean");
    assert_eq!(p.last_run("fresh"), set(&["ingest", "download", "filter"]));
    assert!(
        v1.join("entries/.DS_Store").is_file() && v1.join("entries/junk").is_file(),
        "a file that is not an entry is never moved or removed"
    );
}

#[test]
fn run_folders_someone_emptied_are_named_in_metrics_show_and_diff() {
    let p = Project::small(10, SMALL_PIPELINE);
    for (id, metrics) in [("20261201-100000", "{}"), ("20261201-110000", "not json")] {
        let folder = p.root.join("reports").join(id);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("run.json"), format!("{{\"id\": \"{id}\"}}")).unwrap();
        std::fs::write(folder.join("metrics.json"), metrics).unwrap();
    }
    let diff = p.ok(&["metrics", "diff"]);
    assert!(
        diff.contains("warning: `reports/20261201-100000/metrics.json` holds no metrics")
            && diff.contains(
                "warning: `reports/20261201-110000/metrics.json` is unreadable: not JSON"
            )
            && diff.contains("rerun `pipeline run --force evaluate`"),
        "{diff}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["metrics", "diff", "--json"])).unwrap();
    assert_eq!(json["problems"].as_array().unwrap().len(), 2, "{json}");
    let show = p.ok(&["metrics", "show", "20261201-100000"]);
    assert!(show.contains("holds no metrics"), "{show}");
}

#[test]
fn read_only_commands_create_nothing_and_a_missing_remote_directory_is_an_error() {
    let p = Project::small(10, SMALL_PIPELINE);
    let gone = p.root.join("no/such/remote");
    let url = gone.display().to_string();
    for args in [
        &["status", "--remote", &url][..],
        &["pull", "--remote", &url],
        &["verify", "--remote", &url],
        &["run", "--pull", "--remote", &url],
    ] {
        let out = bounded(&p.root, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("does not exist") && stderr(&out).contains("pipeline push"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!gone.exists(), "{args:?} made the remote directory");
    }
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["log"],
        &["dag"],
        &["metrics"],
        &["verify"],
        &["run", "--dry-run"],
    ] {
        bounded(&p.root, args);
        assert!(
            !p.root.join("cache").exists() && !p.root.join("reports").exists(),
            "{args:?} wrote into the project"
        );
    }
    // `push` is the one that starts a directory remote, and says so.
    let out = bounded(&p.root, &["push", "--remote", &url]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Created the shared cache directory"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(gone.is_dir());
}

#[test]
fn credentials_in_a_remote_url_and_a_bad_timeout_are_refused_without_echoing_secrets() {
    let p = Project::small(10, SMALL_PIPELINE);
    let out = bounded(
        &p.root,
        &["status", "--remote", "s3://AKIDXYZ:hunter2@bucket/p"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        !err.contains("hunter2") && !err.contains("AKIDXYZ") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    let remote = p.root.join("remote");
    std::fs::create_dir(&remote).unwrap();
    let url = remote.display().to_string();
    for value in ["inf", "1e19", "7e18", "abc", "-5", "0"] {
        let out = bounded_env(
            &p.root,
            &["status", "--remote", &url],
            &[("PIPELINE_REMOTE_TIMEOUT", value)],
        );
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PIPELINE_REMOTE_TIMEOUT is")
                && !stderr(&out).contains("panicked"),
            "{value}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn files_the_tool_reads_are_regular_and_bounded_and_deep_nesting_is_refused_at_once() {
    let p = Project::small(10, SMALL_PIPELINE);
    let out = bounded(&p.root, &["-f", "/dev/zero", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("character device"),
        "{}",
        stderr(&out)
    );
    let fifo = p.root.join("fifo.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = bounded(&p.root, &["-f", "fifo.yaml", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    // An AWS config that is a FIFO or /dev/zero is passed over, not read forever.
    let remote = p.root.join("remote");
    std::fs::create_dir(&remote).unwrap();
    let fifo = fifo.display().to_string();
    let out = bounded_env(
        &p.root,
        &["status", "--remote", "s3://bucket/p"],
        &[
            ("AWS_CONFIG_FILE", "/dev/zero"),
            ("AWS_SHARED_CREDENTIALS_FILE", &fifo),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    std::fs::write(
        p.root.join("deep.yaml"),
        format!("stages: {}", "[".repeat(200_000)),
    )
    .unwrap();
    let started = Instant::now();
    let out = bounded(&p.root, &["-f", "deep.yaml", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nest more than 64 deep"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn stage_names_and_cluster_values_that_would_reach_a_script_are_refused_with_the_line() {
    let p = Project::small(10, SMALL_PIPELINE);
    for name in [
        "fy\\ntouch pwned\\nx",
        "../../../../../tmp/escjob",
        "a/b",
        "",
    ] {
        std::fs::write(
            p.root.join("pipeline.yaml"),
            format!(
                "{SMALL_PIPELINE}  \"{name}\":\n    kind: stats\n    inputs: {{data: split}}\n"
            ),
        )
        .unwrap();
        let out = bounded(&p.root, &["status"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("pipeline.yaml:") && stderr(&out).contains("stage names take"),
            "{name}: {}",
            stderr(&out)
        );
    }
    for (field, value) in [
        ("partition", "\"debug\\ntouch pwned\""),
        ("mem", "\"4G\\n#SBATCH --wrap=touch pwned\""),
        ("time", "\"1:00:00 ; touch pwned\""),
    ] {
        std::fs::write(
            p.root.join("pipeline.yaml"),
            SMALL_PIPELINE.replace(
                "    params: {epochs: 2, batch_size: 16}\n",
                &format!("    params: {{epochs: 2, batch_size: 16}}\n    resources: {{{field}: {value}}}\n"),
            ),
        )
        .unwrap();
        let out = bounded(&p.root, &["status"]);
        assert_eq!(out.status.code(), Some(2), "{field}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("stages.train.resources.{field}")),
            "{field}: {}",
            stderr(&out)
        );
    }
    for shards in ["0", "100000"] {
        std::fs::write(
            p.root.join("pipeline.yaml"),
            format!("executor: {{kind: slurm, shards: {shards}}}\n{SMALL_PIPELINE}"),
        )
        .unwrap();
        let out = bounded(&p.root, &["status"]);
        assert_eq!(out.status.code(), Some(2), "{shards}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("outside 1 to 10000"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!p.root.join("cache").exists());
}

#[test]
fn a_files_root_that_holds_the_project_is_refused_with_the_reason() {
    let p = Project::small(10, SMALL_PIPELINE);
    p.edit("files: {root: data}", "files: {root: .}");
    let out = bounded(&p.root, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds the project itself")
            && stderr(&out).contains("stages.download.files.root"),
        "{}",
        stderr(&out)
    );
}
