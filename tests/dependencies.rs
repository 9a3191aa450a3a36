//! Keeps unused dependencies out of the workspace: every crate named under a member's
//! `[dependencies]` must be named in that member's sources (as `cargo machete` checks, by
//! reading the code, not by compiling it). An unused crate costs build time on every cold build.

mod workspace;

use workspace::{REPO, members, rust_files};

/// The names under `[dependencies]` of a manifest (not dev- or build-dependencies, nor those
/// marked `# features only`).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A dependency named for the features it switches on in the graph, never in code.
        if line.ends_with("# features only") {
            continue;
        }
        if let Some(name) = line.split(['=', '.']).next() {
            names.push(name.trim().to_string());
        }
    }
    names
}

#[test]
fn every_dependency_is_named_in_the_code_of_the_crate_that_declares_it() {
    let mut unused = Vec::new();
    let mut checked = 0;
    for member in members() {
        let manifest = std::fs::read_to_string(member.join("Cargo.toml")).unwrap();
        let files: Vec<_> = ["src", "examples", "benches"]
            .iter()
            .flat_map(|dir| rust_files(&member.join(dir)))
            .collect();
        let code: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        for name in dependencies(&manifest) {
            checked += 1;
            let ident = name.replace('-', "_");
            let named = code.match_indices(&ident).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + ident.len()..].chars().next();
                let boundary =
                    |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                boundary(before) && boundary(after)
            });
            if !named {
                unused.push(format!(
                    "{}: `{name}`",
                    member.strip_prefix(REPO).unwrap_or(&member).display()
                ));
            }
        }
    }
    assert!(
        checked > 60,
        "read {checked} dependencies: the manifests moved?"
    );
    assert!(
        unused.is_empty(),
        "dependencies no code of theirs names; remove them from Cargo.toml:\n  {}",
        unused.join("\n  ")
    );
}

#[test]
fn the_check_sees_a_dependency_that_is_not_used() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nserde.workspace = true\nblake3 = \"1\"\n# a comment\nburn-flex = { version = \"1\", features = [\"simd\"] } # features only\n[dev-dependencies]\ntempfile = \"3\"\n";
    assert_eq!(dependencies(manifest), ["serde", "blake3"]);
}
