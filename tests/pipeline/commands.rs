//! The command line: errors in `pipeline.yaml`, `-S` overrides and `metrics diff`, `dag`, and every
//! command over a junk cache.

use crate::support::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    assert_eq!(p.last_run("ran"), set(&["train", "evaluate"]), "{out}");
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
