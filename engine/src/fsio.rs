//! Owns the engine's file-system primitives: the error that says which area a path belongs to,
//! durable and atomic writes, and listing a tree. A leaf: it imports no other engine module.
//!
//! Paths and operations come from `fs-err` (`failed to open file `x``); the [`Area`] says whose
//! file it is, so a missing workspace file does not read as a broken cache.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use fs_err as fs;

/// Whose file an I/O error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Something under `cache/`.
    Cache,
    /// A file or directory of the project the pipeline reads (`files:` in `pipeline.yaml`).
    Workspace,
    /// `pipeline.lock`.
    LockFile,
    /// A published copy (`publish:` in `pipeline.yaml`).
    Published,
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cache => "cache",
            Self::Workspace => "workspace file",
            Self::LockFile => "lock file",
            Self::Published => "published copy",
        })
    }
}

/// An I/O error of the engine: the area, then fs-err's operation and path, then the cause, all
/// in one message (fs-err keeps the cause as a source; it is folded in here so that every way of
/// printing the error shows it once).
#[derive(Debug)]
pub struct FsError {
    /// Whose file.
    pub area: Area,
    /// What failed, with the path (from fs-err).
    pub source: io::Error,
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.area, self.source)?;
        if let Some(cause) = std::error::Error::source(&self.source) {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FsError {}

impl Area {
    /// `map_err(Area::Cache.err())`: tags an fs-err error with its area.
    pub fn err(self) -> impl FnOnce(io::Error) -> FsError {
        move |source| FsError { area: self, source }
    }
}

impl FsError {
    /// For the few calls fs-err does not wrap (mmap, tempfile, file locks): the error of
    /// `action` on `path`, in fs-err's words.
    pub fn at(area: Area, action: &str, path: &Path, source: io::Error) -> Self {
        Self {
            area,
            source: io::Error::new(
                source.kind(),
                format!("failed to {action} `{}`: {source}", path.display()),
            ),
        }
    }
}

/// Reads a file a person named, as text, only when it is a regular file of at most `cap`
/// bytes: a FIFO would block the read forever and `/dev/zero` would grow it without end, so
/// both are refused by what they are before a byte is read.
pub fn read_regular(path: &Path, cap: u64) -> io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file",
                pipeline_api::odd_file_type(&meta).unwrap_or("a directory")
            ),
        ));
    }
    if meta.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, more than the {cap} this file may be",
                meta.len()
            ),
        ));
    }
    let mut text = String::new();
    // The cap holds even for a file that grows while it is read.
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it grew past the {cap} bytes this file may be"),
        ));
    }
    Ok(text)
}

/// Files from this size up are published as hard links to the cache's copy (a model of 20 MB per
/// run adds up); smaller ones are copied, and a link that cannot be made is a copy too.
pub const LINK_FROM_BYTES: u64 = 1 << 20;

/// Makes `to` (which must not exist) hold the bytes of `from`: a hard link when the file is
/// large, a copy otherwise. A linked file shares its bytes with the cache, so everything that
/// rewrites a published file replaces it (write beside, rename) instead of writing into it.
pub fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    let large = std::fs::metadata(from)?.len() >= LINK_FROM_BYTES;
    if large && std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map(drop)
}

/// Writes a file and flushes it to disk before returning.
pub fn write_synced(path: &Path, bytes: &[u8], area: Area) -> Result<(), FsError> {
    let mut file = fs::File::create(path).map_err(area.err())?;
    file.write_all(bytes).map_err(area.err())?;
    file.sync_all().map_err(area.err())
}

/// A temporary file in `dir` whose mode is what `File::create` would give (0666 less the
/// umask), not tempfile's 0600: it is renamed into place as a file people share, and a cache
/// or report only its owner can read surprises everyone else on the machine.
pub fn temp_file_in(dir: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes a file atomically: a flushed temporary sibling (tempfile), persisted over the target,
/// so a reader sees the old or the new content, never half of either.
pub fn write_atomic(path: &Path, bytes: &[u8], area: Area) -> Result<(), FsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = temp_file_in(dir, ".tmp-")
        .map_err(|e| FsError::at(area, "create a temporary file beside", path, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| FsError::at(area, "write", path, e))?;
    tmp.persist(path)
        .map_err(|e| FsError::at(area, "replace", path, e.error))?;
    Ok(())
}

/// All regular files below `dir`, sorted.
pub fn list_files(dir: &Path, area: Area) -> Result<Vec<PathBuf>, FsError> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(current) = todo.pop() {
        for entry in fs::read_dir(&current).map_err(area.err())? {
            let entry = entry.map_err(area.err())?;
            let kind = entry.file_type().map_err(area.err())?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `/`-separated path of `file` below `dir` (the form manifests and records use).
pub fn relative(file: &Path, dir: &Path) -> String {
    file.strip_prefix(dir)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Makes everything below `dir` durable before a manifest is written.
///
/// On Linux one `syncfs` flushes the whole file system the cache lives on: a single journal
/// commit instead of one per file (20,000 per-file `fsync`s of a download output took 1.1-1.4 s
/// here; `syncfs` with nothing else dirty takes milliseconds). Elsewhere, one `fsync` per file.
pub fn sync_tree(dir: &Path) -> Result<(), FsError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let handle = fs::File::open(dir).map_err(Area::Cache.err())?;
        // SAFETY: `syncfs` only reads the descriptor, which `handle` keeps open for the call.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
            return Ok(());
        }
        // Fall through to per-file syncs if the file system refuses.
    }
    for path in list_files(dir, Area::Cache)? {
        let file = fs::File::open(&path).map_err(Area::Cache.err())?;
        file.sync_all().map_err(Area::Cache.err())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_area_the_operation_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("data/movies.csv");
        let err = fs::metadata(&missing)
            .map_err(Area::Workspace.err())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("workspace file: "), "{text}");
        assert!(text.contains("data/movies.csv"), "{text}");
        assert!(text.contains("No such file"), "the cause is shown: {text}");
    }

    #[test]
    fn an_atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.lock");
        write_atomic(&path, b"one", Area::LockFile).unwrap();
        write_atomic(&path, b"two", Area::LockFile).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the target remains");
        let err = write_atomic(&dir.path().join("no/such/dir/x"), b"", Area::Cache).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/x"), "{err}");
    }
}
