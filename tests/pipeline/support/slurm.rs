//! A real one-node Slurm cluster for a test (`scripts/slurm-one-node.sh`): munged, slurmctld and
//! slurmd in a temporary directory, stopped when dropped. One at a time: the tests that use it
//! queue on a lock, since they share the machine's CPUs as the node's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::REPO;

static ONE_CLUSTER: Mutex<()> = Mutex::new(());

pub struct Slurm {
    dir: tempfile::TempDir,
    pub conf: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

impl Slurm {
    /// Starts the cluster; fails with how to install Slurm when it is missing.
    pub fn start() -> Self {
        super::debian_packages(
            &["slurmctld", "slurmd", "munged", "sbatch"],
            &["slurmctld", "slurmd", "slurm-client", "munge"],
        );
        let turn = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(Path::new(REPO).join("scripts/slurm-one-node.sh"))
            .arg("start")
            .arg(dir.path().join("slurm"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the one-node Slurm did not start (as .ci/run does: `apt-get install -y slurmctld slurmd slurm-client munge`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.path().join("slurm/slurm.conf");
        Self {
            dir,
            conf,
            _turn: turn,
        }
    }

    /// What a `pipeline` process needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("SLURM_CONF", self.conf.display().to_string())]
    }

    /// Runs a Slurm command (`squeue`, `scontrol`, `scancel`) against it; its stdout.
    pub fn command(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `squeue` lines of the jobs the pipeline submitted: `ARRAYJOBID TASK STATE NAME`.
    pub fn queue(&self) -> Vec<String> {
        self.command("squeue", &["-h", "-o", "%F %K %T %j"])
            .lines()
            .filter(|l| l.contains("pipeline-"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Path::new(REPO).join("scripts/slurm-one-node.sh"))
            .arg("stop")
            .arg(self.dir.path().join("slurm"))
            .status();
    }
}
