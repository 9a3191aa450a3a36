//! Unit tests of what the executors read and write; the executors themselves run against a real
//! one-node Slurm in the pipeline's integration tests.

use std::path::PathBuf;

use pipeline_engine::cluster::ClusterJob;
use pipeline_engine::spec::{ExecutorSpec, Resources};

use crate::k8s::{k8s_memory, slurm_time_seconds};
use crate::slurm::{index_list, parse_tasks};
use crate::{Kubernetes, TaskCommand};

fn command() -> TaskCommand {
    TaskCommand {
        program: PathBuf::from("/opt/my tools/pipeline"),
        project: PathBuf::from("/shared/project"),
        file: PathBuf::from("pipeline.yaml"),
        remote: "s3://bucket/cache".into(),
        overrides: vec!["resize.width=64".into()],
    }
}

#[test]
fn scontrol_lines_give_each_task_its_state_and_exit_code() {
    let text = "JobId=12 ArrayJobId=11 ArrayTaskId=1 JobName=pipeline-embed JobState=COMPLETED Reason=None ExitCode=0:0\n\
                JobId=13 ArrayJobId=11 ArrayTaskId=0 JobName=pipeline-embed JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0\n\
                JobId=11 ArrayJobId=11 ArrayTaskId=2-3%2 JobState=PENDING Reason=Resources ExitCode=0:0\n";
    let tasks = parse_tasks(text);
    assert_eq!(tasks.len(), 4);
    assert_eq!(tasks[&0].state, "FAILED");
    assert_eq!(tasks[&0].exit, "1:0");
    assert_eq!(tasks[&1].state, "COMPLETED");
    assert_eq!(tasks[&3].state, "PENDING");
    let single = parse_tasks("JobId=7 JobName=pipeline-train JobState=RUNNING ExitCode=0:0");
    assert_eq!(single[&0].state, "RUNNING");
}

#[test]
fn index_lists_are_compressed_into_ranges() {
    assert_eq!(index_list(&[0, 1, 2, 3]), "0-3");
    assert_eq!(index_list(&[3, 1]), "1,3");
    assert_eq!(index_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
}

#[test]
fn slurm_units_become_kubernetes_units() {
    assert_eq!(k8s_memory("4G"), "4Gi");
    assert_eq!(k8s_memory("500M"), "500Mi");
    assert_eq!(k8s_memory("2048"), "2048Mi");
    assert_eq!(slurm_time_seconds("30"), Some(1800));
    assert_eq!(slurm_time_seconds("1:30"), Some(90));
    assert_eq!(slurm_time_seconds("2:00:00"), Some(7200));
    assert_eq!(slurm_time_seconds("1-12"), Some(86_400 + 12 * 3600));
    assert_eq!(slurm_time_seconds("soon"), None);
}

#[test]
fn an_indexed_job_names_its_shard_by_the_completion_index() {
    let k8s = Kubernetes::new(
        command(),
        ExecutorSpec {
            image: Some("registry.example/pipeline:1".into()),
            namespace: Some("ml".into()),
            ..ExecutorSpec::default()
        },
        2,
    );
    let resources = Resources {
        cpus: Some(2),
        mem: Some("4G".into()),
        gpus: Some(1),
        time: Some("1:00:00".into()),
        partition: None,
    };
    let job = ClusterJob {
        stage: "Embed_Posters",
        key: "44037f5aa7401234567890",
        shards: Some(4),
        resources: Some(&resources),
        dir: PathBuf::from("/tmp"),
    };
    let manifest = k8s.manifest(&job);
    assert_eq!(manifest.name, "pipeline-embed-posters-44037f5aa740");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&manifest.yaml).unwrap();
    let spec = &doc["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 4);
    assert_eq!(spec["backoffLimitPerIndex"], 2);
    assert_eq!(spec["activeDeadlineSeconds"], 3600);
    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let from = args
        .iter()
        .position(|a| *a == "--shard-index-from")
        .unwrap();
    assert_eq!(args[from + 1], "JOB_COMPLETION_INDEX");
    assert!(args.windows(2).any(|w| w == ["-S", "resize.width=64"]));
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(container["resources"]["requests"]["memory"], "4Gi");
    assert_eq!(doc["metadata"]["namespace"], "ml");
}
