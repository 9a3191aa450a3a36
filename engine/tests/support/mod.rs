//! Toy stage kinds and a project builder for the engine's own tests, as cargo tests freshness
//! with toy projects: no burn, no polars, no posters. Each kind reads and writes one small text
//! file, so a test can say exactly what an output must be.

#![allow(dead_code)] // each test binary uses its own part of the kit

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pipeline_api::{Kind, KindInfo, RunSummary, StageContext, StageError};
use pipeline_engine::plan::{Plan, Registry};
use pipeline_engine::spec::SpecFile;
use pipeline_engine::{Engine, Event, Reporter, RunOptions, RunOutcome};
use serde::{Deserialize, Serialize};

/// Params every toy kind takes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToyParams {
    /// Appended to what the stage writes.
    pub suffix: String,
    /// Fail instead of writing.
    pub fail: bool,
    /// Wait (up to 20 s) until another stage with this set is running too, and fail if none
    /// comes: proof that two stages overlapped, without reading a clock.
    pub rendezvous: bool,
}

/// `source`-like kinds: read the file bound to `data`, write it trimmed, plus the suffix, to
/// `value.txt`. Trimming lets a test change the file without changing the output.
pub struct Source {
    pub info: &'static KindInfo,
}

/// A source kind named `kind` whose code depends on `dependencies`.
const fn source_info(
    kind: &'static str,
    dependencies: &'static [(&'static str, &'static str)],
) -> KindInfo {
    KindInfo {
        files: &["data"],
        ..KindInfo::new(kind, 1, "reads a file", dependencies)
    }
}

static SOURCE_6_1: KindInfo = source_info(
    "source",
    &[("fast_image_resize", "6.1.0"), ("serde", "1.0.228")],
);
static SOURCE_6_2: KindInfo = source_info(
    "source",
    &[("fast_image_resize", "6.2.0"), ("serde", "1.0.228")],
);
static PLAIN: KindInfo = source_info("plain", &[("serde", "1.0.228")]);

/// `transform`: reads `value.txt` of its `src` input, writes it with the suffix appended.
pub struct Transform;

/// Environment variable that makes a toy stage write half its output, create the named marker
/// file and then hang until killed (for kill-safety tests in a child process).
pub const HANG_ENV: &str = "TOY_HANG_MARKER";

fn write_value(
    ctx: &StageContext<'_>,
    params: &ToyParams,
    value: &str,
) -> Result<RunSummary, StageError> {
    if params.fail {
        return Err(StageError::invalid("asked to fail"));
    }
    if params.rendezvous {
        rendezvous()?;
    }
    let text = format!("{value}{}", params.suffix);
    if let Some(marker) = std::env::var_os(HANG_ENV) {
        pipeline_api::write_file(
            &ctx.out_dir.join("value.txt"),
            &text.as_bytes()[..text.len() / 2],
        )?;
        std::fs::write(marker, b"hanging").expect("marker is writable");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    pipeline_api::write_file(&ctx.out_dir.join("value.txt"), text.as_bytes())?;
    Ok(RunSummary::new([format!("wrote {text:?}")]))
}

static ARRIVED: Mutex<u32> = Mutex::new(0);
static ARRIVAL: Condvar = Condvar::new();

fn rendezvous() -> Result<(), StageError> {
    let mut arrived = ARRIVED.lock().unwrap();
    *arrived += 1;
    ARRIVAL.notify_all();
    let (arrived, timeout) = ARRIVAL
        .wait_timeout_while(arrived, Duration::from_secs(20), |n| *n < 2)
        .unwrap();
    drop(arrived);
    if timeout.timed_out() {
        return Err(StageError::invalid("no other stage ran at the same time"));
    }
    Ok(())
}

impl Kind for Source {
    type Params = ToyParams;
    // Each value of `Source` is a kind of its own (its name and locked crates), so `info` reads
    // the value's; the const is what a plain `Source` would be.
    const INFO: KindInfo = source_info("source", &[]);
    fn info(&self) -> &'static KindInfo {
        self.info
    }
    fn run(&self, ctx: &StageContext<'_>, params: ToyParams) -> Result<RunSummary, StageError> {
        let text =
            String::from_utf8_lossy(&pipeline_api::read_file(ctx.file("data")?)?).into_owned();
        write_value(ctx, &params, text.trim())
    }
}

impl Kind for Transform {
    type Params = ToyParams;
    const INFO: KindInfo = KindInfo {
        inputs: &["src"],
        ..KindInfo::new("transform", 1, "appends a suffix", &[])
    };
    fn run(&self, ctx: &StageContext<'_>, params: ToyParams) -> Result<RunSummary, StageError> {
        let text = String::from_utf8_lossy(&pipeline_api::read_file(
            &ctx.input("src")?.join("value.txt"),
        )?)
        .into_owned();
        write_value(ctx, &params, &text)
    }
}

