//! File helpers every kind uses: each names the file in its error.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ResultExt, StageError};

/// What kind of file system object `meta` is, in words, when it is neither a regular file nor a
/// directory.
pub fn odd_file_type(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() || kind.is_dir() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path).map_err(|source| StageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The blake3 of a file's contents, as hex (what cache manifests record), naming the file in
/// the error.
pub fn file_digest(path: &Path) -> Result<String, StageError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(
            std::fs::File::open(path).map_err(|source| StageError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        )
        .map_err(|source| StageError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Writes a file, naming it in the error.
pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), StageError> {
    // Written beside and renamed over: a published file may be a hard link to the cache's
    // copy, and writing into it would change the cache (and a reader never sees half a file).
    let err = |source| StageError::Write {
        path: path.to_path_buf(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.writing"));
    std::fs::write(&staging, bytes).map_err(err)?;
    std::fs::rename(&staging, path).map_err(err)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StageError> {
    let text =
        serde_json::to_string_pretty(value).during(format!("serialising `{}`", path.display()))?;
    write_file(path, text + "\n")
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).during(format!("parsing `{}`", path.display()))
}

/// Creates a directory and its parents, naming it in the error.
pub fn create_dir(path: &Path) -> Result<(), StageError> {
    std::fs::create_dir_all(path).map_err(|source| StageError::Write {
        path: path.to_path_buf(),
        source,
    })
}
