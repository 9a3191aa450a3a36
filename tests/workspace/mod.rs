//! The workspace as the code-reading checks see it (`tests/dependencies.rs`, `tests/modules.rs`):
//! its members and their Rust files, found on disk, not through Cargo.

use std::path::{Path, PathBuf};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every member's folder: the root package, `engine`, and each crate below `stages/` and `tools/`.
pub fn members() -> Vec<PathBuf> {
    let mut members = vec![PathBuf::from(REPO)];
    for group in ["engine", "stages", "tools"] {
        let dir = Path::new(REPO).join(group);
        if dir.join("Cargo.toml").is_file() {
            members.push(dir);
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        found.sort();
        members.extend(found);
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
