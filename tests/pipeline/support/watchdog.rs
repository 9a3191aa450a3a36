//! The binary under a watchdog: a hang is a failure of its own, not a stuck test run.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

/// Runs the binary in `root`, killed (and the test failed) if it takes over 60 s: a hang is a
/// failure of its own, not a stuck test run.
pub fn bounded(root: &Path, args: &[&str]) -> Output {
    bounded_env(root, args, &[])
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
pub fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Runs the binary in `root` with `env` set (and no remote from the outer environment), under
/// the watchdog of [`bounded`].
pub fn bounded_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(root)
        .env_remove("PIPELINE_THREADS")
        .env_remove("PIPELINE_REMOTE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("`pipeline {}` hung", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
