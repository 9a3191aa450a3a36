//! Owns the run record: one JSON line per `pipeline run` in `cache/v1/runs.jsonl`, shown by `pipeline log`
//! and used by `pipeline gc --keep N`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cluster::Dispatched;
use crate::fsio::{Area, FsError};

/// One `pipeline run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id, `YYYYMMDD-HHMMSS` (UTC) of its start, with `-N` when one second held two runs;
    /// published copies of its outputs live in folders of that name. Empty in older records.
    #[serde(default)]
    pub id: String,
    /// The `-S STAGE.PARAM=VALUE` overrides it ran with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// Unix time the run started.
    pub started_unix: u64,
    /// How long it took.
    pub seconds: f64,
    /// Stages named on the command line (empty: all).
    pub targets: Vec<String>,
    /// How it ended.
    pub outcome: RunOutcomeKind,
    /// What happened to each selected stage, in the order they were handled.
    pub stages: Vec<StageRecord>,
}

/// How a run ended (`"ok"` or `"failed"` in the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcomeKind {
    /// Every selected stage is up to date.
    Ok,
    /// A stage failed.
    Failed,
}

impl std::fmt::Display for RunOutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        })
    }
}

/// What happened to one stage in a run (`"ran"`, `"fresh"`, `"failed"`, `"skipped"`,
/// `"pulled"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It ran.
    Ran,
    /// Its cached output was current.
    Fresh,
    /// It ran and failed.
    Failed,
    /// It did not run because an input failed.
    Skipped,
    /// Its entry was taken from the shared cache instead of running it.
    Pulled,
}

impl Action {
    /// The word the record and `pipeline log` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ran => "ran",
            Self::Fresh => "fresh",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Pulled => "pulled",
        }
    }

    /// Whether the stage's output is known after it: it ran or was fresh.
    pub fn made_output(self) -> bool {
        matches!(self, Self::Ran | Self::Fresh | Self::Pulled)
    }
}

/// What happened to one stage in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub name: String,
    /// What happened to it.
    pub action: Action,
    /// Why it ran (or the failure, or why it was skipped).
    pub reason: String,
    /// The stage key, when known.
    pub key: Option<String>,
    /// Seconds after the run started that this stage started.
    pub started: f64,
    /// Seconds it took.
    pub seconds: f64,
    /// Its cluster job, when it had one (`executor: slurm`, `k8s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Dispatched>,
}

/// Appends one record as one line (a single `write` on an append-mode file).
pub fn append_run(path: &Path, run: &RunRecord) -> Result<(), FsError> {
    let mut line = serde_json::to_vec(run).expect("a run record serialises");
    line.push(b'\n');
    let mut file = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Area::Cache.err())?;
    file.write_all(&line).map_err(Area::Cache.err())
}

/// The id of the newest readable record, reading only the file's tail: every `pipeline run`
/// asks, and the whole history can be long.
pub fn last_run_id(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<RunRecord>(line).ok())
        .map(|run| run.id)
}

/// Every readable record, oldest first (a torn last line from a crash is skipped).
pub fn read_runs(path: &Path) -> Vec<RunRecord> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The id of a run started at `unix`: its UTC time, `20261122-024630`, made unique against the
/// last recorded run's id (runs hold the project lock, so they never start together).
pub fn run_id(unix: u64, last: Option<&str>) -> String {
    let stem = utc(unix).strftime("%Y%m%d-%H%M%S").to_string();
    match last {
        Some(last) if last == stem || last.starts_with(&format!("{stem}-")) => {
            let n = last
                .strip_prefix(&format!("{stem}-"))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(1);
            format!("{stem}-{}", n + 1)
        }
        _ => stem,
    }
}

/// Which of `ids` (oldest first) `wanted` names: an id, a unique prefix of one, `latest` or
/// `previous`. `Ok(None)` when none does; an error when a prefix is ambiguous.
pub fn find_run(ids: &[&str], wanted: &str) -> Result<Option<usize>, String> {
    match wanted {
        "latest" => return Ok(ids.len().checked_sub(1)),
        "previous" => return Ok(ids.len().checked_sub(2)),
        _ => {}
    }
    // `20261201-170022` is also a prefix of `20261201-170022-2`: an exact id wins.
    if let Some(exact) = ids.iter().position(|id| *id == wanted) {
        return Ok(Some(exact));
    }
    let matching: Vec<usize> = (0..ids.len())
        .filter(|&i| ids[i].starts_with(wanted))
        .collect();
    match matching.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(format!(
            "`{wanted}` matches {} runs ({}); give more of the id",
            many.len(),
            many.iter().map(|&i| ids[i]).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `2026-11-22 02:46:30 UTC` for a Unix time.
pub fn format_utc(unix: u64) -> String {
    utc(unix).strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A Unix time as a UTC instant (clamped to jiff's range, years -9999 to 9999).
fn utc(unix: u64) -> jiff::Timestamp {
    let seconds = i64::try_from(unix).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(seconds.min(jiff::Timestamp::MAX.as_second()))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_times_made_unique_within_a_second() {
        assert_eq!(run_id(1_795_315_590, None), "20261122-024630");
        assert_eq!(
            run_id(1_795_315_590, Some("20261122-024629")),
            "20261122-024630"
        );
        assert_eq!(
            run_id(1_795_315_590, Some("20261122-024630")),
            "20261122-024630-2"
        );
        assert_eq!(
            run_id(1_795_315_590, Some("20261122-024630-2")),
            "20261122-024630-3"
        );
    }

    #[test]
    fn runs_are_found_by_id_prefix_latest_and_previous() {
        let ids = ["20261201-170022", "20261201-170022-2", "20261201-180000"];
        assert_eq!(
            find_run(&ids, "20261201-170022"),
            Ok(Some(0)),
            "exact beats prefix"
        );
        assert_eq!(find_run(&ids, "20261201-18"), Ok(Some(2)));
        assert_eq!(find_run(&ids, "latest"), Ok(Some(2)));
        assert_eq!(find_run(&ids, "previous"), Ok(Some(1)));
        assert_eq!(find_run(&ids, "2025"), Ok(None));
        assert!(
            find_run(&ids, "20261201-17")
                .unwrap_err()
                .contains("matches 2 runs")
        );
        assert_eq!(find_run(&[], "latest"), Ok(None));
        assert_eq!(find_run(&["a"], "previous"), Ok(None));
    }

    #[test]
    fn formats_unix_times_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_315_590), "2026-11-22 02:46:30 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        // Past jiff's range (year 9999): clamped, never a panic.
        assert!(
            format_utc(u64::MAX).starts_with("9999-12-"),
            "{}",
            format_utc(u64::MAX)
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let run = RunRecord {
            id: "19700101-000001".into(),
            overrides: vec![],
            started_unix: 1,
            seconds: 0.5,
            targets: vec![],
            outcome: RunOutcomeKind::Ok,
            stages: vec![],
        };
        append_run(&path, &run).unwrap();
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "{\"started_unix\": 2, \"sec",
        )
        .unwrap();
        assert_eq!(read_runs(&path).len(), 1);
        assert_eq!(
            last_run_id(&path).as_deref(),
            Some("19700101-000001"),
            "the torn line is passed over"
        );
    }
}
