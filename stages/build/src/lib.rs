//! Build-script helper for stage kinds: writes `$OUT_DIR/locked_dependencies.rs`, the crates the
//! kind's code depends on with the versions Cargo.lock resolved them to, for
//! `pipeline_api::locked_dependencies!()` and so for the kind's cache key.
//!
//! "Its code" is the crate's own `[dependencies]` and, for each workspace crate among them (a
//! shared stage library), that crate's `[dependencies]` in turn: the crates whose functions the
//! kind calls. Crates below those are left out on purpose: Cargo.lock lists every platform's
//! crates, and a bump of a Windows-only crate three levels below polars would otherwise rerun a
//! training on Linux. Dev- and build-dependencies never reach a stage's output and are left out,
//! and so are optional ones: the only one is libtorch's `tch`, a build option like the device,
//! which must not split the cache between the CPU and the libtorch builds of one project.
//!
//! A crate that is both a kind and a library of another kind (train, whose model `evaluate`
//! loads) may name, under `[package.metadata.pipeline] own-use`, dependencies that only its own
//! stage calls (train's checkpoint format): they key that kind and no kind that uses the crate.
//!
//! A stage crate's `build.rs` is `fn main() { pipeline_build::emit_locked_dependencies(); }`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Deserialize)]
struct Lockfile {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

#[derive(Deserialize)]
struct LockedPackage {
    name: String,
    version: String,
    /// Absent for workspace members (and other path crates).
    source: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// A manifest's `[dependencies]` and, in the workspace root, `[workspace.dependencies]`.
#[derive(Deserialize, Default)]
struct Manifest {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    workspace: Option<Workspace>,
    #[serde(default)]
    package: Option<Package>,
}

#[derive(Deserialize, Default)]
struct Package {
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    pipeline: Option<PipelineMetadata>,
}

/// `[package.metadata.pipeline]`.
#[derive(Deserialize, Default)]
struct PipelineMetadata {
    /// Dependencies only the crate's own stage calls; a kind that uses the crate as a library is
    /// not keyed on them.
    #[serde(default, rename = "own-use")]
    own_use: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Workspace {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
}

/// A normal dependency as a manifest names it.
struct Dependency {
    /// The package's own name (after `package = "..."` renames).
    package: String,
    /// Its directory, when it is a path (workspace) crate.
    path: Option<PathBuf>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

/// The normal dependencies of the crate in `dir`, resolving `x.workspace = true` against the
/// workspace root's table; for a crate used as a library (`as_library`), without its `own-use`.
fn dependencies(
    dir: &Path,
    root: &Path,
    workspace: &BTreeMap<String, toml::Value>,
    as_library: bool,
) -> Vec<Dependency> {
    let manifest: Manifest = parse(&dir.join("Cargo.toml"));
    let own_use: Vec<String> = match manifest.package.and_then(|p| p.metadata?.pipeline) {
        Some(pipeline) if as_library => pipeline.own_use,
        _ => Vec::new(),
    };
    manifest
        .dependencies
        .iter()
        .filter(|(name, _)| !own_use.contains(name))
        .filter(|(_, spec)| spec.get("optional").and_then(toml::Value::as_bool) != Some(true))
        .map(|(name, spec)| {
            let inherited = spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
            let (spec, base) = if inherited {
                (workspace.get(name).unwrap_or(spec), root)
            } else {
                (spec, dir)
            };
            Dependency {
                package: spec
                    .get("package")
                    .and_then(toml::Value::as_str)
                    .unwrap_or(name)
                    .to_string(),
                path: spec
                    .get("path")
                    .and_then(toml::Value::as_str)
                    .map(|p| base.join(p)),
            }
        })
        .collect()
}

/// `(crate, version)` for the crate in `dir`, as described in the module docs: sorted, one entry
/// per crate (two versions of one crate are joined with a space).
pub fn locked_dependencies(dir: &Path) -> Vec<(String, String)> {
    let root = dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", dir.display()))
        .to_path_buf();
    let lock: Lockfile = parse(&root.join("Cargo.lock"));
    let workspace = parse::<Manifest>(&root.join("Cargo.toml"))
        .workspace
        .unwrap_or_default()
        .dependencies;
    let members: BTreeMap<&str, &LockedPackage> = lock
        .package
        .iter()
        .filter(|p| p.source.is_none())
        .map(|p| (p.name.as_str(), p))
        .collect();
    let versions_of = |name: &str| -> Vec<&str> {
        lock.package
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.version.as_str())
            .collect()
    };
    let own_name = package_name(dir);
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut todo = vec![(own_name, dir.to_path_buf())];
    let mut visited = BTreeSet::new();
    while let Some((name, crate_dir)) = todo.pop() {
        if !visited.insert(name.clone()) {
            continue;
        }
        let Some(locked) = members.get(name.as_str()) else {
            continue;
        };
        let as_library = crate_dir.as_path() != dir;
        for dependency in dependencies(&crate_dir, &root, &workspace, as_library) {
            if let Some(path) = dependency.path {
                todo.push((dependency.package, path));
                continue;
            }
            // Cargo.lock writes `name` when one version is locked, `name version` otherwise.
            let version = locked.dependencies.iter().find_map(|entry| {
                let mut parts = entry.split(' ');
                (parts.next() == Some(dependency.package.as_str()))
                    .then(|| parts.next().map(str::to_string))
            });
            let version = match version {
                Some(Some(version)) => version,
                Some(None) | None => match versions_of(&dependency.package).as_slice() {
                    [one] => one.to_string(),
                    _ => continue,
                },
            };
            found.entry(dependency.package).or_default().insert(version);
        }
    }
    found
        .into_iter()
        .map(|(name, versions)| (name, versions.into_iter().collect::<Vec<_>>().join(" ")))
        .collect()
}

fn package_name(dir: &Path) -> String {
    let manifest: toml::Table = toml::from_str(&read(&dir.join("Cargo.toml"))).expect("a manifest");
    manifest["package"]["name"]
        .as_str()
        .expect("a package name")
        .to_string()
}

/// For a build script: writes `$OUT_DIR/locked_dependencies.rs` for the crate being built and
/// asks Cargo to rerun when Cargo.lock or a manifest changes.
// Talking to Cargo on stdout is what a build script is for.
#[allow(clippy::print_stdout)]
pub fn emit_locked_dependencies() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run from a build script"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("run from a build script"));
    let list = locked_dependencies(&dir);
    let mut code = String::from("&[\n");
    for (name, version) in &list {
        code.push_str(&format!("    ({name:?}, {version:?}),\n"));
    }
    code.push(']');
    std::fs::write(out.join("locked_dependencies.rs"), code).expect("OUT_DIR is writable");
    if let Some(root) = dir.ancestors().find(|d| d.join("Cargo.lock").is_file()) {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("Cargo.lock").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            root.join("Cargo.toml").display()
        );
    }
    println!("cargo:rerun-if-changed=Cargo.toml");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_depends_on_the_locked_fast_image_resize_and_ingest_does_not() {
        let stages = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let lock = read(&stages.parent().unwrap().join("Cargo.lock"));
        let locked_version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"fast_image_resize\""))
            .and_then(|p| p.lines().find(|l| l.starts_with("version = ")))
            .map(|l| {
                l.trim_start_matches("version = ")
                    .trim_matches('"')
                    .to_string()
            })
            .expect("fast_image_resize is in Cargo.lock");
        let resize = locked_dependencies(&stages.join("resize"));
        assert!(
            resize.contains(&("fast_image_resize".into(), locked_version)),
            "{resize:?}"
        );
        let names = |list: &[(String, String)]| -> Vec<String> {
            list.iter().map(|(n, _)| n.clone()).collect()
        };
        // Through the shared shard library: resize writes Parquet with polars.
        assert!(names(&resize).contains(&"polars".to_string()), "{resize:?}");
        let ingest = locked_dependencies(&stages.join("ingest"));
        assert!(!names(&ingest).contains(&"fast_image_resize".to_string()));
        assert!(names(&ingest).contains(&"csv".to_string()), "{ingest:?}");
        // Workspace crates are covered by VERSION, test-only crates never reach an output.
        assert!(
            !names(&resize)
                .iter()
                .any(|n| n.starts_with("stage-") || n == "tempfile")
        );
    }
}
