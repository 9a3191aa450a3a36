//! The test kit: a project builder around the real binary, one HTTP server, Python readers, and
//! synthetic posters.

#![allow(dead_code)]

mod debian;
mod http;
mod posters;
mod python;
mod s3;
mod slurm;
mod watchdog;

pub use debian::*;
pub use http::*;
pub use posters::*;
pub use python::*;
pub use s3::*;
pub use slurm::*;
pub use watchdog::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A pipeline file for a small, fast project: tiny images, two epochs.
pub const SMALL_PIPELINE: &str = "\
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

pub struct Project {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Project {
    /// A project with the first `movies` sample movies, the sample's bad rows, and `pipeline`.
    pub fn small(movies: usize, pipeline: &str) -> Self {
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

    pub fn pipeline(&self, args: &[&str]) -> Output {
        self.pipeline_env(args, &[])
    }

    /// Runs with extra environment (a remote's credentials).
    pub fn pipeline_env(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.root)
            .env_remove("PIPELINE_THREADS")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    }

    /// [`Project::pipeline_env`], asserting success; returns stdout.
    pub fn ok_env(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = self.pipeline_env(args, env);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "pipeline {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    /// The names of the stages the last recorded run (`pipeline log --json -n 1`) handled with
    /// `action` (`ran`, `fresh`, `failed`, `skipped`): the run record, not the console's prose.
    pub fn last_run(&self, action: &str) -> BTreeSet<String> {
        let log = self.ok(&["log", "--json", "-n", "1"]);
        let run: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] == action)
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn edit(&self, from: &str, to: &str) {
        let path = self.root.join("pipeline.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "pipeline.yaml has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    pub fn status(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// The cache output directory of `stage`, from the lock file.
    pub fn output_of(&self, stage: &str) -> PathBuf {
        let lock: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(self.root.join("pipeline.lock")).unwrap(),
        )
        .unwrap();
        let key = lock["stages"][stage]["key"].as_str().unwrap().to_string();
        self.root.join("cache/v1/entries").join(key).join("out")
    }
}

/// Every file below `dir`, named relative to it, with its bytes.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// The files of `stage`'s output whose bytes differ between two projects (or that only one
/// has), named relative to the output folder: what an assertion on output digests reports.
pub fn differing_files(a: &Project, b: &Project, stage: &str) -> Vec<String> {
    let (left, right) = (tree(&a.output_of(stage)), tree(&b.output_of(stage)));
    let mut names: BTreeSet<&String> = left.keys().collect();
    names.extend(right.keys());
    names
        .into_iter()
        .filter(|name| left.get(*name) != right.get(*name))
        .cloned()
        .collect()
}

/// Copies the repository's default project (pipeline.yaml, the sample, the weights) into `root`.
pub fn copy_default_project(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::copy(
        Path::new(REPO).join("pipeline.yaml"),
        root.join("pipeline.yaml"),
    )
    .unwrap();
    copy_into(root, "data");
    copy_into(root, "models");
}

/// Copies the repository's folder `name` into `root`.
pub fn copy_into(root: &Path, name: &str) {
    let status = Command::new("cp")
        .args(["-r", &format!("{REPO}/{name}"), &root.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The sample's posters served over HTTP, and the sample's CSV lines (header first) with each
/// poster path turned into its URL on that server.
pub fn sample_over_http() -> (Server, Vec<Vec<u8>>) {
    let sample = Path::new(REPO).join("data/sample");
    let posters = sample.join("posters");
    let server = Server::start(move |path, _, _| {
        Some(
            match std::fs::read(posters.join(path.trim_start_matches("/posters/"))) {
                Ok(bytes) => http_ok(&bytes),
                Err(_) => http_status("404 Not Found"),
            },
        )
    });
    let port = server.port;
    let csv = std::fs::read(sample.join("movies.csv")).unwrap();
    let lines = csv
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let text = l.iter().map(|&b| b as char).collect::<String>();
            let text = text.replace(",posters/", &format!(",http://127.0.0.1:{port}/posters/"));
            text.chars().map(|c| c as u8).collect()
        })
        .collect();
    (server, lines)
}

/// Writes `data/movies.csv` of `root` as the header line and `lines[range]`.
pub fn write_movie_lines(root: &Path, lines: &[Vec<u8>], range: std::ops::Range<usize>) {
    let mut out = lines[0].clone();
    out.push(b'\n');
    for line in &lines[range] {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    std::fs::write(root.join("data/movies.csv"), out).unwrap();
}

/// Stage names on lines starting with `prefix` (e.g. `Running`).
pub fn stages_with(stdout: &str, prefix: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub const ALL: [&str; 7] = [
    "ingest", "download", "filter", "resize", "split", "train", "evaluate",
];

pub const INCREMENTAL: &str = "\
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

/// Sets the mtime of every file below `dir` to an hour ago, so the stat cache trusts them
/// (files modified in the last two seconds are always rehashed).
pub fn age_files(dir: &Path) {
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

pub fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// Output digest of each stage, from the lock file.
pub fn locked_outputs(p: &Project) -> std::collections::BTreeMap<String, String> {
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

/// The second summary line of a stage (`Finished X` then two indented lines).
pub fn decoded_line<'a>(stdout: &'a str, stage: &str) -> &'a str {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("Finished {stage}")));
    lines
        .find(|l| l.contains("decoded"))
        .unwrap_or_else(|| panic!("no decode line for {stage}: {stdout}"))
}
