//! The shared cache, each promise against a real S3 server (moto, started by the test): a fresh
//! clone pulls instead of running; a new movie costs one fetch and one embedding; concurrent
//! pushes of one key both succeed; a damaged blob is refused by name; a push cut by a dead server
//! or `kill -9` is completed by the next; bad credentials, buckets and servers are clear errors
//! before anything runs.

use crate::support::*;

use std::process::Command;

/// A copy of the repository's default project.
fn default_project() -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("project");
    copy_default_project(&root);
    Project { _dir: dir, root }
}

/// The remote's environment plus `PIPELINE_REMOTE`.
fn remote_env(moto: &Moto, url: &str) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.push(("PIPELINE_REMOTE", url.to_string()));
    env
}

/// Starts `pipeline args` and kills it with SIGKILL after `delay_ms`.
fn kill_9_after(p: &Project, args: &[&str], env: &[(&str, String)], delay_ms: u64) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(&p.root)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_fresh_clone_pulls_the_default_pipeline_and_runs_nothing() {
    let moto = Moto::start();
    let url = moto.bucket("team");
    let env = remote_env(&moto, &url);
    let a = default_project();
    let run = a.ok_env(&["run", "--push"], &env);
    assert!(run.contains("Pushed evaluate"), "{run}");
    assert_eq!(a.last_run("ran").len(), 10, "{run}");

    let b = default_project();
    // Before pulling, B's status already knows every key from the remote's records.
    let status = b.ok_env(&["status", "--remote"], &env);
    assert_eq!(
        status
            .matches("  no       yes       (`pipeline pull` takes it)")
            .count(),
        10,
        "{status}"
    );
    let run = b.ok_env(&["run", "--pull"], &env);
    assert!(
        b.last_run("ran").is_empty(),
        "B runs no stage at all: {run}"
    );
    assert_eq!(b.last_run("pulled").len(), 10, "{run}");
    assert!(
        run.contains("Nothing ran: 10 stages came from the shared cache"),
        "{run}"
    );
    assert_eq!(
        std::fs::read_to_string(b.root.join("pipeline.lock")).unwrap(),
        std::fs::read_to_string(a.root.join("pipeline.lock")).unwrap(),
        "the same keys and output digests"
    );
    // The report's outputs are the same bytes; `index.html` and `run.json` also name the run
    // that published them, which is B's own.
    let (reports_a, reports_b) = (tree(&a.root.join("reports")), tree(&b.root.join("reports")));
    for name in [
        "metrics.json",
        "predictions.parquet",
        "predictions-second.parquet",
    ] {
        assert_eq!(reports_a.get(name), reports_b.get(name), "reports/{name}");
        assert!(reports_b.contains_key(name), "reports/{name}");
    }
    for stage in ["download", "embed", "train", "evaluate"] {
        assert!(differing_files(&a, &b, stage).is_empty(), "{stage}");
    }
    // Everything B holds is verified and fresh.
    b.ok(&["verify"]);
    b.ok(&["run"]);
    assert_eq!(b.last_run("fresh").len(), 10);
    let status = b.ok_env(&["status", "--remote"], &env);
    assert_eq!(status.matches("  yes      yes").count(), 10, "{status}");
}

/// After [`INCREMENTAL`] (posters down to resized shards): the split and the embeddings.
const SPLIT_AND_EMBED: &str = "  split:
    kind: split
    inputs: {shards: resize}
  embed:
    kind: embed
    inputs: {data: split, posters: download}
    files: {weights: models/efficientnet-lite0/efficientnet-lite0-57934424.pth}
    params: {width: 64, height: 96}
";

