//! The cache's promises, kept with toy stages (see `support`): what reruns, what does not, and
//! why - without building burn or polars.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use pipeline_engine::record::Action;
use pipeline_engine::{Engine, RunOptions, State};
use support::{CHAIN, HANG_ENV, Project, registry};

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[test]
fn a_second_run_reruns_nothing_and_reuses_every_output() {
    let p = Project::new(CHAIN, "hello\n");
    let (first, _) = p.run();
    assert_eq!(names(&first.ran), ["source", "transform", "final", "side"]);
    assert_eq!(p.value("final"), "hello-t-f");
    let lock_before = std::fs::read(p.root().join("pipeline.lock")).unwrap();

    let (second, lines) = p.run();
    assert!(second.ran.is_empty(), "{lines:?}");
    assert_eq!(
        names(&second.fresh),
        ["source", "transform", "final", "side"]
    );
    assert_eq!(
        std::fs::read(p.root().join("pipeline.lock")).unwrap(),
        lock_before,
        "a no-op run leaves the lock file as it was"
    );
    let plan = p.plan();
    let runs = Engine::new(&plan).runs();
    assert_eq!(runs.len(), 2);
    assert!(runs[1].stages.iter().all(|s| s.action == Action::Fresh));
}

#[test]
fn an_upstream_rerun_with_identical_output_stops_there() {
    let p = Project::new(CHAIN, "hello\n");
    p.run();
    // Trailing space: the file changed, `source`'s output (trimmed) did not.
    p.write("data.txt", "hello  \n");
    let (outcome, lines) = p.run();
    assert_eq!(names(&outcome.ran), ["source", "side"], "{lines:?}");
    assert!(
        lines
            .contains(&"fresh transform (upstream source reran with identical output)".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"fresh final".to_string()), "{lines:?}");
}

#[test]
fn a_dry_run_names_exactly_what_the_run_then_runs_and_changes_nothing() {
    let p = Project::new(CHAIN, "hello\n");
    p.run();
    p.edit("suffix: \"-t\"", "suffix: \"-T\"");
    let lock_before = std::fs::read(p.root().join("pipeline.lock")).unwrap();
    let runs_before = std::fs::read(p.root().join("cache/v1/runs.jsonl")).unwrap();
    let (dry, lines) = p.run_with(RunOptions {
        dry_run: true,
        ..RunOptions::default()
    });
    assert!(dry.ran.is_empty());
    assert!(
        lines.contains(
            &"would run transform (params changed: transform.suffix \"-t\" -> \"-T\")".to_string()
        ),
        "{lines:?}"
    );
    assert!(lines.contains(&"would run final (upstream will rerun: transform)".to_string()));
    assert_eq!(
        std::fs::read(p.root().join("pipeline.lock")).unwrap(),
        lock_before
    );
    assert_eq!(
        std::fs::read(p.root().join("cache/v1/runs.jsonl")).unwrap(),
        runs_before,
        "a dry run is not a run"
    );
    let (real, _) = p.run();
    assert_eq!(real.ran, dry.would_run);
    assert_eq!(p.value("final"), "hello-T-f");
}

#[test]
fn every_reason_names_what_changed() {
    let p = Project::new(CHAIN, "hello\n");
    let plan = p.plan();
    let status = Engine::new(&plan).status().unwrap();
    assert_eq!(status[0].reason, "never run");
    assert_eq!(status[1].reason, "upstream will rerun: source");
    drop(plan);
    p.run();

    p.write("data.txt", "other\n");
    p.edit("suffix: \"-f\"", "suffix: \"-F\"");
    let plan = p.plan();
    let status = Engine::new(&plan).status().unwrap();
    let reasons: Vec<(&str, State, &str)> = status
        .iter()
        .map(|s| (s.name.as_str(), s.state, s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("source", State::Dirty, "file changed: `data.txt`"),
            ("transform", State::Dirty, "upstream will rerun: source"),
            (
                "final",
                State::Dirty,
                "params changed: final.suffix \"-f\" -> \"-F\"; upstream will rerun: transform"
            ),
            ("side", State::Dirty, "file changed: `data.txt`"),
        ]
    );
    let (forced, lines) = p.run_with(RunOptions {
        targets: vec!["side".into()],
        force: vec!["side".into()],
        ..RunOptions::default()
    });
    assert_eq!(names(&forced.ran), ["side"]);
    assert!(
        lines.contains(&"started side (forced)".to_string()),
        "{lines:?}"
    );
}

#[test]
fn a_crate_bump_reruns_the_kinds_that_use_it_and_names_both_versions() {
    let mut p = Project::new(CHAIN, "hello\n");
    p.run();
    // The same project built against a Cargo.lock with fast_image_resize 6.2.0.
    p.registry = registry("6.2.0");
    let plan = p.plan();
    let status = Engine::new(&plan).status().unwrap();
    let source = status.iter().find(|s| s.name == "source").unwrap();
    assert_eq!(
        source.reason,
        "dependency changed: fast_image_resize 6.1.0 -> 6.2.0"
    );
    let side = status.iter().find(|s| s.name == "side").unwrap();
    assert_eq!(side.state, State::Fresh, "`plain` does not use the crate");
    drop(plan);
    let (outcome, lines) = p.run();
    assert_eq!(names(&outcome.ran), ["source"], "{lines:?}");
    let fresh: BTreeSet<&str> = names(&outcome.fresh).into_iter().collect();
    assert_eq!(fresh, BTreeSet::from(["transform", "final", "side"]));
    let lock = std::fs::read_to_string(p.root().join("pipeline.lock")).unwrap();
    assert!(lock.contains("fast_image_resize: 6.2.0"), "{lock}");
}

