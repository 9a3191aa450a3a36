//! The serde mirror of `pipeline.yaml`, and finding the line of a key path in its text.
//!
//! Parsing is phase one of two: this module only checks the *shape* of the file. Whether kinds
//! exist, inputs resolve and params type-check is [`super::plan`]'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Stage name -> stage.
    pub stages: BTreeMap<String, StageSpec>,
    /// Settings of the cache.
    #[serde(default)]
    pub cache: Option<CacheSpec>,
    /// Where stages run: here (the default), or on a cluster.
    #[serde(default)]
    pub executor: Option<ExecutorSpec>,
}

/// Where a stage's work runs (`executor:` at the top, or on a stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// In this process.
    #[default]
    Local,
    /// As Slurm jobs (`sbatch`): per-item stages as job arrays.
    Slurm,
    /// As Kubernetes Jobs: per-item stages as Indexed Jobs.
    K8s,
}

impl ExecutorKind {
    /// The word `pipeline.yaml` and `--executor` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Slurm => "slurm",
            Self::K8s => "k8s",
        }
    }
}

/// `executor:` at the top of the pipeline file: the cluster that per-item stages fan out to, and
/// that stages with `resources:` are submitted to. Nothing here enters a cache key: where work
/// runs never changes what it makes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    /// `local`, `slurm` or `k8s`.
    #[serde(default)]
    pub kind: ExecutorKind,
    /// How many tasks a per-item stage's items are split over (default 4).
    #[serde(default)]
    pub shards: Option<u32>,
    /// How many times a failed task is resubmitted alone (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Kubernetes: the container image that holds `pipeline` (default `pipeline:latest`).
    #[serde(default)]
    pub image: Option<String>,
    /// Kubernetes: the namespace of the Jobs.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes: a PersistentVolumeClaim holding the project, mounted as the working directory.
    #[serde(default)]
    pub project_claim: Option<String>,
    /// Kubernetes: a Secret whose keys become the tasks' environment (the shared cache's
    /// credentials, `PIPELINE_REMOTE`).
    #[serde(default)]
    pub env_secret: Option<String>,
}

/// `resources:` of a stage: what each of its jobs or tasks asks the cluster for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores per task (`--cpus-per-task`; a Kubernetes CPU request).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory per task, as Slurm writes it (`4G`, `500M`).
    #[serde(default)]
    pub mem: Option<String>,
    /// GPUs per task (`--gres=gpu:N`; `nvidia.com/gpu`).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Time limit per task, as Slurm writes it (`1:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    /// Slurm partition (a GPU partition for `train`).
    #[serde(default)]
    pub partition: Option<String>,
}

/// `cache:` in the pipeline file. Credentials never go here: they come from the environment or
/// an AWS profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// The shared cache, e.g. `s3://team-bucket/pipeline-cache`.
    #[serde(default)]
    pub remote: Option<String>,
}

/// One entry under `stages:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Which stage kind runs (`ingest`, `resize`, ...).
    pub kind: String,
    /// Role -> name of the upstream stage whose output fills it.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Role -> workspace path (relative to the pipeline file) whose contents the stage reads.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Kind-specific params; validated by the kind.
    #[serde(default)]
    pub params: serde_yaml_ng::Value,
    /// A directory (relative to the pipeline file) that receives a copy of the output.
    #[serde(default)]
    pub publish: Option<String>,
    /// Where this stage runs, whatever the top-level `executor:` says (`local` keeps it here).
    #[serde(default)]
    pub executor: Option<ExecutorKind>,
    /// What its cluster jobs ask for; a stage with `resources:` is submitted as a job.
    #[serde(default)]
    pub resources: Option<Resources>,
}

/// The parsed file, its text (for line lookups) and the stage names in file order.
#[derive(Debug)]
pub struct SpecFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The parsed spec.
    pub spec: PipelineSpec,
    /// Stage names in the order they appear in the file.
    pub order: Vec<String>,
    /// The `-S` overrides applied on top of the file, as given.
    pub overrides: Vec<Override>,
}

