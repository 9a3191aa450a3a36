//! Image batches streamed from the Parquet shards of one split. A background thread reads the
//! shards, shuffles, augments and packs normalised NCHW batches while the trainer computes, so
//! decoding overlaps the step. At most one shuffle window of posters (plus one shard being
//! read) and [`PREFETCH`] packed batches are in memory, whatever the size of the split.
//!
//! The shuffle is two-level, as in WebDataset: the shard order is shuffled, shards are read in
//! that order into a window of at least `window_rows` posters, and the window is shuffled. A
//! split smaller than the window is shuffled globally. Everything is drawn from the epoch's
//! generators, so an epoch's batches depend only on the seed and the epoch number.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use pipeline_api::StageError;
use stage_shards::{Shard, ShardMeta, read_shard};

use crate::augment::{Augment, Normalize, pack, pack_augmented};
use crate::noise::{Draws, Stream};

/// Packed batches waiting for the trainer.
pub const PREFETCH: usize = 3;

/// One split's image shards on disk.
#[derive(Debug, Clone)]
pub struct ImageSplit {
    /// The split's directory (`<split output>/train`).
    pub dir: PathBuf,
    /// Its `meta.json`.
    pub meta: ShardMeta,
}

impl ImageSplit {
    /// The split `name` of a `split` output; refuses an embedding split.
    pub fn open(split_output: &Path, name: &str) -> Result<Self, StageError> {
        let dir = split_output.join(name);
        if stage_shards::embedding::is_embedding_dir(&dir) {
            return Err(StageError::invalid(format!(
                "`{}` holds embeddings, not images: architectures that read images need a `split` output as `data`",
                dir.display()
            )));
        }
        let meta = ShardMeta::load(&dir)?;
        Ok(Self { dir, meta })
    }

    /// Posters in the split.
    pub fn rows(&self) -> usize {
        self.meta.rows()
    }

    /// Every label, row-major `[rows, genres]`, in shard order (the order of unshuffled batches).
    pub fn labels(&self) -> Result<Vec<u8>, StageError> {
        let mut labels = Vec::with_capacity(self.rows() * self.meta.genres.len());
        for path in self.meta.paths(&self.dir) {
            labels.extend(stage_shards::read_shard_labels(&path, self.meta.genres.len())?.labels);
        }
        Ok(labels)
    }
}

/// A batch ready for the network.
#[derive(Debug)]
pub struct Batch {
    /// Posters in it.
    pub rows: usize,
    /// Normalised input `[rows, 3, height, width]`.
    pub input: Vec<f32>,
    /// 0/1 targets `[rows, genres]`.
    pub labels: Vec<i64>,
}

/// How one pass over a split is drawn.
#[derive(Debug, Clone)]
pub struct Pass {
    /// Posters per batch (the last one may be short).
    pub batch_size: usize,
    /// Training: shuffle and augment from the generators of `(seed, epoch)`. `None` keeps shard
    /// order (validation).
    pub shuffle: Option<(u64, usize)>,
    /// Posters gathered before a window is shuffled.
    pub window_rows: usize,
    /// Applied to training passes only.
    pub augment: Augment,
    /// Pixel normalisation of the architecture.
    pub normalize: Normalize,
}

/// The batches of one pass, packed ahead on a background thread.
pub struct BatchStream {
    batches: Option<Receiver<Result<Batch, StageError>>>,
    worker: Option<JoinHandle<()>>,
}

impl BatchStream {
    /// Starts packing `pass` over `split`.
    pub fn start(split: &ImageSplit, pass: Pass) -> Self {
        let (send, batches) = sync_channel(PREFETCH);
        let split = split.clone();
        let worker = std::thread::Builder::new()
            .name("train-batches".into())
            .spawn(move || produce(&split, &pass, &send))
            .expect("spawn the batch thread");
        Self {
            batches: Some(batches),
            worker: Some(worker),
        }
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch, StageError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.batches.as_ref()?.recv().ok()
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, and it returns.
        self.batches.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The producer: reads, shuffles and packs until the pass ends or the receiver is gone.
fn produce(split: &ImageSplit, pass: &Pass, send: &SyncSender<Result<Batch, StageError>>) {
    let meta = &split.meta;
    let (pixels, genres) = (meta.pixels(), meta.genres.len());
    let mut order: Vec<usize> = (0..meta.shards.len()).collect();
    let (mut shuffle, mut augment) = match pass.shuffle {
        Some((seed, epoch)) => (
            Some(Draws::for_epoch(seed, Stream::Shuffle, epoch)),
            pass.augment
                .is_active()
                .then(|| Draws::for_epoch(seed, Stream::Augment, epoch)),
        ),
        None => (None, None),
    };
    if let Some(rng) = shuffle.as_mut() {
        rng.shuffle(&mut order);
    }
    let paths = meta.paths(&split.dir);
    let mut window = Shard::default();
    let mut pending = order.iter().peekable();
    loop {
        // Fill the window (unshuffled passes need no window: one shard at a time).
        let target = if shuffle.is_some() {
            pass.window_rows.max(pass.batch_size)
        } else {
            pass.batch_size
        };
        while window.len() < target {
            let Some(&shard) = pending.next() else { break };
            match read_shard(&paths[shard], pixels, genres) {
                // An empty window takes the shard as it is; otherwise its rows are appended.
                Ok(read) if window.is_empty() => window = read,
                Ok(read) => {
                    for i in 0..read.len() {
                        window.push_row(&read, i, pixels, genres);
                    }
                }
                Err(err) => {
                    let _ = send.send(Err(err));
                    return;
                }
            }
        }
        if window.is_empty() {
            return;
        }
        let last = pending.peek().is_none();
        let mut rows: Vec<usize> = (0..window.len()).collect();
        if let Some(rng) = shuffle.as_mut() {
            rng.shuffle(&mut rows);
        }
        // Full batches now; the remainder joins the next window unless this is the last.
        let full = if last {
            rows.len()
        } else {
            rows.len() / pass.batch_size * pass.batch_size
        };
        for chunk in rows[..full].chunks(pass.batch_size) {
            let batch = pack_batch(&window, chunk, meta, pass, augment.as_mut());
            if send.send(Ok(batch)).is_err() {
                return;
            }
        }
        let mut rest = Shard::default();
        for &r in &rows[full..] {
            rest.push_row(&window, r, pixels, genres);
        }
        window = rest;
        if last && window.is_empty() {
            return;
        }
    }
}

fn pack_batch(
    window: &Shard,
    rows: &[usize],
    meta: &ShardMeta,
    pass: &Pass,
    mut augment: Option<&mut Draws>,
) -> Batch {
    let (pixels, genres) = (meta.pixels(), meta.genres.len());
    let size = [meta.height, meta.width];
    let mut input = vec![0f32; rows.len() * pixels];
    let mut labels = Vec::with_capacity(rows.len() * genres);
    for (&r, out) in rows.iter().zip(input.chunks_exact_mut(pixels)) {
        let image = &window.images[r * pixels..(r + 1) * pixels];
        match augment.as_deref_mut() {
            Some(rng) => pack_augmented(image, size, &pass.augment, rng, pass.normalize, out),
            None => pack(image, pass.normalize, out),
        }
        labels.extend(
            window.labels[r * genres..(r + 1) * genres]
                .iter()
                .map(|&l| l as i64),
        );
    }
    Batch {
        rows: rows.len(),
        input,
        labels,
    }
}
