//! The engine's side of a shared cache, with toy stages and a shared cache that is another
//! project's store: what `run --pull`, `pipeline pull` and `--push` do to a run, whatever carries
//! the entries (the S3 one is tested in `remote/` and `tests/pipeline/remote.rs`).

mod support;

use std::collections::BTreeSet;

use pipeline_engine::store::Store;
use pipeline_engine::{Engine, Pulled, Pushed, RunOptions, SharedCache, SharedError, SharedPolicy};
use support::{CHAIN, Project, Recorder};

/// A shared cache that is a plain store on the same disk.
struct StoreAsShared(Store);

fn copy_entry(from: &Store, to: &Store, key: &str) -> Result<usize, SharedError> {
    let manifest = from.manifest(key).ok_or("no manifest")?;
    let pending = to.begin(key)?;
    for rel in manifest.files.keys() {
        let dest = pending.out_dir().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(from.out_dir(key).join(rel), dest)?;
    }
    to.adopt(pending, &manifest, &BTreeSet::new())?;
    Ok(manifest.files.len())
}

impl SharedCache for StoreAsShared {
    fn pull(&self, store: &Store, key: &str) -> Result<Option<Pulled>, SharedError> {
        if self.0.fresh(key).is_none() {
            return Ok(None);
        }
        let files = copy_entry(&self.0, store, key)?;
        Ok(Some(Pulled { files, bytes: 0 }))
    }

    fn push(&self, store: &Store, key: &str) -> Result<Pushed, SharedError> {
        self.0.init()?;
        if self.0.fresh(key).is_some() {
            return Ok(Pushed {
                already_there: true,
                ..Pushed::default()
            });
        }
        let blobs = copy_entry(store, &self.0, key)?;
        Ok(Pushed {
            blobs,
            ..Pushed::default()
        })
    }
}

/// A shared cache whose every transfer fails.
struct Broken;

impl SharedCache for Broken {
    fn pull(&self, _: &Store, key: &str) -> Result<Option<Pulled>, SharedError> {
        Err(format!("cas/{key} does not match its blake3: refused").into())
    }
    fn push(&self, _: &Store, _: &str) -> Result<Pushed, SharedError> {
        Err("the server went away".into())
    }
}

fn run_shared(
    p: &Project,
    shared: &dyn SharedCache,
    options: RunOptions,
) -> pipeline_engine::RunOutcome {
    let plan = p.plan();
    let engine = Engine::new(&plan).with_shared(shared);
    engine.run(&options, &Recorder::default()).unwrap()
}

#[test]
fn a_pull_takes_every_entry_another_machine_pushed_and_runs_nothing() {
    let shared_dir = tempfile::tempdir().unwrap();
    let shared = StoreAsShared(Store::new(shared_dir.path()));
    let a = Project::new(CHAIN, "hello\n");
    let pushed = run_shared(
        &a,
        &shared,
        RunOptions {
            shared: SharedPolicy::Push,
            ..RunOptions::default()
        },
    );
    assert_eq!(pushed.ran.len(), 4);
    assert_eq!(shared.0.keys().len(), 4);

    // `pipeline pull`: entries come in, nothing runs, the lock file is not written.
    let b = Project::new(CHAIN, "hello\n");
    let only = run_shared(
        &b,
        &shared,
        RunOptions {
            shared: SharedPolicy::PullOnly,
            ..RunOptions::default()
        },
    );
    assert_eq!(only.pulled, ["source", "transform", "final", "side"]);
    assert!(only.ran.is_empty());
    assert!(!b.root().join("pipeline.lock").exists());
    // The next plain run finds them fresh and writes the same lock as A's.
    let (next, _) = b.run();
    assert_eq!(next.fresh.len(), 4);
    assert_eq!(
        std::fs::read(b.root().join("pipeline.lock")).unwrap(),
        std::fs::read(a.root().join("pipeline.lock")).unwrap()
    );
    assert_eq!(b.value("final"), "hello-t-f");

    // `run --pull` on a third machine: pulled, recorded as pulled, the lock written.
    let c = Project::new(CHAIN, "hello\n");
    let pulled = run_shared(
        &c,
        &shared,
        RunOptions {
            shared: SharedPolicy::Pull,
            ..RunOptions::default()
        },
    );
    assert!(pulled.ran.is_empty());
    assert_eq!(pulled.pulled.len(), 4);
    assert!(c.root().join("pipeline.lock").exists());

    // A changed file: what the shared cache lacks runs, what it has is taken.
    let d = Project::new(CHAIN, "other\n");
    let mixed = run_shared(
        &d,
        &shared,
        RunOptions {
            shared: SharedPolicy::Pull,
            ..RunOptions::default()
        },
    );
    assert_eq!(mixed.ran, ["source", "transform", "final", "side"]);
    // `pipeline pull` there names what the remote lacks, and what it cannot key.
    let e = Project::new(CHAIN, "other\n");
    let only = run_shared(
        &e,
        &shared,
        RunOptions {
            shared: SharedPolicy::PullOnly,
            ..RunOptions::default()
        },
    );
    assert!(only.pulled.is_empty() && only.ran.is_empty());
    let lacking: BTreeSet<&str> = only.not_shared.iter().map(String::as_str).collect();
    assert_eq!(
        lacking,
        BTreeSet::from(["source", "transform", "final", "side"])
    );
}

#[test]
fn a_forced_stage_is_never_pulled_and_a_failing_shared_cache_only_costs_the_work() {
    let shared_dir = tempfile::tempdir().unwrap();
    let shared = StoreAsShared(Store::new(shared_dir.path()));
    let a = Project::new(CHAIN, "hello\n");
    run_shared(
        &a,
        &shared,
        RunOptions {
            shared: SharedPolicy::Push,
            ..RunOptions::default()
        },
    );

    let b = Project::new(CHAIN, "hello\n");
    let forced = run_shared(
        &b,
        &shared,
        RunOptions {
            shared: SharedPolicy::Pull,
            force: vec!["transform".into()],
            ..RunOptions::default()
        },
    );
    assert_eq!(forced.ran, ["transform"]);
    assert_eq!(forced.pulled, ["source", "final", "side"]);

    let c = Project::new(CHAIN, "hello\n");
    let broken = run_shared(
        &c,
        &Broken,
        RunOptions {
            shared: SharedPolicy::PullAndPush,
            ..RunOptions::default()
        },
    );
    assert_eq!(broken.ran.len(), 4, "every stage ran instead");
    let pulls = broken
        .shared_troubles
        .iter()
        .filter(|t| t.during == "pull")
        .count();
    let pushes = broken
        .shared_troubles
        .iter()
        .filter(|t| t.during == "push")
        .count();
    assert_eq!((pulls, pushes), (4, 4));
    assert!(broken.shared_troubles[0].message.contains("refused"));
    assert_eq!(c.value("final"), "hello-t-f");
}