#[test]
fn a_failure_commits_nothing_skips_dependents_and_keep_going_runs_the_rest() {
    let p = Project::new(CHAIN, "hello\n");
    p.edit("suffix: \"-t\"", "suffix: \"-t\"\n      fail: true");
    let (outcome, lines) = p.run_with(RunOptions {
        keep_going: true,
        ..RunOptions::default()
    });
    assert_eq!(names(&outcome.failed), ["transform"]);
    assert_eq!(names(&outcome.ran), ["source", "side"]);
    assert!(
        lines.contains(&"failed transform: asked to fail".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"skipped final (upstream failed: transform)".to_string()));
    let entries = std::fs::read_dir(p.root().join("cache/v1/entries"))
        .unwrap()
        .count();
    assert_eq!(entries, 2, "only the stages that succeeded have entries");
    assert_eq!(
        std::fs::read_dir(p.root().join("cache/v1/tmp"))
            .unwrap()
            .count(),
        0,
        "the failed run's pending entry is gone"
    );
    let plan = p.plan();
    let runs = Engine::new(&plan).runs();
    assert_eq!(runs[0].outcome.to_string(), "failed");
}

#[test]
fn independent_stages_overlap_with_two_jobs() {
    let both = "\
stages:
  left:
    kind: source
    files:
      data: data.txt
    params:
      rendezvous: true
  right:
    kind: plain
    files:
      data: data.txt
    params:
      rendezvous: true
";
    let p = Project::new(both, "x");
    // Each stage waits until the other is running: with one job this would time out.
    let (outcome, lines) = p.run_with(RunOptions {
        jobs: 2,
        ..RunOptions::default()
    });
    assert!(outcome.failed.is_empty(), "{lines:?}");
    let plan = p.plan();
    let run = &Engine::new(&plan).runs()[0];
    let (a, b) = (&run.stages[0], &run.stages[1]);
    assert!(
        a.started < b.started + b.seconds && b.started < a.started + a.seconds,
        "the record shows them overlapping: {a:?} {b:?}"
    );
}

/// Not a test on its own: the child process of the kill test, which runs the project named by
/// `TOY_PROJECT` until its first stage hangs.
#[test]
fn child_process_that_hangs_in_a_stage() {
    let Some(dir) = std::env::var_os("TOY_PROJECT") else {
        return;
    };
    let path = std::path::Path::new(&dir).join("pipeline.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = pipeline_engine::spec::SpecFile::parse(&path, text).unwrap();
    let plan = pipeline_engine::plan::Plan::build(&spec, &registry("6.1.0")).unwrap();
    let _ = Engine::new(&plan).run(&RunOptions::default(), &support::Recorder::default());
    unreachable!("the stage hangs until the process is killed");
}

#[test]
fn a_killed_run_leaves_nothing_half_written_and_the_next_run_redoes_the_stage() {
    let p = Project::new(CHAIN, "hello\n");
    let marker = p.root().join("hanging");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_that_hangs_in_a_stage",
            "--exact",
            "--nocapture",
        ])
        .env("TOY_PROJECT", p.root())
        .env(HANG_ENV, &marker)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the child never reached the stage"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The child wrote half of `source`'s output into a pending entry, then died.
    let pending: Vec<_> = std::fs::read_dir(p.root().join("cache/v1/tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(pending.len(), 1, "the dead run left its pending entry");
    assert!(
        !p.root().join("pipeline.lock").exists() || {
            let lock = std::fs::read_to_string(p.root().join("pipeline.lock")).unwrap();
            !lock.contains("source:")
        }
    );

    let plan = p.plan();
    let status = Engine::new(&plan).status().unwrap();
    assert_eq!(status[0].reason, "never run", "half an output is no output");
    drop(plan);
    let (outcome, _) = p.run();
    assert_eq!(
        names(&outcome.ran),
        ["source", "transform", "final", "side"]
    );
    assert_eq!(p.value("source"), "hello");
    assert_eq!(
        std::fs::read_dir(p.root().join("cache/v1/tmp"))
            .unwrap()
            .count(),
        0,
        "the next run cleared what the dead one left"
    );
}

#[test]
fn a_deleted_output_makes_its_stage_dirty_with_the_file_named() {
    let p = Project::new(CHAIN, "hello\n");
    p.run();
    let lock = pipeline_engine::lock::LockFile::load(&p.root().join("pipeline.lock"));
    std::fs::remove_file(p.out_dir(&lock.stages["transform"].key).join("value.txt")).unwrap();
    let plan = p.plan();
    let status = Engine::new(&plan).status().unwrap();
    let transform = status.iter().find(|s| s.name == "transform").unwrap();
    assert_eq!(transform.reason, "output missing: `value.txt`");
    let dirty: BTreeSet<&str> = status
        .iter()
        .filter(|s| s.state == State::Dirty)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(dirty, BTreeSet::from(["transform", "final"]));
}
