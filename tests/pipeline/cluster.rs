//! Cluster executors, each promise against a real one-node Slurm (started by the test) and a
//! directory as the shared cache: four array tasks per per-item stage end with a local run's
//! outputs; a cancelled task is retried alone; Ctrl-C of the driver cancels its jobs; the
//! Kubernetes manifests validate against the API's schemas and pick their shard by
//! `JOB_COMPLETION_INDEX`.

use crate::support::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A copy of the repository's default project.
fn default_project() -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    copy_default_project(&root);
    Project { _dir: dir, root }
}

/// The run record's `cluster` of each stage that had one, from the last run.
fn dispatched(p: &Project) -> std::collections::BTreeMap<String, serde_json::Value> {
    let log = p.ok(&["log", "--json", "-n", "1"]);
    let run: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["cluster"].is_null())
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["cluster"].clone(),
            )
        })
        .collect()
}

/// Starts `pipeline args` in `p` with `env`, its output piped.
fn spawn(p: &Project, args: &[&str], env: &[(&str, String)]) -> Child {
    Command::new(BIN)
        .args(args)
        .current_dir(&p.root)
        .env_remove("PIPELINE_THREADS")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `check` every 50 ms until it gives a value, failing after `seconds`.
fn wait_for<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn four_array_tasks_per_item_stage_end_with_the_outputs_of_a_local_run() {
    let local = default_project();
    local.ok(&["run"]);

    let slurm = Slurm::start();
    let remote = tempfile::tempdir().unwrap();
    let on_cluster = default_project();
    let remote_arg = remote.path().display().to_string();
    let run = on_cluster.ok_env(
        &[
            "run",
            "--executor",
            "slurm",
            "--shards",
            "4",
            "--remote",
            &remote_arg,
        ],
        &slurm.env(),
    );
    // The merged outputs are byte-identical to the local run's: every output digest matches.
    assert_eq!(locked_outputs(&on_cluster), locked_outputs(&local), "{run}");
    assert!(run.contains("Sent embed to slurm: 4 task(s)"), "{run}");

    // The run record: 4 tasks for each per-item stage, one submission each, nothing retried.
    let sent = dispatched(&on_cluster);
    assert_eq!(
        sent.keys().map(String::as_str).collect::<Vec<_>>(),
        ["download", "embed", "resize"],
        "{run}"
    );
    let mut array_ids = Vec::new();
    for (stage, cluster) in &sent {
        assert_eq!(cluster["executor"], "slurm", "{stage}");
        assert_eq!(cluster["tasks"], 4, "{stage}");
        assert_eq!(cluster["jobs"].as_array().unwrap().len(), 1, "{stage}");
        assert!(cluster["retried"].is_null(), "{stage}: {cluster}");
        array_ids.push((
            stage.clone(),
            cluster["jobs"][0].as_str().unwrap().to_string(),
        ));
    }
    // Slurm itself: each array had tasks 0 to 3, each COMPLETED with exit code 0.
    for (stage, id) in &array_ids {
        let shown = slurm.command("scontrol", &["-o", "show", "job", id]);
        let mut indices: Vec<u32> = shown
            .lines()
            .filter(|l| l.contains(&format!("JobName=pipeline-{stage} ")))
            .inspect(|l| {
                assert!(
                    l.contains("JobState=COMPLETED") && l.contains("ExitCode=0:0"),
                    "{l}"
                )
            })
            .map(|l| {
                let at = l.find("ArrayTaskId=").unwrap() + "ArrayTaskId=".len();
                l[at..].split_whitespace().next().unwrap().parse().unwrap()
            })
            .collect();
        indices.sort_unstable();
        assert_eq!(indices, [0, 1, 2, 3], "{stage}: {shown}");
        // Each task kept its log, in the job's folder.
        let logs: Vec<_> = std::fs::read_dir(on_cluster.root.join("cache/v1/jobs"))
            .unwrap()
            .flatten()
            .filter(|d| {
                d.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{stage}-"))
            })
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| {
                f.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("task-{id}_"))
            })
            .collect();
        assert_eq!(logs.len(), 4, "{stage}");
    }
    // A shard really held a quarter of the work: task 0 of download fetched only its posters.
    let log_dir = std::fs::read_dir(on_cluster.root.join("cache/v1/jobs"))
        .unwrap()
        .flatten()
        .find(|d| d.file_name().to_string_lossy().starts_with("download-"))
        .unwrap()
        .path();
    let first =
        std::fs::read_to_string(log_dir.join(format!("task-{}_0.log", array_ids[0].1))).unwrap();
    assert!(first.contains("Made shard 0 of 4 of `download`"), "{first}");

    // A second run is all fresh and sends nothing.
    let again = on_cluster.ok_env(
        &["run", "--executor", "slurm", "--remote", &remote_arg],
        &slurm.env(),
    );
    assert!(!again.contains("Sent "), "{again}");
    assert_eq!(on_cluster.last_run("fresh").len(), 10, "{again}");
}

