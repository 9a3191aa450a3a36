//! Owns what a stage name, and each value that reaches a batch script, a command line or a
//! manifest, may be. Stage names become folder names (`cache/`, job folders), Slurm job names and
//! Kubernetes object names; a `/`, a newline or `..` in one would write outside the project or
//! into a script, so each is held to a documented character set, with the file's line.

use crate::spec::{ExecutorSpec, Resources, SpecError, SpecFile};

/// The longest stage name.
pub const MAX_STAGE_NAME: usize = 64;

/// Why `name` cannot name a stage, if it cannot: 1 to 64 of ASCII letters, digits, `_` and `-`,
/// starting with a letter, a digit or `_`.
pub fn stage_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a stage name cannot be empty".into());
    }
    if name.len() > MAX_STAGE_NAME {
        return Some(format!(
            "a stage name has at most {MAX_STAGE_NAME} characters ({} here)",
            name.len()
        ));
    }
    if name.starts_with('-') {
        return Some(format!("stage name `{}` starts with `-`", shown(name)));
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .map(|c| format!("stage name `{}` has {}", shown(name), described(c)))
}

/// The character set, for help lines.
pub const STAGE_NAME_HELP: &str = "stage names take ASCII letters, digits, `_` and `-` (at most 64, not starting with `-`), e.g. `train-cnn`";

/// `resources:` of `stage`, each value in the form its cluster reads.
pub fn check_resources(spec: &SpecFile, stage: &str, res: &Resources) -> Result<(), SpecError> {
    let key = |field: &str| format!("stages.{stage}.resources.{field}");
    if let Some(mem) = &res.mem
        && !is_memory(mem)
    {
        return Err(spec.error(
            &key("mem"),
            format!("`{}` is not an amount of memory", shown(mem)),
            Some(
                "write a whole number with an optional unit K, M, G or T, e.g. `4G` or `500M`"
                    .into(),
            ),
        ));
    }
    if let Some(time) = &res.time
        && !is_time(time)
    {
        return Err(spec.error(
            &key("time"),
            format!("`{}` is not a time limit", shown(time)),
            Some(
                "write it as Slurm does: `MINUTES`, `HH:MM:SS` or `DAYS-HH:MM:SS`, e.g. `1:00:00`"
                    .into(),
            ),
        ));
    }
    if let Some(partition) = &res.partition
        && !is_word(partition, ",")
    {
        return Err(spec.error(
            &key("partition"),
            format!("`{}` is not a partition name", shown(partition)),
            Some("partition names take ASCII letters, digits, `_`, `-` and `.` (a comma between several)".into()),
        ));
    }
    for (field, value) in [("cpus", res.cpus), ("gpus", res.gpus)] {
        if value.is_some_and(|n| n > 4096) {
            return Err(spec.error(
                &key(field),
                format!(
                    "{field} is {}, past the 4096 a task may ask for",
                    value.unwrap_or(0)
                ),
                Some(format!("`{field}` takes 0 to 4096")),
            ));
        }
    }
    Ok(())
}

/// The most tasks one per-item stage is split into, from `--shards` or `executor: {shards}`.
pub const MAX_SHARDS: u32 = 10_000;

/// `executor:` at the top of the file: counts in range and every Kubernetes name a name.
pub fn check_executor(spec: &SpecFile, executor: &ExecutorSpec) -> Result<(), SpecError> {
    if let Some(shards) = executor.shards
        && !(1..=MAX_SHARDS).contains(&shards)
    {
        return Err(spec.error(
            "executor.shards",
            format!("`shards: {shards}` is outside 1 to {MAX_SHARDS}"),
            Some(
                "a per-item stage is split into 1 to 10000 tasks (`--shards N` for one run)".into(),
            ),
        ));
    }
    if let Some(retries) = executor.retries
        && retries > 100
    {
        return Err(spec.error(
            "executor.retries",
            format!("`retries: {retries}` is outside 0 to 100"),
            Some("a failed task is resubmitted 0 to 100 times".into()),
        ));
    }
    let names = [
        ("namespace", &executor.namespace),
        ("project_claim", &executor.project_claim),
        ("env_secret", &executor.env_secret),
    ];
    for (field, value) in names {
        if let Some(value) = value
            && !is_dns_name(value)
        {
            return Err(spec.error(
                &format!("executor.{field}"),
                format!("`{}` is not a Kubernetes object name", shown(value)),
                Some("names take lower-case letters, digits, `-` and `.`, at most 253, starting and ending with a letter or digit".into()),
            ));
        }
    }
    if let Some(image) = &executor.image
        && !is_word(image, "/:@")
    {
        return Err(spec.error(
            "executor.image",
            format!("`{}` is not an image reference", shown(image)),
            Some("write it as `REGISTRY/NAME:TAG` or `NAME@sha256:DIGEST`".into()),
        ));
    }
    Ok(())
}

/// `4G`, `500M`, `1024`.
fn is_memory(text: &str) -> bool {
    let digits = text.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty()
        && digits.len() + 1 >= text.len()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Slurm's time forms: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, and `UNLIMITED`.
fn is_time(text: &str) -> bool {
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return true;
    }
    let (days, rest) = match text.split_once('-') {
        Some((days, rest)) => (Some(days), rest),
        None => (None, text),
    };
    let number = |part: &str| {
        !part.is_empty() && part.len() <= 6 && part.bytes().all(|b| b.is_ascii_digit())
    };
    let parts: Vec<&str> = rest.split(':').collect();
    days.is_none_or(number) && parts.len() <= 3 && parts.iter().all(|p| number(p))
}

/// ASCII letters, digits, `_`, `-`, `.` and the `extra` characters; 1 to 255 of them.
fn is_word(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c) || extra.contains(c))
}

/// A DNS subdomain name, as Kubernetes names its objects.
fn is_dns_name(text: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    text.len() <= 253
        && ends(text.chars().next())
        && ends(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A value as a message may show it: its first 40 characters, controls escaped.
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    if text.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

fn described(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\0' => "a NUL byte".into(),
        '/' => "a `/`".into(),
        c if c.is_control() => format!("the control character {}", c.escape_debug()),
        c => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_held_to_their_set() {
        for good in ["ingest", "train-cnn", "_x", "a1", &"a".repeat(64)] {
            assert_eq!(stage_name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "a/b",
            "../../tmp/x",
            "fy\ntouch pwned\nx",
            "a\0b",
            "-x",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(stage_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(stage_name_problem("fy\nx").unwrap().contains("a newline"));
    }

    #[test]
    fn cluster_values_take_their_forms() {
        assert!(is_memory("4G") && is_memory("500M") && is_memory("1024"));
        assert!(!is_memory("4G\n#SBATCH --wrap=x") && !is_memory("G") && !is_memory("4GG"));
        assert!(
            is_time("1:00:00") && is_time("30") && is_time("2-12:00:00") && is_time("UNLIMITED")
        );
        assert!(!is_time("1:00\ntouch pwned") && !is_time("1:2:3:4") && !is_time(""));
        assert!(is_word("debug", ",") && is_word("gpu,debug", ","));
        assert!(!is_word("debug\ntouch pwned", ","));
        assert!(is_dns_name("my-ns") && !is_dns_name("My_NS") && !is_dns_name("-x"));
    }
}
