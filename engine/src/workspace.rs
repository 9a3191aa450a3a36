//! Owns the rules for the paths `pipeline.yaml` names, checked when the plan is built, before
//! anything runs:
//!
//! - a `files:` entry is a regular file or a directory: a FIFO, a device or a socket would hang
//!   or never end when the stage hashes or reads it;
//! - a `publish:` target is a folder inside the project, outside `cache/`, apart from every
//!   `files:` entry and every other stage's target: a copy written anywhere else would overwrite
//!   what is not the pipeline's, change the inputs it hashes, or be removed by `gc`.

use std::path::{Component, Path, PathBuf};

use pipeline_api::odd_file_type;

/// What is wrong with a path, and how to fix it.
#[derive(Debug, PartialEq, Eq)]
pub struct PathProblem {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl PathProblem {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: help.into(),
        }
    }
}

/// Checks a `files:` entry bound to `role`: it exists, and (links followed) is a directory when
/// `wants_directory`, a regular file otherwise.
pub fn check_workspace_file(
    root: &Path,
    role: &str,
    path: &str,
    wants_directory: bool,
) -> Result<(), PathProblem> {
    let full = root.join(path);
    let meta = std::fs::metadata(&full).map_err(|_| {
        PathProblem::new(
            format!("file `{path}` does not exist"),
            "paths are relative to the directory of the pipeline file",
        )
    })?;
    let wanted = if wants_directory {
        "a directory"
    } else {
        "a regular file"
    };
    if meta.is_dir()
        && wants_directory
        && let (Ok(dir), Ok(project)) = (
            full.canonicalize(),
            // `pipeline.yaml` in the current directory has the root "".
            Path::new(".").join(root).canonicalize(),
        )
        && project.starts_with(&dir)
    {
        return Err(PathProblem::new(
            format!(
                "`{path}` holds the project itself, with its `cache/`, `pipeline.lock` and published reports, which every run changes"
            ),
            format!(
                "point `{role}` at a folder inside the project that holds only its inputs, e.g. `data/posters`"
            ),
        ));
    }
    let found = match odd_file_type(&meta) {
        Some(kind) => kind,
        None if meta.is_dir() == wants_directory => return Ok(()),
        None if meta.is_dir() => "a directory",
        None => "a regular file",
    };
    Err(PathProblem::new(
        format!("`{path}` is {found}, but `{role}` takes {wanted}"),
        format!(
            "point `{role}` at {wanted}; the pipeline hashes what it reads, and a pipe or a device never ends"
        ),
    ))
}

/// The `/`-separated form of a relative path without `.` components, or `None` when it is
/// absolute or climbs with `..`.
pub fn normal_relative(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Whether one of two normalised relative paths is the other or lies inside it.
fn nested(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer || outer.is_empty() || inner.starts_with(&format!("{outer}/"))
    };
    within(a, b) || within(b, a)
}

/// Checks a `publish:` target of a project rooted at `root`; `files` are every `files:` entry of
/// the pipeline. Returns the normalised target.
pub fn check_publish_target<'a>(
    root: &Path,
    target: &str,
    files: impl IntoIterator<Item = &'a str>,
) -> Result<String, PathProblem> {
    const HELP: &str = "publish to a folder inside the project, e.g. `publish: reports`";
    let Some(normal) = normal_relative(target) else {
        return Err(PathProblem::new(
            format!(
                "`publish: {target}` is not a folder inside the project (absolute, or climbing with `..`)"
            ),
            format!(
                "{HELP}: an absolute path or `..` would write over files that are not the pipeline's"
            ),
        ));
    };
    if normal.is_empty() {
        return Err(PathProblem::new(
            format!("`publish: {target}` is the project folder itself"),
            HELP,
        ));
    }
    if nested(&normal, "cache") {
        return Err(PathProblem::new(
            format!("`publish: {target}` is inside the cache"),
            format!(
                "{HELP}: `cache/` belongs to the engine, and `gc` removes what it does not know"
            ),
        ));
    }
    for file in files {
        if let Some(file_normal) = normal_relative(file)
            && nested(&normal, &file_normal)
        {
            return Err(PathProblem::new(
                format!("`publish: {target}` overlaps `{file}`, which a stage reads"),
                format!("{HELP}: a copy there would change the input it was made from"),
            ));
        }
    }
    // A link on the way (`reports -> /elsewhere`) must not lead out either.
    if let Some(real) = deepest_existing(&root.join(&normal))
        && let Ok(real_root) = root.canonicalize()
        && (!real.starts_with(&real_root) || real.starts_with(real_root.join("cache")))
    {
        return Err(PathProblem::new(
            format!(
                "`publish: {target}` leads to `{}` through a link, outside the project",
                real.display()
            ),
            format!("{HELP}, with no link leading out of it"),
        ));
    }
    Ok(normal)
}

