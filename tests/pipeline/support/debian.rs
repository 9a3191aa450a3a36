//! Debian packages a test needs (Chromium for the report, Slurm and munge for the cluster
//! tests), installed on first use the way `.venv` is made: with apt-get as root or through
//! password-less sudo, and otherwise a failure naming the one command that installs them.

use std::process::Command;
use std::sync::Mutex;

/// apt-get holds a lock of its own; tests that install wait for each other instead of failing on it.
static APT: Mutex<()> = Mutex::new(());

/// Makes sure every program in `programs` is on PATH, installing `packages` when one is not.
pub fn debian_packages(programs: &[&str], packages: &[&str]) {
    let _turn = APT.lock().unwrap_or_else(|e| e.into_inner());
    let missing = || programs.iter().any(|p| !on_path(p));
    if !missing() {
        return;
    }
    let install = format!(
        "apt-get update -qq && apt-get install -y -qq {}",
        packages.join(" ")
    );
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0"));
    let ran = if as_root {
        Command::new("sh").args(["-c", &install]).status()
    } else {
        Command::new("sudo")
            .args(["-n", "sh", "-c", &install])
            .status()
    };
    assert!(
        ran.is_ok_and(|s| s.success()) && !missing(),
        "this test needs {} (from the Debian packages {}), and they could not be installed here: run `sudo apt-get install -y {}` (as .ci/run does), then the tests again",
        programs.join(", "),
        packages.join(", "),
        packages.join(" ")
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(program).is_file())
}
