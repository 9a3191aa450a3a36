//! Owns the Kubernetes executor: a per-item stage as an Indexed Job (`completionMode: Indexed`;
//! `JOB_COMPLETION_INDEX` picks the shard; `backoffLimitPerIndex` retries a failed index alone),
//! a whole stage as a plain Job. The manifests are either written for a person to apply
//! (`pipeline run --executor k8s --emit DIR`), or applied with `kubectl` and polled until the Job
//! completes or fails; an interrupted driver deletes its Jobs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipeline_api::Progress;
use pipeline_engine::SharedError;
use pipeline_engine::cluster::{ClusterJob, Dispatched, Executor};
use pipeline_engine::fsio::Area;
use pipeline_engine::spec::{ExecutorKind, ExecutorSpec, Resources};
use serde_json::{Value, json};

use crate::state::JobState;
use crate::{ClusterError, TaskCommand};

/// The environment variable Kubernetes sets to a pod's index in an Indexed Job.
pub const INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// Where the project is inside the task's container.
const PROJECT_DIR: &str = "/project";

/// Where the task's scratch cache is (an `emptyDir`).
const SCRATCH_DIR: &str = "/scratch";

/// One Job, ready to write or apply.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The Job's name (a DNS label: `pipeline-embed-44037f5aa740`).
    pub name: String,
    /// The YAML.
    pub yaml: String,
}

/// Runs stages as Kubernetes Jobs.
pub struct Kubernetes {
    command: TaskCommand,
    settings: ExecutorSpec,
    retries: u32,
    /// Jobs applied and not yet over, for [`Kubernetes::cancel_all`].
    alive: Mutex<BTreeSet<String>>,
}

impl Kubernetes {
    /// An executor whose tasks run `command` (its program on the image's `PATH`, its project
    /// at `/project`) in the image and namespace of `settings`.
    pub fn new(command: TaskCommand, settings: ExecutorSpec, retries: u32) -> Self {
        Self {
            command,
            settings,
            retries,
            alive: Mutex::new(BTreeSet::new()),
        }
    }

    /// The namespace of the Jobs.
    fn namespace(&self) -> &str {
        self.settings.namespace.as_deref().unwrap_or("default")
    }

