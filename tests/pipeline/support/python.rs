use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python of `.venv` with pyarrow, made on first use (what `.ci/run` does up front).
pub fn python_with_pyarrow() -> PathBuf {
    python_with(&["pyarrow>=15"], "pyarrow")
}

/// `.venv`'s Python with `packages` installed (made when `import modules` fails, as `.ci/run`
/// makes it).
pub fn python_with(packages: &[&str], modules: &str) -> PathBuf {
    let venv = Path::new(REPO).join(".venv");
    let python = venv.join("bin/python");
    let has_them = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_them(&python) {
        let made = (python.exists()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success()))
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made && has_them(&python),
            "this test needs Python with {}: `python3 -m venv .venv && .venv/bin/pip install {}` (as .ci/run does)",
            modules,
            packages.join(" ")
        );
    }
    python
}

/// Runs a Python `script` with `args` and parses what it prints as JSON; fails with its stderr.
pub fn python_json<A: AsRef<std::ffi::OsStr>>(
    python: &Path,
    script: &str,
    args: &[A],
) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub const READ_WITH_PYARROW: &str = r#"
import json, sys
import pyarrow.parquet as pq
path = sys.argv[1]
meta = json.load(open(sys.argv[2]))
f = pq.ParquetFile(path)
t = f.read()
images = t.column("image").to_pylist()
print(json.dumps({
    "types": {field.name: str(field.type) for field in t.schema},
    "row_groups": f.num_row_groups,
    "ids": t.column("imdbId").to_pylist(),
    "posters": t.column("poster").to_pylist(),
    "image_lengths": sorted({len(b) for b in images}),
    "images_hex": [b.hex() for b in images],
    "pixel_0_0": list(images[0][:3]),
    "pixel_last": list(images[0][-3:]),
    "labels": t.column("labels").to_pylist(),
    "shape": [meta["height"], meta["width"], meta["channels"]],
}))
"#;