/// The kinds with `source` locked to `resize_version` of `fast_image_resize`, and `plain`, a
/// source kind that does not use that crate.
pub fn registry(resize_version: &'static str) -> Registry {
    let source: &'static KindInfo = match resize_version {
        "6.1.0" => &SOURCE_6_1,
        "6.2.0" => &SOURCE_6_2,
        other => panic!("no toy registry for {other}"),
    };
    let mut registry = Registry::default();
    registry
        .register(Source { info: source })
        .register(Source { info: &PLAIN })
        .register(Transform);
    registry
}

/// A project in a temporary directory: `pipeline.yaml`, workspace files, and a plan built from
/// them on demand.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
}

impl Project {
    /// A project with `pipeline.yaml` = `yaml` and `data.txt` = `data`.
    pub fn new(yaml: &str, data: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join("data.txt"), data).unwrap();
        Self {
            dir,
            registry: registry("6.1.0"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.root().join(rel), text).unwrap();
    }

    /// Replaces `old` by `new` in `pipeline.yaml`.
    pub fn edit(&self, old: &str, new: &str) {
        let path = self.root().join("pipeline.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(old), "`{old}` is not in pipeline.yaml");
        std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
    }

    pub fn plan(&self) -> Plan {
        let path = self.root().join("pipeline.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = SpecFile::parse(&path, text).unwrap();
        Plan::build(&spec, &self.registry).unwrap()
    }

    /// Runs with `options` (`jobs` 1 unless set), recording events.
    pub fn run_with(&self, options: RunOptions) -> (RunOutcome, Vec<String>) {
        let plan = self.plan();
        let engine = Engine::new(&plan);
        let recorder = Recorder::default();
        let outcome = engine.run(&options, &recorder).unwrap();
        (outcome, recorder.lines.into_inner().unwrap())
    }

    pub fn run(&self) -> (RunOutcome, Vec<String>) {
        self.run_with(RunOptions::default())
    }

    /// `value.txt` of the stage's current output, found through the lock file.
    pub fn value(&self, stage: &str) -> String {
        let lock = pipeline_engine::lock::LockFile::load(&self.root().join("pipeline.lock"));
        let key = &lock.stages[stage].key;
        std::fs::read_to_string(self.out_dir(key).join("value.txt")).unwrap()
    }

    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.root().join("cache/v1/entries").join(key).join("out")
    }
}

/// A reporter that keeps one line per event: `ran transform (params changed: ...)`.
#[derive(Default)]
pub struct Recorder {
    pub lines: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn event(&self, event: &Event<'_>) {
        use pipeline_engine::describe;
        let line = match event {
            Event::Fresh { stage, note, .. } => match note {
                Some(note) => format!("fresh {stage} ({note})"),
                None => format!("fresh {stage}"),
            },
            Event::WouldRun { stage, reasons } => {
                format!("would run {stage} ({})", describe(reasons))
            }
            Event::Started { stage, reasons } => format!("started {stage} ({})", describe(reasons)),
            Event::Ran { stage, .. } => format!("ran {stage}"),
            Event::Failed { stage, error, .. } => format!("failed {stage}: {error}"),
            Event::Skipped { stage, reasons, .. } => {
                format!("skipped {stage} ({})", describe(reasons))
            }
            Event::Published { stage, dir, .. } => {
                format!("published {stage} to {}", dir.display())
            }
            Event::WaitingForLock { .. } => "waiting".to_string(),
            Event::Pulled { stage, .. } => format!("pulled {stage}"),
            Event::NotShared { stage, .. } => format!("not shared {stage}"),
            Event::PulledEarlier { stage, .. } => format!("pulled an earlier {stage}"),
            Event::Pushed { stage, .. } => format!("pushed {stage}"),
            Event::Dispatched { stage, dispatched } => {
                format!("sent {stage}: {} tasks", dispatched.tasks)
            }
            Event::SharedTrouble {
                stage,
                during,
                message,
            } => format!("{during} of {stage} failed: {message}"),
        };
        self.lines.lock().unwrap().push(line);
    }
}

/// source -> transform -> final, and an independent `side` of kind `plain`.
pub const CHAIN: &str = "\
stages:
  source:
    kind: source
    files:
      data: data.txt
  transform:
    kind: transform
    inputs:
      src: source
    params:
      suffix: \"-t\"
  final:
    kind: transform
    inputs:
      src: transform
    params:
      suffix: \"-f\"
  side:
    kind: plain
    files:
      data: data.txt
    params:
      suffix: \"-side\"
";
