//! An experiment (`-S`) as a new user lives it: its dry run gives the reasons the run gives,
//! `gc` keeps it, a later plain run says what it republishes, a model `gc --keep` dropped names
//! the command that trains it again, a role its params need is checked before anything runs,
//! and a refused publish leaves no run folder.

use crate::support::*;

fn last_id(p: &Project) -> String {
    let log = p.ok(&["log", "--json", "-n", "1"]);
    let run: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    run["id"].as_str().unwrap().to_string()
}

/// The reason in a `Would run STAGE (...)` or `Running STAGE (...)` line.
fn reason<'a>(out: &'a str, prefix: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in {out}"));
    line[prefix.len()..]
        .trim_start_matches(" (")
        .trim_end_matches(')')
}

#[test]
fn an_experiment_keeps_its_model_through_gc_and_a_dropped_one_names_its_command() {
    let p = Project::small(60, SMALL_PIPELINE);
    p.ok(&["run"]);
    let sets = ["-S", "split.seed=7", "-S", "train.learning_rate=0.01"];
    let dry = p.ok(&[&["run", "--dry-run"][..], &sets].concat());
    let would = reason(&dry, "Would run train");
    let ran = p.ok(&[&["run"][..], &sets].concat());
    let running = reason(&ran, "Running train");
    // What the dry run cannot know yet (split's new output) it says is to come; the rest is the
    // run's own words.
    let params = "params changed: train.learning_rate 0.001 -> 0.01";
    assert!(
        would.starts_with(params) && would.ends_with("upstream will rerun: split"),
        "{dry}"
    );
    assert!(running.starts_with(params), "{ran}");
    let experiment = last_id(&p);

    // Nothing to run, but the report shown is the experiment's: the run says it puts back the
    // current params' one.
    let back = p.ok(&["run"]);
    assert!(
        back.contains("Published the cached evaluate output of the current params to")
            && back.contains(&format!("(it was showing run {experiment})")),
        "{back}"
    );

    let poster = std::fs::read_dir(p.root.join("data/posters"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .min()
        .unwrap();
    let gc = p.ok(&["gc"]);
    assert!(
        gc.starts_with("Removed 0 entries") && gc.contains("of the 3 recorded runs"),
        "{gc}"
    );
    p.ok(&["predict", "--model", &experiment, &poster]);
    let gc = p.ok(&["gc", "--keep", "1"]);
    assert!(!gc.starts_with("Removed 0 entries"), "{gc}");
    let out = p.pipeline(&["predict", "--model", &experiment, &poster]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`pipeline run train -S split.seed=7 -S train.learning_rate=0.01` trains it"),
        "{err}"
    );
}

#[test]
fn options_a_command_does_not_use_are_not_offered_and_a_role_params_need_is_checked_first() {
    let p = Project::small(20, SMALL_PIPELINE);
    for command in ["gc", "verify", "log", "dag", "push", "metrics"] {
        let help = p.ok(&[command, "--help"]);
        assert!(
            !help.contains("--set") && !help.contains("--device"),
            "{command}: {help}"
        );
    }
    for command in ["run", "status", "pull", "predict"] {
        assert!(p.ok(&[command, "--help"]).contains("--set"), "{command}");
    }
    let out = p.pipeline(&["gc", "-S", "train.epochs=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unexpected argument '-S'"),
        "{}",
        stderr(&out)
    );

    // A param that makes an optional file role required: refused by the plan, with the line.
    let out = p.pipeline(&["run", "-S", "train.architecture=efficientnet-lite0"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pipeline.yaml:") && err.contains("missing file role `weights`"),
        "{err}"
    );
    assert!(
        err.contains("files: {weights: models/efficientnet-lite0/"),
        "{err}"
    );
    assert!(!p.root.join("cache").exists(), "nothing ran");
}

#[test]
fn a_publish_refused_by_a_persons_file_leaves_no_run_folder() {
    let p = Project::small(20, SMALL_PIPELINE);
    let reports = p.root.join("reports");
    std::fs::create_dir(&reports).unwrap();
    std::fs::write(reports.join("index.html"), "my page\n").unwrap();
    let out = p.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in the way of a published copy"),
        "{}",
        stderr(&out)
    );
    let left: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["index.html"], "no run folder, staged or named");
    assert_eq!(
        std::fs::read(reports.join("index.html")).unwrap(),
        b"my page\n"
    );
    let diff = p.pipeline(&["metrics", "diff"]);
    assert!(!diff.status.success(), "no run was published to compare");
}

#[test]
fn a_failing_command_whose_stderr_is_closed_exits_with_its_own_code() {
    let p = Project::small(5, SMALL_PIPELINE);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["pull", "--remote", "/no/such/remote"])
        .current_dir(&p.root)
        .stderr(writer)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "not a panic (101) on a closed pipe"
    );
}