/// One `-S STAGE.PARAM=VALUE`: a param set for one run as if the file said so, never written.
#[derive(Debug, Clone)]
pub struct Override {
    /// As given on the command line.
    pub text: String,
    /// The stage it sets a param of.
    pub stage: String,
    /// The key path below the stage's `params` (`early_stopping.patience` is two keys).
    pub keys: Vec<String>,
    /// The value, read as YAML reads it in the file: `0.01` a number, `pad` a string.
    pub value: serde_yaml_ng::Value,
}

impl Override {
    /// Parses `stage.param[.sub...]=value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((path, raw)) = text.split_once('=') else {
            return Err(format!(
                "`-S {text}` has no `=`: write `-S STAGE.PARAM=VALUE`, e.g. `-S train.learning_rate=0.01`"
            ));
        };
        let mut parts = path.trim().split('.').map(str::trim);
        let stage = parts.next().unwrap_or_default().to_string();
        let keys: Vec<String> = parts.map(str::to_string).collect();
        if stage.is_empty() || keys.is_empty() || keys.iter().any(String::is_empty) {
            return Err(format!(
                "`-S {text}` names no param: write `-S STAGE.PARAM=VALUE`, e.g. `-S resize.width=64`"
            ));
        }
        if raw.trim().is_empty() {
            return Err(format!(
                "`-S {text}` gives no value: write `{path}=VALUE` (`{path}=null` for none)"
            ));
        }
        let value =
            serde_yaml_ng::from_str(raw).map_err(|err| match too_large(&err.to_string()) {
                Some(number) => format!("`-S {text}`: {number}"),
                None => format!("`-S {text}`: the value is not YAML: {err}"),
            })?;
        Ok(Self {
            text: text.to_string(),
            stage,
            keys,
            value,
        })
    }

    /// The dotted key in the pipeline file (`stages.train.params.learning_rate`).
    pub fn key(&self) -> String {
        format!("stages.{}.params.{}", self.stage, self.keys.join("."))
    }
}

/// serde_yaml_ng reads a whole number past 64 bits as a `u128` no value type takes, and says so
/// in its own terms (`invalid type: integer `1...` as u128, expected any YAML value`): say it in
/// the user's.
fn too_large(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: integer `")?;
    let (number, tail) = rest.split_once('`')?;
    (tail.starts_with(" as u128") || tail.starts_with(" as i128")).then(|| {
        format!(
            "the number {number} is out of range: no param takes a whole number past 64 bits \
             (each param's range is in its stage's README)"
        )
    })
}

/// A problem in the pipeline file, located by line and key path.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}{}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key_suffix(key, help))]
pub struct SpecError {
    /// The pipeline file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `stages.resize.params.width`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

fn key_suffix(key: &str, help: &Option<String>) -> String {
    let mut out = String::new();
    if !key.is_empty() {
        out.push_str(&format!("\n  at key `{key}`"));
    }
    if let Some(help) = help {
        out.push_str(&format!("\n  help: {help}"));
    }
    out
}

impl SpecFile {
    /// Reads and parses the pipeline file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        // A pipeline file is text a person writes: 16 MiB is far past any real one.
        let text = crate::fsio::read_regular(path, 16 << 20).map_err(|err| SpecError {
            path: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read pipeline file: {err}"),
            help: Some("run from the project directory or pass `--file PATH`".into()),
        })?;
        Self::parse(path, text)
    }

