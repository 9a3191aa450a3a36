//! The engine under hostile input, kept with toy stages (see `support`): stray files anywhere in
//! the cache, publish targets that lead out of the project or onto a person's files, and stages
//! that are the same work under different names.

mod support;

use std::path::{Path, PathBuf};

use pipeline_engine::plan::Plan;
use pipeline_engine::spec::SpecFile;
use pipeline_engine::{Engine, RunOptions};
use support::{CHAIN, Project, Recorder};

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// Every directory below `dir`, `dir` included.
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut index = 0;
    while index < found.len() {
        let current = found[index].clone();
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                found.push(entry.path());
            }
        }
        index += 1;
    }
    found
}

#[test]
fn stray_files_and_folders_anywhere_in_the_cache_break_no_command() {
    let p = Project::new(
        &CHAIN.replace("suffix: \"-f\"", "suffix: \"-f\"\n    publish: reports"),
        "hello\n",
    );
    p.run();
    // The areas the toy kinds leave empty exist as a real project's do.
    let v1 = p.root().join("cache/v1");
    std::fs::create_dir_all(v1.join("work/0123/checkpoint-0001")).unwrap();
    std::fs::create_dir_all(v1.join("items/ab")).unwrap();
    std::fs::write(v1.join("items/ab/abcdef"), b"item").unwrap();
    let littered = dirs_below(&p.root().join("cache"));
    assert!(littered.len() > 10, "{littered:?}");
    for dir in &littered {
        std::fs::write(dir.join(".DS_Store"), b"stray").unwrap();
        std::fs::create_dir_all(dir.join("stray.d")).unwrap();
        std::fs::write(dir.join("stray.d/file"), b"stray").unwrap();
    }
    let plan = p.plan();
    let engine = Engine::new(&plan);
    engine.status().expect("status");
    let (outcome, lines) = p.run();
    assert!(
        outcome.failed.is_empty() && outcome.ran.is_empty(),
        "{lines:?}"
    );
    let report = engine.verify(false).expect("verify");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.checked, 4, "stray files are not entries");
    engine.verify(true).expect("verify --repair");
    engine.gc(Some(5)).expect("gc");
    let (outcome, lines) = p.run();
    assert!(outcome.failed.is_empty(), "{lines:?}");
    assert_eq!(
        names(&outcome.fresh),
        ["source", "transform", "final", "side"],
        "{lines:?}"
    );
    // Nothing of a person's outside the engine's scratch areas (tmp, work, items) was touched.
    for kept in ["entries/.DS_Store", "entries/stray.d/file", ".DS_Store"] {
        assert!(v1.join(kept).is_file(), "{kept} was removed");
    }
    assert!(p.root().join("cache/.DS_Store").is_file());
}

