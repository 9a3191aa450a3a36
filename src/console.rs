//! Draws engine events for a person: one line per stage on stdout (failures on stderr), progress
//! bars on a terminal only.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline_api::Progress;

use pipeline_engine::{Event, Reporter, describe, error_chain};

/// Prints a line on stdout. A closed pipe (`pipeline status | head -3`) is not an error worth a
/// panic: the line is dropped, as ripgrep and friends do.
pub fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Writes one line to stderr; a closed stderr is not an error worth a panic.
pub fn tell(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The command-line reporter.
pub struct Console {
    bars: MultiProgress,
    interactive: bool,
    verbose: bool,
}

impl Console {
    /// A reporter that draws bars only when stderr is a terminal.
    pub fn new(verbose: bool) -> Self {
        let interactive = std::io::stderr().is_terminal();
        let bars = MultiProgress::with_draw_target(if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Self {
            bars,
            interactive,
            verbose,
        }
    }

    fn line(&self, text: &str) {
        if self.interactive {
            let _ = self.bars.println(text);
        } else {
            say(text);
        }
    }

    /// A line about something that went wrong: always on stderr (above the bars on a terminal), so
    /// that `pipeline run > log` or a harness that discards stdout still shows why a stage failed.
    fn error_line(&self, text: &str) {
        if self.interactive {
            let _ = self.bars.println(text);
        } else {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

impl Reporter for Console {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::WaitingForLock { lock } => self.line(&format!(
                "Waiting for another `pipeline run` on this project to finish (lock `{}`)...",
                lock.display()
            )),
            Event::Fresh {
                stage,
                note: Some(note),
                ..
            } => self.line(&format!("Fresh {stage} ({note})")),
            Event::Fresh { stage, .. } => self.line(&format!("Fresh {stage}")),
            Event::WouldRun { stage, reasons } => {
                self.line(&format!("Would run {stage} ({})", describe(reasons)));
            }
            Event::Started { stage, reasons } => {
                if reasons.is_empty() {
                    self.line(&format!("Running {stage}"));
                } else {
                    self.line(&format!("Running {stage} ({})", describe(reasons)));
                }
            }
            Event::Ran {
                stage,
                summary,
                span,
                ..
            } => {
                self.line(&format!("Finished {stage} in {:.1}s", span.seconds));
                for line in *summary {
                    self.line(&format!("  {line}"));
                }
            }
            Event::Failed { stage, error, .. } => {
                self.error_line(&format!("Failed {stage}: {}", error_chain(error)));
            }
            Event::Skipped { stage, reasons, .. } => {
                self.line(&format!("Skipped {stage} ({})", describe(reasons)));
            }
            Event::Pulled {
                stage,
                pulled,
                span,
                ..
            } => self.line(&format!(
                "Pulled {stage} from the shared cache: {} in {:.1}s",
                written(pulled.files, pulled.bytes),
                span.seconds
            )),
            Event::PulledEarlier { stage, pulled, .. } => self.line(&format!(
                "Pulled the newest shared {stage} entry to reuse what it holds: {}",
                written(pulled.files, pulled.bytes)
            )),
            Event::NotShared {
                stage,
                key: Some(_),
            } => {
                self.line(&format!("Not on the remote: {stage}"));
            }
            Event::NotShared { stage, key: None } => self.line(&format!(
                "Not on the remote: {stage} (an input it needs is not either)"
            )),
            Event::Pushed { stage, pushed } if pushed.already_there => {
                self.line(&format!("Pushed {stage}: the remote had it already"));
            }
            Event::Pushed { stage, pushed } => self.line(&format!(
                "Pushed {stage}: {} blobs, {}",
                pushed.blobs,
                megabytes(pushed.bytes)
            )),
            Event::Dispatched { stage, dispatched } => self.line(&format!(
                "Sent {stage} to {}: {} task(s) in {:.1}s (job {}){}",
                dispatched.executor,
                dispatched.tasks,
                dispatched.seconds,
                dispatched.jobs.join(", "),
                if dispatched.retried.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; task(s) {} failed once and were resubmitted alone",
                        dispatched
                            .retried
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )),
            Event::SharedTrouble {
                stage,
                during: "pull",
                message,
            } => self.error_line(&format!("Could not pull {stage}: {message}")),
            Event::SharedTrouble {
                stage,
                during,
                message,
            } => self.error_line(&format!("Could not {during} {stage}: {message}")),
            Event::Published {
                stage,
                dir,
                replaced: Some(was),
            } => {
                let was = if was.is_empty() {
                    String::new()
                } else {
                    format!(" (it was showing run {was})")
                };
                self.line(&format!(
                    "Published the cached {stage} output of the current params to `{}`{was}",
                    dir.display()
                ));
            }
            Event::Published { stage, dir, .. } => {
                if self.verbose {
                    self.line(&format!("Published {stage} to `{}`", dir.display()));
                }
            }
        }
    }

    fn progress(&self, stage: &str) -> Box<dyn Progress + '_> {
        let bar = if self.interactive {
            let bar = self.bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"),
            );
            bar.set_prefix(stage.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Box::new(StageBar {
            bar,
            stage: stage.to_string(),
            verbose: self.verbose && !self.interactive,
            detailed: self.verbose,
        })
    }
}

/// `3 files, 1.2 MB` (fetched `bytes`), or `no file to write` for none.
fn written(files: usize, bytes: u64) -> String {
    if files == 0 {
        "no file to write".into()
    } else {
        format!(
            "{}, {} fetched",
            count(files, "file", "files"),
            megabytes(bytes)
        )
    }
}

/// `1 entry`, `3 entries`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `12.3 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl pipeline_remote::Transfers for Console {
    fn bar(
        &self,
        task: &str,
        objects: u64,
        bytes: u64,
    ) -> Box<dyn pipeline_remote::TransferBar + '_> {
        let bar = if self.interactive {
            let bar = self.bars.add(ProgressBar::new(bytes));
            bar.set_style(
                ProgressStyle::with_template(
                    "  {prefix} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta}) {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(task.to_string());
            bar.set_message(format!("{objects} objects"));
            bar
        } else {
            ProgressBar::hidden()
        };
        if self.verbose && !self.interactive {
            say(&format!(
                "  {task}: {objects} objects, {}",
                megabytes(bytes)
            ));
        }
        Box::new(TransferLine { bar })
    }
}

/// One transfer's bar: bytes, rate and ETA.
struct TransferLine {
    bar: ProgressBar,
}

impl pipeline_remote::TransferBar for TransferLine {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl Drop for TransferLine {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Progress of one running stage.
struct StageBar {
    bar: ProgressBar,
    stage: String,
    /// `-v` without a terminal: progress as lines.
    verbose: bool,
    /// `-v` at all: detail lines are printed (above the bars on a terminal).
    detailed: bool,
}

impl Progress for StageBar {
    fn start(&self, task: &str, total: u64) {
        // `resize [...]`, not `resize resize [...]`: the task is named only when it is not the
        // stage's own name; the rate is a whole number per second.
        let template = if task == self.stage {
            "  {prefix} [{bar:30}] {pos}/{len} ({rate}, eta {eta}) {msg}"
        } else {
            "  {prefix} {msg} [{bar:30}] {pos}/{len} ({rate}, eta {eta})"
        };
        self.bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    },
                )
                .progress_chars("=> "),
        );
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(if task == self.stage {
            String::new()
        } else {
            task.to_string()
        });
        if self.verbose {
            say(&format!("  {}: {task} ({total})", self.stage));
        }
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }

    fn message(&self, message: &str) {
        self.bar.set_message(message.to_string());
        if self.verbose {
            say(&format!("  {}: {message}", self.stage));
        }
    }

    fn detail(&self, line: &str) {
        if self.detailed {
            self.note(line);
        } else {
            // Its head is the bar's status (`epoch 3/10: train loss 0.2310, ...`).
            self.bar.set_message(line.to_string());
        }
    }

    fn note(&self, line: &str) {
        let line = format!("  {}: {line}", self.stage);
        if self.bar.is_hidden() {
            say(&line);
        } else {
            self.bar.println(line);
        }
    }
}

impl Drop for StageBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