    /// Parses pipeline text that was read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, SpecError> {
        if let Some(line) = too_deep(&text) {
            return Err(SpecError {
                path: path.to_path_buf(),
                line: Some(line),
                key: String::new(),
                message: format!("`[` and `{{` nest more than {MAX_FLOW_DEPTH} deep here"),
                help: Some("a pipeline file needs a few levels: close the brackets".into()),
            });
        }
        if let Some(duplicate) = duplicate_key(&text) {
            let what = match duplicate.key.strip_prefix("stages.") {
                Some(stage) if !stage.contains('.') => format!("stage `{stage}` is declared twice"),
                _ => format!("key `{}` appears twice", duplicate.key),
            };
            return Err(SpecError {
                path: path.to_path_buf(),
                line: Some(duplicate.second),
                key: duplicate.key,
                message: format!("{what}: lines {} and {}", duplicate.first, duplicate.second),
                help: Some(
                    "YAML would keep only the last one silently: rename one or merge them".into(),
                ),
            });
        }
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        let spec: PipelineSpec = match serde_path_to_error::deserialize(deserializer) {
            Ok(spec) => spec,
            Err(err) => {
                let key = err.path().to_string();
                let inner = err.into_inner();
                let line = inner
                    .location()
                    .map(|loc| loc.line())
                    .or_else(|| line_of(&text, &key));
                // serde_yaml_ng appends "at line X column Y"; the line is shown up front instead.
                let mut message = inner.to_string();
                if let Some(at) = message.find(" at line ") {
                    message.truncate(at);
                }
                if let Some(number) = too_large(&message) {
                    message = number;
                }
                let message = clipped(&message);
                // serde names the fields that were expected; a stage's are said in full.
                let in_stage = key.starts_with("stages.") && key.matches('.').count() <= 1;
                let help = (message.contains("unknown field") && in_stage).then(|| {
                    "a stage takes `kind`, `inputs`, `files`, `params`, `publish`, `executor` and `resources`".into()
                });
                return Err(SpecError {
                    path: path.to_path_buf(),
                    line,
                    key: if key == "." { String::new() } else { key },
                    message,
                    help,
                });
            }
        };
        let order = stage_order(&text, &spec);
        Ok(Self {
            path: path.to_path_buf(),
            text,
            spec,
            order,
            overrides: Vec::new(),
        })
    }

    /// Applies `-S` overrides to the parsed params, in order (a later one wins). The plan then
    /// types and validates them exactly as it does the file's own params.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), SpecError> {
        for text in overrides {
            let parsed = Override::parse(text).map_err(|message| SpecError {
                path: self.path.clone(),
                line: None,
                key: String::new(),
                message,
                help: None,
            })?;
            let Some(stage) = self.spec.stages.get_mut(&parsed.stage) else {
                let known = self.order.join(", ");
                return Err(SpecError {
                    path: self.path.clone(),
                    line: None,
                    key: String::new(),
                    message: format!(
                        "`-S {text}` names stage `{}`, which the file does not have",
                        parsed.stage
                    ),
                    help: Some(format!("stages: {known}")),
                });
            };
            let mut at = &mut stage.params;
            for (depth, key) in parsed.keys.iter().enumerate() {
                if at.is_null() {
                    *at = serde_yaml_ng::Value::Mapping(Default::default());
                }
                let serde_yaml_ng::Value::Mapping(map) = at else {
                    let parent = parsed.keys[..depth].join(".");
                    return Err(SpecError {
                        path: self.path.clone(),
                        line: line_of(
                            &self.text,
                            &format!("stages.{}.params.{parent}", parsed.stage),
                        ),
                        key: format!("stages.{}.params.{parent}", parsed.stage),
                        message: format!(
                            "`-S {text}` sets a key inside `{parent}`, which is not a map"
                        ),
                        help: Some(format!(
                            "set `{}.{parent}` as a whole instead",
                            parsed.stage
                        )),
                    });
                };
                let key = serde_yaml_ng::Value::String(key.clone());
                if depth + 1 == parsed.keys.len() {
                    map.insert(key, parsed.value.clone());
                    break;
                }
                at = map.entry(key).or_insert(serde_yaml_ng::Value::Null);
            }
            self.overrides.push(parsed);
        }
        Ok(())
    }

    /// Builds an error about `key`, looking up its line.
    pub fn error(&self, key: &str, message: impl Into<String>, help: Option<String>) -> SpecError {
        // A key an override set is not on the line the file shows: name the override instead.
        let overriding: Vec<&str> = self
            .overrides
            .iter()
            .filter(|o| {
                let set = o.key();
                set.starts_with(key) || key.starts_with(&set)
            })
            .map(|o| o.text.as_str())
            .collect();
        let help = if overriding.is_empty() {
            help
        } else {
            let set = format!(
                "set on the command line by {}",
                overriding
                    .iter()
                    .map(|o| format!("`-S {o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Some(match help {
                Some(help) => format!("{help}; {set}"),
                None => set,
            })
        };
        SpecError {
            path: self.path.clone(),
            line: line_of(&self.text, key),
            key: key.to_string(),
            message: message.into(),
            help,
        }
    }
}