/// The error building the plan of `yaml` in `p`'s project gives.
fn plan_error(p: &Project, yaml: &str) -> String {
    let path = p.root().join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    let built = SpecFile::parse(&path, yaml.to_string())
        .and_then(|spec| Plan::build(&spec, &p.registry).map(|_| ()));
    match built {
        Ok(()) => panic!("the plan of this pipeline was accepted:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn publish_targets_outside_the_project_or_over_its_inputs_are_refused_before_anything_runs() {
    let p = Project::new(CHAIN, "hello\n");
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("x").display().to_string();
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    for (target, says) in [
        ("../outside", "not a folder inside the project"),
        (absolute.as_str(), "not a folder inside the project"),
        ("reports/../../y", "not a folder inside the project"),
        ("cache/v1/entries", "inside the cache"),
        (".", "the project folder itself"),
        ("data.txt", "overlaps `data.txt`, which a stage reads"),
    ] {
        let yaml = CHAIN.replace(
            "suffix: \"-f\"",
            &format!("suffix: \"-f\"\n    publish: \"{target}\""),
        );
        let err = plan_error(&p, &yaml);
        assert!(err.contains(says), "{target}: {err}");
        assert!(err.contains("pipeline.yaml:"), "names the line: {err}");
        assert!(
            err.contains("help: publish to a folder inside the project"),
            "{err}"
        );
    }
    // A link on the way out counts as out.
    std::os::unix::fs::symlink(outside.path(), p.root().join("linked")).unwrap();
    let yaml = CHAIN.replace(
        "suffix: \"-f\"",
        "suffix: \"-f\"\n    publish: linked/reports",
    );
    let err = plan_error(&p, &yaml);
    assert!(err.contains("through a link, outside the project"), "{err}");
    // Two stages, one folder.
    let yaml = CHAIN
        .replace("suffix: \"-f\"", "suffix: \"-f\"\n    publish: reports")
        .replace(
            "suffix: \"-side\"",
            "suffix: \"-side\"\n    publish: reports/side",
        );
    let err = plan_error(&p, &yaml);
    assert!(
        err.contains("stages `final` and `side` both publish to `reports`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing was written outside"
    );
    assert!(!p.root().join("cache").exists(), "nothing ran");
}

#[test]
fn a_persons_file_in_the_publish_folder_is_never_replaced_and_the_pipeline_knows_its_own() {
    let p = Project::new(
        &CHAIN.replace("suffix: \"-f\"", "suffix: \"-f\"\n    publish: reports"),
        "hello\n",
    );
    let reports = p.root().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(reports.join("value.txt"), "mine").unwrap();
    std::fs::write(reports.join("notes.txt"), "also mine").unwrap();
    let plan = p.plan();
    let err = Engine::new(&plan)
        .run(&RunOptions::default(), &Recorder::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reports/value.txt` is in the way of a published copy")
            && err.contains("help: move it elsewhere"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(reports.join("value.txt")).unwrap(),
        "mine"
    );

    // Moved away, the next run publishes; the record beside the copy lets the pipeline replace
    // its own files even after the cache is gone, and the person's other file stays.
    std::fs::rename(reports.join("value.txt"), p.root().join("mine.txt")).unwrap();
    let (outcome, lines) = p.run();
    assert!(outcome.failed.is_empty(), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(reports.join("value.txt")).unwrap(),
        "hello-t-f"
    );
    std::fs::remove_dir_all(p.root().join("cache")).unwrap();
    p.edit("suffix: \"-f\"", "suffix: \"-g\"");
    let (outcome, lines) = p.run();
    assert!(outcome.failed.is_empty(), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(reports.join("value.txt")).unwrap(),
        "hello-t-g"
    );
    assert_eq!(
        std::fs::read_to_string(reports.join("notes.txt")).unwrap(),
        "also mine"
    );
}

#[test]
fn stages_that_are_the_same_work_run_it_once_and_the_others_reuse_it() {
    let four: String =
        std::iter::once("stages:\n".to_string())
            .chain(["a", "b", "c", "d"].iter().map(|name| {
                format!("  {name}:\n    kind: plain\n    files:\n      data: data.txt\n")
            }))
            .collect();
    let p = Project::new(&four, "same");
    let (outcome, lines) = p.run_with(RunOptions {
        jobs: 4,
        ..RunOptions::default()
    });
    assert!(outcome.failed.is_empty(), "{lines:?}");
    assert_eq!(names(&outcome.ran), ["a"], "{lines:?}");
    assert_eq!(names(&outcome.fresh), ["b", "c", "d"], "{lines:?}");

    // The same work failing fails once, and the others say whose failure it is.
    let failing = four.replace(
        "data: data.txt\n",
        "data: data.txt\n    params: {fail: true}\n",
    );
    let p = Project::new(&failing, "same");
    let (outcome, lines) = p.run_with(RunOptions {
        jobs: 4,
        keep_going: true,
        ..RunOptions::default()
    });
    assert_eq!(names(&outcome.failed), ["a", "b", "c", "d"], "{lines:?}");
    assert!(
        lines.contains(&"failed b: it is the same work as `a` (same kind, params and inputs), which failed: asked to fail".to_string()),
        "{lines:?}"
    );
}
