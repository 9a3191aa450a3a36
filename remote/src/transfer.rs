//! Owns moving blobs: uploads and downloads run `jobs` at a time, each checked against its
//! blake3 (a local file before it is sent, a remote blob as it arrives), with the bytes counted
//! on a bar. object_store retries each request with backoff.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::error::RemoteError;
use crate::progress::TransferBar;
use crate::record::blob_name;
use crate::remote::Remote;

/// A blob to send: its content hash and size, and the local file that holds it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// blake3, hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// The local file.
    pub file: PathBuf,
}

/// A blob to fetch into `dest`, with what refers to it (for messages).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// blake3, hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it goes (a new file; its directory exists).
    pub dest: PathBuf,
    /// What refers to it, e.g. "`posters/ab12` of entry 3f2a... (download)".
    pub what: String,
}

/// The largest record read (a download stage of 20,000 posters writes about 15 MB).
const RECORD_MAX: u64 = 1 << 30;

/// Files above this size go up in parts.
const MULTIPART_OVER: u64 = 64 << 20;

impl Remote {
    /// Sends `blobs` (each once), `jobs` at a time; returns bytes sent.
    pub(crate) fn upload(&self, blobs: Vec<Outgoing>) -> Result<u64, RemoteError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let bar = self.transfers.bar("push", blobs.len() as u64, total);
        let bar = bar.as_ref();
        self.runtime.block_on(async {
            let mut sent = futures::stream::iter(blobs)
                .map(|blob| async move {
                    let size = self.upload_one(&blob).await?;
                    bar.advance(size);
                    Ok::<u64, RemoteError>(size)
                })
                .buffer_unordered(self.jobs);
            let mut bytes = 0;
            while let Some(result) = sent.next().await {
                bytes += result?;
            }
            Ok(bytes)
        })
    }

    async fn upload_one(&self, blob: &Outgoing) -> Result<u64, RemoteError> {
        let content = std::fs::read(&blob.file).map_err(|e| RemoteError::Transfer {
            object: blob.file.display().to_string(),
            detail: e.to_string(),
        })?;
        if content.len() as u64 != blob.size
            || blake3::hash(&content).to_hex().as_str() != blob.hash
        {
            return Err(RemoteError::LocalCorrupt {
                path: blob.file.display().to_string(),
            });
        }
        let name = blob_name(&blob.hash);
        let path = self.location.path(&name);
        let store = &self.location.store;
        let failed = |e| RemoteError::from_store(self.url(), &name, e);
        if blob.size > MULTIPART_OVER {
            let upload = store.put_multipart(&path).await.map_err(failed)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
            writer.write(&content);
            writer.finish().await.map_err(failed)?;
        } else {
            // Content-addressed: whoever writes `cas/<hash>` writes the same bytes, so a plain
            // put is safe with any number of writers.
            store
                .put_opts(&path, PutPayload::from(content), PutOptions::default())
                .await
                .map_err(failed)?;
        }
        Ok(blob.size)
    }

    /// Creates the object `name` with `bytes` unless it exists: `Ok(false)` when another writer
    /// created it first.
    pub(crate) fn create(&self, name: &str, bytes: Vec<u8>) -> Result<bool, RemoteError> {
        let path = self.location.path(name);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.runtime.block_on(self.location.store.put_opts(
            &path,
            PutPayload::from(bytes),
            options,
        )) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(RemoteError::from_store(self.url(), name, e)),
        }
    }

    /// The object `name`, or `None` if there is none.
    pub(crate) fn get_small(&self, name: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = self.location.path(name);
        let result = self.runtime.block_on(async {
            let got = self.location.get(&path).await?;
            if got.meta.size > RECORD_MAX {
                return Ok(Err(got.meta.size));
            }
            got.bytes().await.map(Ok)
        });
        match result {
            Ok(Ok(bytes)) => Ok(Some(bytes.to_vec())),
            Ok(Err(size)) => Err(RemoteError::BadRecord {
                object: path.to_string(),
                detail: format!("{size} bytes, more than a record may be ({RECORD_MAX})"),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RemoteError::from_store(self.url(), name, e)),
        }
    }

    /// Sizes of the blobs among `hashes` that the remote has. Few are asked one by one; many,
    /// by listing `cas/` (a thousand names a request).
    pub(crate) fn blobs_present(
        &self,
        hashes: &[(&str, u64)],
    ) -> Result<std::collections::BTreeMap<String, u64>, RemoteError> {
        let store = &self.location.store;
        let mut present = std::collections::BTreeMap::new();
        if hashes.len() > 256 {
            let prefix = self.location.path(crate::record::CAS);
            let listed = self.runtime.block_on(async {
                let mut listing = store.list(Some(&prefix));
                let mut found = Vec::new();
                while let Some(meta) = listing.next().await {
                    let meta = meta?;
                    if let Some(name) = meta.location.filename() {
                        found.push((name.to_string(), meta.size));
                    }
                }
                Ok::<_, object_store::Error>(found)
            });
            let listed =
                listed.map_err(|e| RemoteError::from_store(self.url(), prefix.as_ref(), e))?;
            present.extend(listed);
            return Ok(present);
        }
        let found = self.runtime.block_on(async {
            let mut heads = futures::stream::iter(hashes.iter().map(|(hash, _)| async move {
                let name = blob_name(hash);
                match store.head(&self.location.path(&name)).await {
                    Ok(meta) => Ok(Some((hash.to_string(), meta.size))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(RemoteError::from_store(self.url(), &name, e)),
                }
            }))
            .buffer_unordered(self.jobs);
            let mut found = Vec::new();
            while let Some(result) = heads.next().await {
                found.extend(result?);
            }
            Ok::<_, RemoteError>(found)
        })?;
        present.extend(found);
        Ok(present)
    }

    /// Fetches `blobs`, `jobs` at a time, each verified before it is renamed into place;
    /// returns bytes fetched. The first blob that fails stops the rest.
    pub(crate) fn download(&self, task: &str, blobs: Vec<Incoming>) -> Result<u64, RemoteError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let bar = self.transfers.bar(task, blobs.len() as u64, total);
        let bar = bar.as_ref();
        self.runtime.block_on(async {
            let mut fetched = futures::stream::iter(blobs)
                .map(|blob| async move { self.download_one(&blob, bar).await })
                .buffer_unordered(self.jobs);
            let mut bytes = 0;
            while let Some(result) = fetched.next().await {
                bytes += result?;
            }
            Ok(bytes)
        })
    }

    async fn download_one(
        &self,
        blob: &Incoming,
        bar: &dyn TransferBar,
    ) -> Result<u64, RemoteError> {
        let name = blob_name(&blob.hash);
        let failed = |e| RemoteError::from_store(self.url(), &name, e);
        let local = |e: std::io::Error| RemoteError::Transfer {
            object: blob.dest.display().to_string(),
            detail: e.to_string(),
        };
        let got = self
            .location
            .get(&self.location.path(&name))
            .await
            .map_err(failed)?;
        let dir = blob.dest.parent().unwrap_or(Path::new("."));
        let mut file = pipeline_engine::fsio::temp_file_in(dir, ".tmp").map_err(local)?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            size += chunk.len() as u64;
            if size > blob.size {
                break; // longer than recorded: no need to read the rest
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(local)?;
            bar.advance(chunk.len() as u64);
        }
        if size != blob.size || hasher.finalize().to_hex().as_str() != blob.hash {
            return Err(RemoteError::Corrupt {
                object: self.location.path(&name).to_string(),
                what: blob.what.clone(),
            });
        }
        file.persist(&blob.dest).map_err(|e| local(e.error))?;
        Ok(size)
    }
}