/// Stage names in file order (the typed spec is a `BTreeMap`, which sorts them).
fn stage_order(text: &str, spec: &PipelineSpec) -> Vec<String> {
    let mut named: Vec<(usize, &String)> = spec
        .stages
        .keys()
        .map(|name| {
            let line = line_of(text, &format!("stages.{name}")).unwrap_or(usize::MAX);
            (line, name)
        })
        .collect();
    named.sort();
    named.into_iter().map(|(_, name)| name.clone()).collect()
}

/// A key given twice in one map, with both lines.
#[derive(Debug, PartialEq, Eq)]
struct DuplicateKey {
    key: String,
    first: usize,
    second: usize,
}

/// A message of at most 300 characters: serde quotes the value it refused, and a value can be
/// a whole file.
fn clipped(message: &str) -> String {
    const HEAD: usize = 200;
    const TAIL: usize = 80;
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= HEAD + TAIL + 20 {
        return message.to_string();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!(
        "{head} [... {} characters ...] {tail}",
        chars.len() - HEAD - TAIL
    )
}

/// A line without its comment: from the first ` #` that is outside quotes (`"fy #1":` is a
/// key with a `#` in it, not a comment).
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous == ' ' || previous == '\t' => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Flow collections (`[`, `{`) nested deeper than a pipeline file has any use for: the YAML
/// parser takes minutes to refuse 200,000 of them, so they are counted before it sees the text.
const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line where flow collections first nest past [`MAX_FLOW_DEPTH`], if they do.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, raw) in text.lines().enumerate() {
        let mut quote = None;
        for c in without_comment(raw).chars() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(index + 1);
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// The first key given twice in one block-style map (two `resize:` blocks, two `width:` lines),
/// which serde would resolve silently by keeping the last. List items open a scope of their own,
/// and the lines of a block scalar (`|`, `>`) are text, not keys.
fn duplicate_key(text: &str) -> Option<DuplicateKey> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut scalar_above: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let content = without_comment(raw);
        let mut trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = content.len() - trimmed.len();
        if let Some(scalar) = scalar_above {
            if indent > scalar {
                continue;
            }
            scalar_above = None;
        }
        if trimmed == "-" || trimmed.starts_with("- ") {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, format!("-{line_no}")));
            let rest = trimmed[1..].trim_start();
            indent += trimmed.len() - rest.len();
            trimmed = rest;
        }
        let Some(colon) = trimmed
            .find(": ")
            .or_else(|| trimmed.strip_suffix(':').map(str::len))
        else {
            continue;
        };
        if trimmed.starts_with(['{', '[', '"', '\'']) && !trimmed[..colon].ends_with(['"', '\'']) {
            continue;
        }
        let name = trimmed[..colon]
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, name.to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, n)| n.as_str()).collect();
        let key = path.join(".");
        if let Some(first) = seen.insert(key.clone(), line_no) {
            return Some(DuplicateKey {
                key: path
                    .iter()
                    .filter(|p| !p.starts_with('-'))
                    .copied()
                    .collect::<Vec<_>>()
                    .join("."),
                first,
                second: line_no,
            });
        }
        let value = trimmed[colon + 1..].trim();
        if value.starts_with('|') || value.starts_with('>') {
            scalar_above = Some(indent);
        }
    }
    None
}

/// Finds the 1-based line of a dotted key path in block-style YAML, e.g. `stages.resize.params.width`.
///
/// Falls back to the deepest ancestor found, and understands `key: {a: 1}` flow maps on one line.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let wanted: Vec<&str> = key.split('.').filter(|k| !k.is_empty()).collect();
    if wanted.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (depth matched, line)
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let content = without_comment(raw);
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("- ") {
            continue;
        }
        let indent = content.len() - trimmed.len();
        let Some(colon) = trimmed.find(':') else {
            continue;
        };
        let name = trimmed[..colon]
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, name.to_string()));
        let depth = stack
            .iter()
            .zip(&wanted)
            .take_while(|((_, have), want)| have == *want)
            .count();
        if depth == stack.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, line_no));
            if depth == wanted.len() {
                return Some(line_no);
            }
            // `parent: {child: value}` on one line.
            let rest = &trimmed[colon + 1..];
            if depth + 1 == wanted.len() && rest.contains(&format!("{}:", wanted[depth])) {
                return Some(line_no);
            }
        }
    }
    best.map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
