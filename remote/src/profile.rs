//! Owns reading an AWS profile: `AWS_PROFILE` (or `default`) from the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and the config file
//! (`AWS_CONFIG_FILE`, else `~/.aws/config`), as the AWS CLI reads them. object_store reads only
//! the environment, and engineers keep their keys in profiles.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings of one profile, credentials file first.
#[derive(Debug, Default)]
pub struct AwsProfile {
    settings: BTreeMap<String, String>,
}

impl AwsProfile {
    /// The profile `AWS_PROFILE` names, or `default`.
    pub fn name() -> String {
        std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
    }

    /// The profile's settings, if either file has the profile.
    pub fn load() -> Option<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let name = Self::name();
        let mut settings = BTreeMap::new();
        // In the config file every profile but `default` is written `[profile NAME]`.
        let sections = [
            (
                file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
                name.clone(),
            ),
            (file("AWS_CONFIG_FILE", "config"), format!("profile {name}")),
            (file("AWS_CONFIG_FILE", "config"), name.clone()),
        ];
        let mut found = false;
        for (path, section) in sections {
            // A FIFO or `/dev/zero` named here is skipped, not read forever.
            let Some(text) =
                path.and_then(|p| pipeline_engine::fsio::read_regular(&p, 1 << 20).ok())
            else {
                continue;
            };
            if let Some(values) = ini_section(&text, &section) {
                found = true;
                for (k, v) in values {
                    settings.entry(k).or_insert(v);
                }
            }
        }
        found.then_some(Self { settings })
    }

    /// One setting (`region`, `endpoint_url`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// Access key id, secret and session token, when the profile holds keys.
    pub fn credentials(&self) -> Option<(&str, &str, Option<&str>)> {
        Some((
            self.get("aws_access_key_id")?,
            self.get("aws_secret_access_key")?,
            self.get("aws_session_token"),
        ))
    }
}

/// `key = value` lines of `[section]` in an INI text, if it has that section.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = false;
    let mut values = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            found |= inside;
            continue;
        }
        if inside && let Some((key, value)) = line.split_once('=') {
            values.push((key.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    found.then_some(values)
}

#[cfg(test)]
mod tests {
    use super::ini_section;

    #[test]
    fn a_section_is_read_and_others_are_not() {
        let text = "[default]\naws_access_key_id = A\n\n[profile team]\n# note\nregion=eu-west-1\nendpoint_url = http://minio:9000\n";
        assert_eq!(
            ini_section(text, "profile team").unwrap(),
            [
                ("region".to_string(), "eu-west-1".to_string()),
                ("endpoint_url".to_string(), "http://minio:9000".to_string())
            ]
        );
        assert_eq!(ini_section(text, "default").unwrap().len(), 1);
        assert!(ini_section(text, "other").is_none());
    }
}