    /// The Job that runs `job`.
    pub fn manifest(&self, job: &ClusterJob<'_>) -> Manifest {
        let name = job_name(job.stage, job.key);
        let labels = json!({
            "app.kubernetes.io/name": "pipeline",
            "pipeline/stage": dns_label(job.stage, 63),
        });
        let mut args = self.command.args(job, INDEX_VAR);
        args.extend(["--cache-dir".to_string(), SCRATCH_DIR.to_string()]);
        let mut container = json!({
            "name": "task",
            "image": self.settings.image.as_deref().unwrap_or("pipeline:latest"),
            "command": [self.command.program.display().to_string()],
            "args": args,
            "workingDir": PROJECT_DIR,
            "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
        });
        let mut volumes = vec![json!({"name": "scratch", "emptyDir": {}})];
        if let Some(claim) = &self.settings.project_claim {
            container["volumeMounts"]
                .as_array_mut()
                .expect("an array")
                .push(json!({"name": "project", "mountPath": PROJECT_DIR}));
            volumes.push(json!({"name": "project", "persistentVolumeClaim": {"claimName": claim}}));
        }
        if let Some(secret) = &self.settings.env_secret {
            container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
        }
        if let Some(resources) = job.resources.map(container_resources)
            && resources != json!({})
        {
            container["resources"] = resources;
        }
        let mut spec = json!({
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        });
        match job.shards {
            Some(shards) => {
                spec["completionMode"] = json!("Indexed");
                spec["completions"] = json!(shards);
                spec["parallelism"] = json!(shards);
                // Each index is retried alone, up to the limit; the Job fails once one index is
                // out of attempts.
                spec["backoffLimitPerIndex"] = json!(self.retries);
                spec["maxFailedIndexes"] = json!(0);
            }
            None => spec["backoffLimit"] = json!(self.retries),
        }
        if let Some(seconds) = job
            .resources
            .and_then(|r| r.time.as_deref())
            .and_then(slurm_time_seconds)
        {
            spec["activeDeadlineSeconds"] = json!(seconds);
        }
        let manifest = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace(),
                "labels": labels,
                "annotations": {
                    "pipeline/stage": job.stage,
                    "pipeline/key": job.key,
                },
            },
            "spec": spec,
        });
        Manifest {
            yaml: serde_yaml_ng::to_string(&manifest).expect("JSON values serialise as YAML"),
            name,
        }
    }

    /// Deletes every Job this executor applied that is not over; for Ctrl-C. Returns their names.
    pub fn cancel_all(&self) -> Vec<String> {
        let names: Vec<String> = self
            .alive
            .lock()
            .map(|alive| alive.iter().cloned().collect())
            .unwrap_or_default();
        for name in &names {
            let _ = Command::new("kubectl")
                .args([
                    "delete",
                    "job",
                    name,
                    "-n",
                    self.namespace(),
                    "--wait=false",
                ])
                .status();
        }
        names
    }

    fn run_job(
        &self,
        job: &ClusterJob<'_>,
        progress: &dyn Progress,
    ) -> Result<Dispatched, ClusterError> {
        let started = Instant::now();
        let manifest = self.manifest(job);
        let file = job.dir.join("job.yaml");
        std::fs::write(&file, &manifest.yaml).map_err(|source| ClusterError::Write {
            path: file.clone(),
            source,
        })?;
        kubectl(&["apply", "-f", &file.display().to_string()])?;
        self.alive
            .lock()
            .expect("not poisoned")
            .insert(manifest.name.clone());
        let tasks = job.tasks();
        let mut state = JobState {
            stage: job.stage.to_string(),
            executor: "k8s".into(),
            jobs: vec![manifest.name.clone()],
            tasks,
            pending: tasks,
            logs: job.dir.clone(),
            driver_pid: std::process::id(),
            ..JobState::default()
        };
        progress.start("tasks", u64::from(tasks));
        let mut shown_done = 0;
        loop {
            let status: Value = serde_json::from_str(&kubectl(&[
                "get",
                "job",
                &manifest.name,
                "-n",
                self.namespace(),
                "-o",
                "json",
            ])?)
            .unwrap_or(Value::Null);
            let status = &status["status"];
            let count = |field: &str| status[field].as_u64().unwrap_or(0) as u32;
            let next = JobState {
                done: count("succeeded"),
                running: count("active"),
                pending: tasks.saturating_sub(count("succeeded") + count("active")),
                failed: count("failed"),
                ..state.clone()
            };
            if next.done > shown_done {
                progress.advance(u64::from(next.done - shown_done));
                shown_done = next.done;
            }
            if next != state {
                let _ = next.save(&job.dir);
                state = next;
            }
            let condition = |kind: &str| {
                status["conditions"].as_array().is_some_and(|all| {
                    all.iter()
                        .any(|c| c["type"] == kind && c["status"] == "True")
                })
            };
            if condition("Complete") {
                break;
            }
            if condition("Failed") {
                self.alive
                    .lock()
                    .expect("not poisoned")
                    .remove(&manifest.name);
                state.ended = true;
                let _ = state.save(&job.dir);
                let indexes = status["failedIndexes"].as_str().unwrap_or("?").to_string();
                return Err(ClusterError::TasksFailed {
                    stage: job.stage.to_string(),
                    failed: state.failed as usize,
                    tasks,
                    attempts: self.retries + 1,
                    details: format!(
                        "failed indexes {indexes}; `kubectl logs -n {} job/{}` and `kubectl describe job -n {0} {1}` show why",
                        self.namespace(),
                        manifest.name
                    ),
                    logs: job.dir.clone(),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        self.alive
            .lock()
            .expect("not poisoned")
            .remove(&manifest.name);
        state.ended = true;
        let _ = state.save(&job.dir);
        Ok(Dispatched {
            executor: "k8s".into(),
            jobs: vec![manifest.name],
            tasks,
            retried: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the manifest of `job` into `dir` as `<name>.yaml`; its path. A file of that name
    /// is replaced only when an earlier `--emit` wrote it (listed in [`EMITTED_FILE`] beside
    /// it) or already holds these bytes: a person's file is never written over.
    pub fn emit(
        &self,
        job: &ClusterJob<'_>,
        dir: &Path,
    ) -> Result<std::path::PathBuf, ClusterError> {
        if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(ClusterError::EmitNotAFolder(dir.to_path_buf()));
        }
        let manifest = self.manifest(job);
        let name = format!("{}.yaml", manifest.name);
        let path = dir.join(&name);
        let write = |source| ClusterError::Write {
            path: path.clone(),
            source,
        };
        let record_path = dir.join(EMITTED_FILE);
        let mut ours: BTreeSet<String> = std::fs::read(&record_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        if std::fs::symlink_metadata(&path).is_ok()
            && !ours.contains(&name)
            && std::fs::read(&path).ok().as_deref() != Some(manifest.yaml.as_bytes())
        {
            return Err(ClusterError::EmitForeign(path));
        }
        std::fs::create_dir_all(dir).map_err(write)?;
        pipeline_engine::fsio::write_atomic(&path, manifest.yaml.as_bytes(), Area::Published)
            .map_err(|e| write(e.source))?;
        ours.insert(name);
        let listed = serde_json::to_vec_pretty(&ours).expect("names serialise");
        pipeline_engine::fsio::write_atomic(&record_path, &listed, Area::Published)
            .map_err(|e| write(e.source))?;
        Ok(path)
    }
}

/// The file in an `--emit` folder that lists the manifests the pipeline wrote there (JSON, but
/// not named `.json`: `kubectl apply -f DIR` would take it for a manifest).
pub const EMITTED_FILE: &str = ".pipeline-emitted";

impl Executor for Kubernetes {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::K8s
    }

    fn run(
        &self,
        job: &ClusterJob<'_>,
        progress: &dyn Progress,
    ) -> Result<Dispatched, SharedError> {
        Ok(self.run_job(job, progress)?)
    }
}

/// A container's `resources` from a stage's `resources:` (a partition has no meaning here).
fn container_resources(res: &Resources) -> Value {
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpus) = res.cpus {
        requests.insert("cpu".into(), json!(cpus.to_string()));
    }
    if let Some(mem) = res.mem.as_deref() {
        let quantity = k8s_memory(mem);
        requests.insert("memory".into(), json!(quantity));
        limits.insert("memory".into(), json!(quantity));
    }
    if let Some(gpus) = res.gpus {
        limits.insert("nvidia.com/gpu".into(), json!(gpus.to_string()));
    }
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    Value::Object(out)
}

/// Slurm's memory (`4G`, `500M`, `2048` in megabytes) as a Kubernetes quantity (`4Gi`).
pub(crate) fn k8s_memory(mem: &str) -> String {
    let mem = mem.trim();
    match mem.chars().last() {
        Some(unit @ ('K' | 'M' | 'G' | 'T' | 'k' | 'm' | 'g' | 't')) => {
            format!("{}{}i", &mem[..mem.len() - 1], unit.to_ascii_uppercase())
        }
        _ => format!("{mem}Mi"),
    }
}

/// Slurm's time (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`) in seconds.
pub(crate) fn slurm_time_seconds(time: &str) -> Option<u64> {
    let (days, rest) = match time.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, time),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let seconds = match (days > 0, parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (_, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        _ => return None,
    };
    Some(days * 86_400 + seconds)
}

/// `pipeline-<stage>-<first 12 of the key>`, a valid Job name.
fn job_name(stage: &str, key: &str) -> String {
    let key = &key[..key.len().min(12)];
    let stage = dns_label(stage, 63 - "pipeline--".len() - key.len());
    format!("pipeline-{stage}-{key}")
}

/// `text` as a DNS label of at most `max` characters: lowercase letters, digits and `-`, not
/// starting or ending with `-`.
fn dns_label(text: &str, max: usize) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "stage".into()
    } else {
        trimmed.to_string()
    }
}

/// Runs `kubectl` with `args`; its stdout.
fn kubectl(args: &[&str]) -> Result<String, ClusterError> {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .map_err(|source| ClusterError::Missing {
            program: "kubectl".into(),
            what: "Kubernetes' kubectl",
            source,
        })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command: format!("kubectl {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