stages:
  ingest:
    kind: ingest
    files: {csv: data/movies.csv}
  resize:
    kind: resize
    params:
      width: 64   # pixels
      height: 64
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(TEXT, "stages.resize.params.height"), Some(10));
        assert_eq!(line_of(TEXT, "stages.resize.params.width"), Some(9));
        assert_eq!(line_of(TEXT, "stages.ingest.kind"), Some(4));
    }

    #[test]
    fn finds_keys_inside_flow_maps() {
        assert_eq!(line_of(TEXT, "stages.ingest.files.csv"), Some(5));
    }

    #[test]
    fn falls_back_to_the_deepest_ancestor() {
        assert_eq!(line_of(TEXT, "stages.resize.params.depth"), Some(8));
    }

    #[test]
    fn yaml_syntax_error_names_the_line() {
        let err = SpecFile::parse(Path::new("p.yaml"), "stages:\n  a:\n    kind: [x\n".into())
            .unwrap_err();
        assert!(err.line.is_some(), "{err}");
        assert!(err.to_string().starts_with("p.yaml:"), "{err}");
    }

    #[test]
    fn unknown_field_names_key_and_line() {
        let text = "stages:\n  a:\n    kind: ingest\n    parms: {}\n";
        let err = SpecFile::parse(Path::new("p.yaml"), text.into()).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("parms"), "{err}");
    }

    #[test]
    fn overrides_set_typed_params_nested_keys_and_name_themselves_in_errors() {
        let mut file = SpecFile::parse(Path::new("p.yaml"), TEXT.into()).unwrap();
        file.apply_overrides(&[
            "resize.width=96".into(),
            "resize.mode=pad".into(),
            "ingest.early_stopping.patience=3".into(),
        ])
        .unwrap();
        let params = &file.spec.stages["resize"].params;
        assert_eq!(params["width"], serde_yaml_ng::Value::from(96));
        assert_eq!(params["height"], serde_yaml_ng::Value::from(64));
        assert_eq!(params["mode"], serde_yaml_ng::Value::from("pad"));
        assert_eq!(
            file.spec.stages["ingest"].params["early_stopping"]["patience"],
            serde_yaml_ng::Value::from(3)
        );
        let err = file.error("stages.resize.params.width", "bad", None);
        assert!(err.to_string().contains("`-S resize.width=96`"), "{err}");
        let untouched = file.error("stages.resize.params.height", "bad", None);
        assert!(!untouched.to_string().contains("-S"), "{untouched}");

        for (bad, says) in [
            ("resize.width", "no `=`"),
            ("resize=3", "names no param"),
            ("resize.width=", "gives no value"),
            ("rezise.width=3", "stage `rezise`"),
            ("resize.width.px=3", "not a map"),
            ("resize.width=18446744073709551616", "out of range"),
        ] {
            let mut file = SpecFile::parse(Path::new("p.yaml"), TEXT.into()).unwrap();
            let err = file.apply_overrides(&[bad.into()]).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_key_given_twice_is_an_error_with_both_lines() {
        let twice = format!("{TEXT}  resize:\n    kind: resize\n");
        let err = SpecFile::parse(Path::new("p.yaml"), twice).unwrap_err();
        assert_eq!(err.line, Some(11), "{err}");
        assert!(
            err.to_string()
                .contains("stage `resize` is declared twice: lines 6 and 11"),
            "{err}"
        );
        let width = TEXT.replace("      height: 64", "      width: 96");
        let err = SpecFile::parse(Path::new("p.yaml"), width).unwrap_err();
        assert!(
            err.to_string()
                .contains("key `stages.resize.params.width` appears twice: lines 9 and 10"),
            "{err}"
        );
        // List items are scopes of their own; block scalars are text.
        let fine = "stages:\n  a:\n    kind: x\n    params:\n      layers:\n        - size: 3\n          act: relu\n        - size: 4\n          act: tanh\n      note: |\n        a: 1\n        a: 2\n";
        assert_eq!(duplicate_key(fine), None);
    }

    #[test]
    fn stages_keep_file_order() {
        let file = SpecFile::parse(Path::new("p.yaml"), TEXT.into()).unwrap();
        assert_eq!(file.order, ["ingest", "resize"]);
    }
}