#[test]
fn a_second_machine_adding_ten_movies_fetches_ten_posters_and_embeds_ten() {
    let (server, lines) = sample_over_http();
    let machine = || {
        let p = Project::small(0, &format!("{INCREMENTAL}{SPLIT_AND_EMBED}"));
        copy_into(&p.root, "models");
        p
    };
    let write_movies = |p: &Project, count: usize| write_movie_lines(&p.root, &lines, 1..count + 1);
    let moto = Moto::start();
    let url = moto.bucket("team");
    let env = remote_env(&moto, &url);

    let a = machine();
    write_movies(&a, 40);
    a.ok_env(&["run", "--push"], &env);
    assert_eq!(server.total_hits(), 40);

    let b = machine();
    write_movies(&b, 40);
    let run = b.ok_env(&["run", "--pull"], &env);
    assert!(b.last_run("ran").is_empty(), "{run}");
    assert_eq!(server.total_hits(), 40, "B fetches no poster: {run}");

    write_movies(&b, 50);
    let run = b.ok_env(&["run", "--pull"], &env);
    assert_eq!(
        server.total_hits(),
        50,
        "B fetches the 10 new posters only: {run}"
    );
    assert!(
        run.contains("computed 10 ") || run.contains("computed 10,"),
        "B embeds the 10 new posters only: {run}"
    );
    assert!(run.contains("reused 40 from an earlier run"), "{run}");
    assert!(
        decoded_line(&run, "filter").contains("decoded 10 posters"),
        "{run}"
    );

    // A third machine that starts with the 50 movies (no key of its own on the remote) takes
    // each stage's newest shared entry as an earlier output: 10 posters, 10 embeddings again.
    let c = machine();
    write_movies(&c, 50);
    let run = c.ok_env(&["run", "--pull"], &env);
    assert_eq!(
        server.total_hits(),
        60,
        "C fetches the 10 new posters only: {run}"
    );
    assert!(
        run.contains("Pulled the newest shared download entry"),
        "{run}"
    );
    assert!(
        run.contains("computed 10 ") || run.contains("computed 10,"),
        "C embeds the 10 new posters only: {run}"
    );
    assert!(
        decoded_line(&run, "filter").contains("decoded 10 posters"),
        "{run}"
    );
    assert_eq!(locked_outputs(&b), locked_outputs(&c));
}

#[test]
fn moto_refuses_a_second_conditional_create_and_concurrent_pushes_both_succeed() {
    let moto = Moto::start();
    let url = moto.bucket("team");
    // The server under test must honour If-None-Match: * (some emulators overwrite instead).
    let second = moto.boto(
        "s3.put_object(Bucket='team', Key='probe', Body=b'first', IfNoneMatch='*')\ntry:\n    s3.put_object(Bucket='team', Key='probe', Body=b'second', IfNoneMatch='*')\n    status = 200\nexcept Exception as e:\n    status = e.response['ResponseMetadata']['HTTPStatusCode']\nbody = s3.get_object(Bucket='team', Key='probe')['Body'].read().decode()\nprint(json.dumps([status, body]))",
        &[],
    );
    assert_eq!(second, serde_json::json!([412, "first"]));

    let env = remote_env(&moto, &url);
    let a = Project::small(30, INCREMENTAL);
    a.ok(&["run"]);
    // Two machines with the same entries push at once (a copy of A's project each).
    let b = Project::small(30, INCREMENTAL);
    b.ok(&["run"]);
    let spawn = |p: &Project| {
        Command::new(BIN)
            .args(["push"])
            .current_dir(&p.root)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
    };
    let (left, right) = std::thread::scope(|s| {
        let left = s.spawn(|| spawn(&a).unwrap());
        let right = s.spawn(|| spawn(&b).unwrap());
        (left.join().unwrap(), right.join().unwrap())
    });
    for out in [&left, &right] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let entries = moto.keys("team", "cache/entries/");
    assert_eq!(entries.len(), 4, "one record per stage: {entries:?}");
    let verify = a.ok_env(&["verify", "--remote"], &env);
    assert!(verify.contains("0 damaged"), "{verify}");
    // Whoever lost a race saw the record and moved on: each stage was sent once in all.
    let sent: usize = [&left, &right]
        .iter()
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stdout);
            let after = text.split("Pushed ").nth(1).unwrap();
            after
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(sent, 4, "{left:?} {right:?}");
    // A third machine takes all of it.
    let c = Project::small(30, INCREMENTAL);
    c.ok_env(&["pull"], &env);
    c.ok(&["run"]);
    assert_eq!(c.last_run("fresh").len(), 4);
    assert_eq!(locked_outputs(&a), locked_outputs(&c));
}

