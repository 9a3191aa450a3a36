//! The workspace as the code-reading checks see it (`tests/dependencies.rs`, `tests/modules.rs`):
//! its members and their Rust files, found on disk, not through Cargo.

use std::path::{Path, PathBuf};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every member's folder: the root package and each `members` entry of the root Cargo.toml
/// (`dir/*` expanded to the folders below `dir` that hold a Cargo.toml), so a new member is
/// checked without being listed here.
pub fn members() -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members = ["))
        .expect("the root Cargo.toml lists its members on one line");
    let mut members = vec![PathBuf::from(REPO)];
    for entry in line.split('"').skip(1).step_by(2) {
        match entry.strip_suffix("/*") {
            Some(group) => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join(group))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.join("Cargo.toml").is_file())
                    .collect();
                found.sort();
                members.extend(found);
            }
            None => members.push(Path::new(REPO).join(entry)),
        }
    }
    members
}

/// Every `.rs` file below `dir`.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