/// A small project whose download asks for the node's every CPU per task, so its four tasks run
/// one after another and the last waits long enough to be cancelled or interrupted.
fn serial_download_project() -> Project {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pipeline = SMALL_PIPELINE.replace(
        "    inputs: {movies: ingest}\n    files: {root: data}\n",
        &format!(
            "    inputs: {{movies: ingest}}\n    files: {{root: data}}\n    resources: {{cpus: {cpus}}}\n"
        ),
    );
    assert!(pipeline.contains("resources:"));
    Project::small(60, &pipeline)
}

#[test]
fn a_cancelled_array_task_is_retried_alone_and_the_run_completes() {
    let slurm = Slurm::start();
    let remote = tempfile::tempdir().unwrap();
    let remote_arg = remote.path().display().to_string();
    let p = serial_download_project();
    let driver = spawn(
        &p,
        &[
            "run",
            "--executor",
            "slurm",
            "--shards",
            "4",
            "--remote",
            &remote_arg,
        ],
        &slurm.env(),
    );
    // The download array is submitted; its last task waits behind the others. Cancel it alone.
    let array = wait_for(60, "the download array in squeue", || {
        slurm
            .queue()
            .iter()
            .find(|l| l.ends_with("pipeline-download"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
    });
    let cancelled = format!("{array}_3");
    slurm.command("scancel", &[&cancelled]);
    let out = driver.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("task(s) 3 failed once and were resubmitted alone"),
        "{stdout}"
    );
    let download = &dispatched(&p)["download"];
    assert_eq!(download["retried"], serde_json::json!([3]), "{download}");
    let jobs = download["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{download}");
    assert_eq!(jobs[0], array.as_str());
    // The retry was an array of that one index.
    let retry = slurm.command(
        "scontrol",
        &["-o", "show", "job", jobs[1].as_str().unwrap()],
    );
    assert_eq!(retry.lines().count(), 1, "{retry}");
    assert!(
        retry.contains("ArrayTaskId=3 ") && retry.contains("JobState=COMPLETED"),
        "{retry}"
    );
    // The retried shard's posters are in the output like the others': same as a local run.
    let local = serial_download_project();
    local.ok(&["run"]);
    assert_eq!(locked_outputs(&p), locked_outputs(&local));
}

#[test]
fn ctrl_c_of_the_driver_cancels_its_array() {
    let slurm = Slurm::start();
    let remote = tempfile::tempdir().unwrap();
    let remote_arg = remote.path().display().to_string();
    let p = serial_download_project();
    let driver = spawn(
        &p,
        &[
            "run",
            "--executor",
            "slurm",
            "--shards",
            "4",
            "--remote",
            &remote_arg,
        ],
        &slurm.env(),
    );
    wait_for(60, "the download array in squeue", || {
        slurm
            .queue()
            .iter()
            .any(|l| l.ends_with("pipeline-download"))
            .then_some(())
    });
    // `pipeline status` from another shell shows the job's tasks meanwhile.
    let status = wait_for(30, "status to show the job", || {
        let out = p.ok_env(&["status"], &slurm.env());
        out.contains("download: slurm job").then_some(out)
    });
    assert!(status.contains("of 4 task(s) done"), "{status}");
    // SAFETY: kill(2) with a child's pid and SIGINT, as Ctrl-C in a terminal sends.
    unsafe { libc::kill(driver.id() as i32, libc::SIGINT) };
    let out = driver.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("cancelled the cluster jobs (scancel)"),
        "{stderr}"
    );
    // Nothing of ours is left queued or running.
    wait_for(30, "an empty queue", || {
        slurm.queue().is_empty().then_some(())
    });
    // The next run cleans up after the interrupted one and completes.
    p.ok_env(
        &["run", "--executor", "slurm", "--remote", &remote_arg],
        &slurm.env(),
    );
}

