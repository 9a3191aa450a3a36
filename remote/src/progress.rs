//! Owns how transfers are shown: a bar per push, pull or verify, over bytes (the command line
//! draws it with its rate and ETA).

/// Shows transfers to a person.
pub trait Transfers: Sync {
    /// A bar for `task` (`push`, `pull`, `verify`) over `bytes` in `objects` objects.
    fn bar(&self, task: &str, objects: u64, bytes: u64) -> Box<dyn TransferBar + '_>;
}

/// One transfer's bar; finished when dropped.
pub trait TransferBar: Sync + Send {
    /// `bytes` more went over.
    fn advance(&self, bytes: u64);
}

/// Transfers shown nowhere.
pub struct Quiet;

impl Transfers for Quiet {
    fn bar(&self, _task: &str, _objects: u64, _bytes: u64) -> Box<dyn TransferBar + '_> {
        Box::new(Quiet)
    }
}

impl TransferBar for Quiet {
    fn advance(&self, _bytes: u64) {}
}