#[test]
fn a_flipped_byte_in_a_remote_blob_is_refused_by_name_and_the_stage_reruns() {
    let moto = Moto::start();
    let url = moto.bucket("team");
    let env = remote_env(&moto, &url);
    let a = Project::small(30, INCREMENTAL);
    a.ok_env(&["run", "--push"], &env);
    // The blob of resize's first shard.
    let shard = std::fs::read(a.output_of("resize").join("shard-00000.parquet")).unwrap();
    let blob = format!("cache/cas/{}", blake3::hash(&shard).to_hex());
    moto.flip_byte("team", &blob);

    let b = Project::small(30, INCREMENTAL);
    let out = b.pipeline_env(&["pull"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&blob) && stderr.contains("resize") && stderr.contains("refused"),
        "the refusal names the object and its stage: {stderr}"
    );
    let verify = b.pipeline_env(&["verify", "--remote"], &env);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("Damaged {blob}")) && report.contains("shard-00000.parquet"),
        "{report}"
    );
    // The stage runs instead, and what it makes is what A made.
    let run = b.ok_env(&["run", "--pull"], &env);
    assert_eq!(b.last_run("ran"), set(&["resize"]), "{run}");
    assert_eq!(
        std::fs::read(b.output_of("resize").join("shard-00000.parquet")).unwrap(),
        shard
    );
    // Repair deletes the blob and the record naming it; the next push sends them again.
    let repair = b.ok_env(&["verify", "--remote", "--repair"], &env);
    assert!(repair.contains(&format!("Deleted {blob}")), "{repair}");
    b.ok_env(&["push"], &env);
    let verify = b.ok_env(&["verify", "--remote"], &env);
    assert!(
        verify.contains("4 entries") && verify.contains("0 damaged"),
        "{verify}"
    );
}