/// Two stages may not publish to the same folder, or one inside the other: the latest copy of
/// one would replace the other's.
pub fn check_publish_apart(first: (&str, &str), second: (&str, &str)) -> Result<(), PathProblem> {
    if nested(first.1, second.1) {
        return Err(PathProblem::new(
            format!(
                "stages `{}` and `{}` both publish to `{}`",
                first.0,
                second.0,
                if first.1.len() <= second.1.len() {
                    first.1
                } else {
                    second.1
                }
            ),
            "give each stage a folder of its own, e.g. `publish: reports/<stage>`",
        ));
    }
    Ok(())
}

/// The resolved path (links followed) of the deepest ancestor of `path` that exists, with the
/// part that does not exist yet appended.
fn deepest_existing(path: &Path) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        if let Ok(real) = current.canonicalize() {
            return Some(missing.iter().rev().fold(real, |acc, part| acc.join(part)));
        }
        missing.push(current.file_name()?.to_os_string());
        current = current.parent()?.to_path_buf();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_targets_stay_inside_the_project_and_apart_from_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files = ["data/movies.csv", "data"];
        assert_eq!(
            check_publish_target(root, "reports", files).unwrap(),
            "reports"
        );
        assert_eq!(
            check_publish_target(root, "./out/reports/", files).unwrap(),
            "out/reports"
        );
        for (bad, says) in [
            ("../outside", "inside the project"),
            ("/tmp/x", "inside the project"),
            ("reports/../../y", "inside the project"),
            ("reports/../cache/v1/entries", "inside the project"),
            (".", "project folder itself"),
            ("cache/v1/entries", "inside the cache"),
            ("cache", "inside the cache"),
            ("data", "overlaps `data/movies.csv`"),
            ("data/posters", "overlaps `data`"),
        ] {
            let err = check_publish_target(root, bad, files).unwrap_err();
            assert!(err.message.contains(says), "{bad}: {err:?}");
        }
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linked")).unwrap();
        let err = check_publish_target(root, "linked/reports", files).unwrap_err();
        assert!(err.message.contains("through a link"), "{err:?}");
    }

    #[test]
    fn two_stages_cannot_share_a_publish_folder() {
        assert!(check_publish_apart(("a", "reports"), ("b", "reports/b")).is_err());
        assert!(check_publish_apart(("a", "reports/a"), ("b", "reports/b")).is_ok());
        assert!(check_publish_apart(("a", "reports"), ("b", "reportsb")).is_ok());
    }

    #[test]
    fn workspace_files_are_regular_files_or_directories_as_their_role_asks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("movies.csv"), "x").unwrap();
        std::fs::create_dir(dir.path().join("posters")).unwrap();
        assert!(check_workspace_file(dir.path(), "root", "posters", true).is_ok());
        assert!(check_workspace_file(dir.path(), "csv", "movies.csv", false).is_ok());
        // The project itself (and so its cache) is never an input.
        let err = check_workspace_file(dir.path(), "root", ".", true).unwrap_err();
        assert!(err.message.contains("holds the project itself"), "{err:?}");
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        for (path, wants_directory, says) in [
            (
                "/dev/zero",
                false,
                "`/dev/zero` is a character device, but `r` takes a regular file",
            ),
            (
                "pipe",
                false,
                "`pipe` is a FIFO (named pipe), but `r` takes a regular file",
            ),
            ("sock", false, "`sock` is a socket"),
            (
                ".",
                false,
                "`.` is a directory, but `r` takes a regular file",
            ),
            (
                "movies.csv",
                true,
                "`movies.csv` is a regular file, but `r` takes a directory",
            ),
            ("missing", false, "does not exist"),
        ] {
            let err = check_workspace_file(dir.path(), "r", path, wants_directory).unwrap_err();
            assert!(err.message.contains(says), "{path}: {err:?}");
        }
        drop(socket);
    }
}
