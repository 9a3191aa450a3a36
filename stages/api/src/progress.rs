//! How a stage reports progress: the binary draws it, the stage never does.

/// Progress of one stage. Implementations must be cheap to call from many threads.
pub trait Progress: Sync {
    /// Starts (or restarts) a bounded task of `total` units, e.g. `("decode", 1200)`.
    fn start(&self, task: &str, total: u64);
    /// Advances the current task.
    fn advance(&self, units: u64);
    /// A one-line status, e.g. `epoch 3/10 train loss 0.231`.
    fn message(&self, message: &str);
    /// A line worth keeping in the log (what is about to be trained, a resumed checkpoint): printed
    /// above the bar rather than replacing its status.
    fn note(&self, line: &str) {
        self.message(line);
    }
    /// A line for whoever asked for detail (`-v`; an epoch's losses): otherwise it only
    /// becomes the bar's status, so a default run prints one line per stage.
    fn detail(&self, line: &str) {
        self.message(line);
    }
}

/// Progress that goes nowhere (tests, non-interactive runs).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _task: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn message(&self, _message: &str) {}
}