#[test]
fn kubernetes_indexed_jobs_validate_and_take_their_shard_from_the_completion_index() {
    let python = python_with(&["kubernetes-validate==1.37.0"], "kubernetes_validate");
    let p = default_project();
    // `stats` asks for resources, so it goes as one Job of its own.
    p.edit(
        "  stats:\n    kind: stats\n",
        "  stats:\n    kind: stats\n    resources: {cpus: 2, mem: 4G, gpus: 1, time: \"1:00:00\"}\n",
    );
    let remote = tempfile::tempdir().unwrap();
    let remote_arg = remote.path().display().to_string();
    // The stages before `embed` run here and are pushed, so `embed`'s key is known.
    p.ok(&["run", "split", "--push", "--remote", &remote_arg]);
    let emitted = tempfile::tempdir().unwrap();
    let dir = emitted.path().display().to_string();
    let out = p.ok(&[
        "run",
        "--executor",
        "k8s",
        "--emit",
        &dir,
        "--remote",
        &remote_arg,
    ]);
    assert!(out.contains("(embed: an Indexed Job of 4 tasks)"), "{out}");
    assert!(out.contains("(stats: one Job)"), "{out}");
    let files: Vec<_> = std::fs::read_dir(emitted.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    // A person's file with a manifest's name, in a folder the pipeline never wrote to, is
    // never written over.
    let other = tempfile::tempdir().unwrap();
    let theirs = other.path().join(files[0].file_name().unwrap());
    std::fs::write(&theirs, "mine\n").unwrap();
    let other_dir = other.path().display().to_string();
    let again = p.pipeline(&[
        "run",
        "--executor",
        "k8s",
        "--emit",
        &other_dir,
        "--remote",
        &remote_arg,
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is in the way of an emitted manifest"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), b"mine\n");
    // `--emit` of a regular file says it wants a folder, and leaves the file as it is.
    let file_arg = theirs.display().to_string();
    let out = p.pipeline(&[
        "run",
        "--executor",
        "k8s",
        "--emit",
        &file_arg,
        "--remote",
        &remote_arg,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("writes its manifests into a folder"),
        "{err}"
    );
    assert!(!err.contains("File exists"), "{err}");
    assert_eq!(std::fs::read(&theirs).unwrap(), b"mine\n");
    // The API's own schemas (strict: unknown fields are errors), offline.
    for file in &files {
        let check = Command::new(python.parent().unwrap().join("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let embed = files
        .iter()
        .find(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pipeline-embed-")
        })
        .unwrap();
    let job: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(embed).unwrap()).unwrap();
    assert_eq!(job["spec"]["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(job["spec"]["completions"].as_u64(), Some(4));
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let at = args.iter().position(|a| a == "--shard-index-from").unwrap();
    assert_eq!(args[at + 1], "JOB_COMPLETION_INDEX");
    assert!(args.contains(&"embed".to_string()), "{args:?}");
    // Nothing ran: emitting is a plan, not a run.
    let log = p.ok(&["log", "--json", "-n", "1"]);
    assert!(!log.contains("\"embed\""), "{log}");
}
