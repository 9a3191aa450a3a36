//! A directory shared cache someone tampered with, under the watchdog: a FIFO where a blob
//! was, a record in a newer format, a flipped byte, forged per-item results. Only bytes that were
//! read and do not match are damage; what cannot be read is named and kept; nothing from a record
//! is written until all of it checks out.

use crate::support::*;
use std::path::{Path, PathBuf};

/// The records of a directory remote: (path, JSON).
fn records(remote: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut found: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(remote.join("entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (path, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The blob hashes a record's manifest names.
fn blobs_of(record: &serde_json::Value) -> Vec<String> {
    record["manifest"]["files"]
        .as_object()
        .unwrap()
        .values()
        .map(|file| file["blake3"].as_str().unwrap().to_string())
        .collect()
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verify_remote_repair_deletes_only_read_damage_and_a_fifo_hangs_nothing() {
    let p = Project::small(20, SMALL_PIPELINE);
    let remote = p.root.join("shared");
    let url = remote.display().to_string();
    p.ok(&["run", "--push", "--remote", &url]);
    let all = records(&remote);
    // Two records that each hold a blob no other record names: one loses it to a FIFO, one
    // gets a byte of it flipped; a third record is rewritten in a format this version does not
    // read.
    let mut refs = std::collections::BTreeMap::<String, usize>::new();
    for (_, record) in &all {
        for blob in blobs_of(record) {
            *refs.entry(blob).or_default() += 1;
        }
    }
    let lone: Vec<(usize, String)> = (0..all.len())
        .filter_map(|i| {
            let blob = blobs_of(&all[i].1).into_iter().find(|b| refs[b] == 1)?;
            Some((i, blob))
        })
        .collect();
    assert!(lone.len() >= 2 && all.len() >= 3, "{} records", all.len());
    let newer_index = (0..all.len())
        .find(|i| *i != lone[0].0 && *i != lone[1].0)
        .unwrap();
    let (fifo_record, damaged_record, newer_record) =
        (&all[lone[0].0], &all[lone[1].0], &all[newer_index]);
    let fifo_blob = remote.join("cas").join(&lone[0].1);
    std::fs::remove_file(&fifo_blob).unwrap();
    mkfifo(&fifo_blob);
    let damaged_blob = remote.join("cas").join(&lone[1].1);
    let mut bytes = std::fs::read(&damaged_blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&damaged_blob, bytes).unwrap();
    let mut newer = newer_record.1.clone();
    newer["format"] = 2.into();
    std::fs::write(&newer_record.0, serde_json::to_vec(&newer).unwrap()).unwrap();

    // Reading commands pass over the FIFO within the watchdog.
    let out = bounded(&p.root, &["status", "--remote", &url]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let out = bounded(&p.root, &["verify", "--remote", &url]);
    exits(&out, 1);
    assert!(
        stdout(&out).contains("1 damaged, 2 not checked"),
        "{}",
        stdout(&out)
    );
    let out = bounded(&p.root, &["verify", "--remote", &url, "--repair"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("1 damaged") && text.contains("2 not checked"),
        "{text}"
    );
    assert_eq!(
        text.matches("Deleted ").count(),
        2,
        "the blob and its record, once each: {text}"
    );
    assert!(
        !damaged_blob.exists() && !damaged_record.0.exists(),
        "{text}"
    );
    assert!(
        fifo_blob.exists() && fifo_record.0.exists(),
        "what could not be read is kept: {text}"
    );
    assert!(
        newer_record.0.exists(),
        "a newer record is not damage: {text}"
    );
    for (path, _) in &all {
        let kept = path.exists();
        assert_eq!(
            kept,
            *path != damaged_record.0,
            "{}: {text}",
            path.display()
        );
    }

    // A second project pulls past the FIFO and the newer record without hanging, and says
    // which stages it could not take.
    let b = Project::small(20, SMALL_PIPELINE);
    let out = bounded(&b.root, &["pull", "--remote", &url]);
    exits(&out, 1);
    assert!(
        stderr(&out).contains("could not be pulled"),
        "{}",
        stderr(&out)
    );
}

/// Every file below `dir`, with its content.
fn contents(dir: &Path) -> Vec<Vec<u8>> {
    tree(dir).into_values().collect()
}

#[test]
fn a_record_with_one_bad_item_writes_none_of_its_items() {
    let a = Project::small(20, SMALL_PIPELINE);
    let remote = a.root.join("shared");
    let url = remote.display().to_string();
    a.ok(&["run", "--push", "--remote", &url]);
    let (path, mut record) = records(&remote)
        .into_iter()
        .find(|(_, r)| {
            r["items"]
                .as_object()
                .is_some_and(|items| items.values().filter(|i| i["text"].is_string()).count() >= 2)
        })
        .expect("a record with inline per-item results (decode verdicts, poster hashes)");
    let stage = record["manifest"]["stage"].as_str().unwrap().to_string();
    // One forged verdict whose hash is made to match, beside one item whose hash is no hash.
    let poison = "err:POISONED";
    let items = record["items"].as_object_mut().unwrap();
    let inline: Vec<String> = items
        .iter()
        .filter(|(_, i)| i["text"].is_string())
        .map(|(k, _)| k.clone())
        .collect();
    items[&inline[0]]["text"] = poison.into();
    items[&inline[0]]["size"] = poison.len().into();
    items[&inline[0]]["blake3"] = blake3::hash(poison.as_bytes()).to_hex().to_string().into();
    items[&inline[1]]["blake3"] = "../../../etc/passwd".into();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let b = Project::small(20, SMALL_PIPELINE);
    let out = bounded(&b.root, &["pull", "--remote", &url]);
    exits(&out, 1);
    assert!(
        stderr(&out).contains(&stage),
        "the refused stage is named: {}",
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("not on the remote"),
        "the remote has it; it was refused: {}",
        stdout(&out)
    );
    let poisoned = |p: &Project| {
        contents(&p.root.join("cache"))
            .iter()
            .any(|bytes| bytes.windows(poison.len()).any(|w| w == poison.as_bytes()))
    };
    assert!(!poisoned(&b), "an item of the refused record was written");
    b.ok(&["run"]);
    assert!(!poisoned(&b));
    assert_eq!(locked_outputs(&a), locked_outputs(&b), "b made what a made");
}