#[test]
fn a_push_cut_by_a_dead_server_or_kill_9_is_completed_by_the_next_push() {
    let moto = Moto::start();
    let url = moto.bucket("team");
    let proxy = Proxy::start(moto.port);
    let mut env = remote_env(&moto, &url);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT");
    env.push(("AWS_ENDPOINT", proxy.endpoint()));
    env.push(("PIPELINE_REMOTE_TIMEOUT", "2".into()));
    let a = Project::small(30, INCREMENTAL);
    a.ok(&["run"]);

    // The server goes away after 5 uploads: the push fails, saying so, and leaves no record.
    proxy.cut_after_puts(5);
    let out = a.pipeline_env(&["push"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    assert!(moto.keys("team", "cache/entries/").is_empty());
    let blobs_before = moto.keys("team", "cache/cas/").len();
    assert!(blobs_before >= 1, "some blobs went up before the cut");

    // kill -9 of a push at several points: never a record without its blobs.
    proxy.restore();
    for delay_ms in [30, 120, 400] {
        kill_9_after(&a, &["push", "-j", "1"], &env, delay_ms);
        let verify = a.pipeline_env(&["verify", "--remote"], &env);
        assert!(
            verify.status.success(),
            "after kill -9 at {delay_ms} ms: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    let push = a.ok_env(&["push"], &env);
    assert!(push.contains("blobs were there already"), "{push}");
    assert_eq!(moto.keys("team", "cache/entries/").len(), 4);
    let verify = a.ok_env(&["verify", "--remote"], &env);
    assert!(
        verify.contains("4 entries") && verify.contains("0 damaged"),
        "{verify}"
    );

    // kill -9 of a pull at several points: the next pull completes, and nothing local is damaged.
    let b = Project::small(30, INCREMENTAL);
    for delay_ms in [30, 120, 400] {
        kill_9_after(&b, &["pull", "-j", "1"], &env, delay_ms);
        b.ok(&["verify"]);
    }
    b.ok_env(&["run", "--pull"], &env);
    assert!(b.last_run("ran").is_empty());
    assert_eq!(locked_outputs(&a), locked_outputs(&b));
}

#[test]
fn credentials_buckets_and_servers_that_fail_are_clear_errors_before_anything_runs() {
    let moto = Moto::start();
    let url = moto.bucket("team");
    let p = Project::small(30, INCREMENTAL);
    // A clean environment: no AWS_* from the machine, and a HOME without ~/.aws.
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, String)]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(&p.root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", home.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let nothing_ran = || assert!(!p.root.join("cache/v1/runs.jsonl").exists());

    // No credentials at all: the variables to set are named.
    let endpoint = vec![("AWS_ENDPOINT", moto.endpoint())];
    let (code, stderr) = run(&["run", "--pull", "--remote", &url], &endpoint);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("AWS_ACCESS_KEY_ID") && stderr.contains("AWS_PROFILE"),
        "{stderr}"
    );
    nothing_ran();

    // Wrong credentials, refused by a server that checks them.
    let checking = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let mut wrong = checking.env();
    wrong.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    wrong.push(("AWS_ACCESS_KEY_ID", "AKIAWRONG".into()));
    wrong.push(("AWS_SECRET_ACCESS_KEY", "wrong".into()));
    let (code, stderr) = run(&["run", "--push", "--remote", "s3://team/cache"], &wrong);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "{stderr}"
    );
    nothing_ran();

    // A bucket that does not exist.
    let (code, stderr) = run(&["push", "--remote", "s3://nosuch/cache"], &moto.env());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");

    // No server, and a server that never answers (PIPELINE_REMOTE_TIMEOUT seconds a request).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut down = moto.env();
    down.retain(|(k, _)| *k != "AWS_ENDPOINT");
    down.push(("AWS_ENDPOINT", format!("http://127.0.0.1:{closed}")));
    let (code, stderr) = run(&["pull", "--remote", &url], &down);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    let silent = Server::start(|_, _, _| {
        std::thread::sleep(std::time::Duration::from_secs(30));
        None
    });
    let mut slow = moto.env();
    slow.retain(|(k, _)| *k != "AWS_ENDPOINT");
    slow.push(("AWS_ENDPOINT", format!("http://127.0.0.1:{}", silent.port)));
    slow.push(("PIPELINE_REMOTE_TIMEOUT", "1".into()));
    let started = std::time::Instant::now();
    let (code, stderr) = run(&["pull", "--remote", &url], &slow);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot be reached") && stderr.contains("PIPELINE_REMOTE_TIMEOUT"),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 25, "{:?}", started.elapsed());
    nothing_ran();

    // Keys from a profile, as the AWS CLI keeps them, and the remote named in pipeline.yaml.
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[team]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile team]\nregion = us-east-1\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(p.root.join("pipeline.yaml")).unwrap();
    std::fs::write(
        p.root.join("pipeline.yaml"),
        format!("cache: {{remote: '{url}'}}\n{text}"),
    )
    .unwrap();
    let (code, stderr) = run(&["run", "--push"], &[("AWS_PROFILE", "team".into())]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(moto.keys("team", "cache/entries/").len(), 4);
}

#[test]
fn a_directory_serves_as_the_shared_cache_too() {
    let shared = tempfile::tempdir().unwrap();
    let url = shared.path().join("cache").display().to_string();
    let a = Project::small(30, INCREMENTAL);
    a.ok(&["run", "--push", "--remote", &url]);
    let b = Project::small(30, INCREMENTAL);
    let pulled = b.ok(&["pull", "--remote", &url]);
    assert!(pulled.contains("Pulled 4 stages"), "{pulled}");
    b.ok(&["run"]);
    assert_eq!(b.last_run("fresh").len(), 4);
    assert_eq!(locked_outputs(&a), locked_outputs(&b));
    let verify = b.ok(&["verify", "--remote", &url]);
    assert!(
        verify.contains("4 entries") && verify.contains("0 damaged"),
        "{verify}"
    );
}
