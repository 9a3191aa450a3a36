//! The remote against a directory and against moto's S3 server (from `.venv`, as `.ci/run`
//! installs it): records created once, entries round-tripped with their items, and hostile or
//! damaged objects refused.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use pipeline_api::{ItemCache, RunSummary};
use pipeline_engine::store::Store;

use crate::record::{blob_name, entry_name};
use crate::{Quiet, Remote, RemoteError};

fn open(url: &str) -> Remote {
    Remote::open(url, crate::Missing::Create, 4, Arc::new(Quiet)).unwrap()
}

/// A store with one entry: two files of the same content in nested directories, a third file,
/// and two per-item results (one small text, one binary blob).
fn store_with_entry(dir: &Path, key: &str) -> Store {
    let store = Store::new(dir);
    store.init().unwrap();
    let pending = store.begin(key).unwrap();
    let out = pending.out_dir();
    std::fs::create_dir_all(out.join("posters/a")).unwrap();
    std::fs::write(out.join("posters/a/one.jpg"), b"same bytes").unwrap();
    std::fs::write(out.join("posters/two.jpg"), b"same bytes").unwrap();
    std::fs::write(out.join("table.parquet"), vec![7u8; 5000]).unwrap();
    let items = store.items();
    items.put("aa11", b"ok").unwrap();
    items.put("bb22", &[0u8, 159, 146, 150]).unwrap();
    pending
        .record_items(&BTreeSet::from(["aa11".to_string(), "bb22".to_string()]))
        .unwrap();
    store
        .commit(pending, "download", "download", &RunSummary::default(), 1.0)
        .unwrap();
    store
}

const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn an_entry_pushed_to_a_directory_is_pulled_complete_with_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with_entry(&dir.path().join("a"), KEY);
    let remote_dir = dir.path().join("remote");
    let remote = open(&remote_dir.display().to_string());
    let entries = [("download".to_string(), KEY.to_string())];
    let sent = remote.push_entries(&a, &entries).unwrap();
    assert_eq!(
        (sent.entries_sent, sent.blobs_sent),
        (1, 3),
        "duplicates go once"
    );
    let again = remote.push_entries(&a, &entries).unwrap();
    assert_eq!(
        (again.entries_sent, again.entries_there, again.blobs_sent),
        (0, 1, 0)
    );

    let b = Store::new(dir.path().join("b"));
    b.init().unwrap();
    let pulled = remote.pull_entry(&b, KEY).unwrap().unwrap();
    assert_eq!(
        pulled.files, 5,
        "every file written: three outputs (two of one blob) and both per-item results"
    );
    let entry = b.fresh(KEY).expect("the pulled entry is complete");
    assert_eq!(entry.output_digest, a.fresh(KEY).unwrap().output_digest);
    assert!(b.verify(KEY).is_empty());
    assert_eq!(b.items().get("aa11").unwrap(), b"ok");
    assert_eq!(b.items().get("bb22").unwrap(), [0u8, 159, 146, 150]);
    assert_eq!(
        b.items_used(KEY).unwrap(),
        ["aa11".to_string(), "bb22".to_string()]
    );
    assert!(remote.pull_entry(&b, &"2".repeat(64)).unwrap().is_none());
    let checked = remote.verify(false).unwrap();
    assert_eq!(
        (checked.entries, checked.blobs, checked.problems.len()),
        (1, 3, 0)
    );
}

#[test]
fn a_truncated_blob_or_a_record_naming_paths_outside_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_with_entry(&dir.path().join("a"), KEY);
    let remote_dir = dir.path().join("remote");
    let remote = open(&remote_dir.display().to_string());
    remote
        .push_entries(&a, &[("download".to_string(), KEY.to_string())])
        .unwrap();
    let table = blake3::hash(&[7u8; 5000]).to_hex().to_string();
    std::fs::write(remote_dir.join(blob_name(&table)), vec![7u8; 4000]).unwrap();

    let b = Store::new(dir.path().join("b"));
    b.init().unwrap();
    let err = remote.pull_entry(&b, KEY).unwrap_err();
    assert!(
        matches!(&err, RemoteError::Corrupt { object, what } if object.ends_with(&table) && what.contains("table.parquet")),
        "{err}"
    );
    assert!(b.fresh(KEY).is_none());
    assert!(
        b.manifest(KEY).is_none(),
        "nothing half-pulled looks like an entry"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("b/v1/tmp"))
            .unwrap()
            .count(),
        0,
        "the pending entry is gone"
    );
    let found = remote.verify(false).unwrap();
    assert_eq!(found.problems.len(), 1);
    assert!(found.problems[0].problem.contains("4000 bytes"));

    // A record that would write outside its entry is refused before anything is fetched.
    let record_path = remote_dir.join(entry_name(KEY));
    let text = std::fs::read_to_string(&record_path).unwrap();
    std::fs::write(
        &record_path,
        text.replace("posters/two.jpg", "../../escaped.jpg"),
    )
    .unwrap();
    let err = remote.pull_entry(&b, KEY).unwrap_err();
    assert!(err.to_string().contains("outside its entry"), "{err}");
    assert!(!dir.path().join("escaped.jpg").exists());
}

/// `moto_server` on a free port, killed when dropped.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    let server = venv.join("bin/moto_server");
    if !server.exists() {
        // Made as `.ci/run` makes it, so `cargo test` works on a fresh clone too.
        let made = (venv.join("bin/python").exists()
            || std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success()))
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "moto[server]==5.2.5"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made && server.exists(),
            "this test needs moto's S3 server: `python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5'` (as .ci/run does)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 60, "moto did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Moto(child, port)
}

/// Creates a bucket with a plain request (moto takes it unsigned).
fn create_bucket(port: u16, bucket: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_record_is_created_once_on_s3_and_on_a_directory() {
    let server = moto();
    create_bucket(server.1, "records");
    // SAFETY: no other test of this crate reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{}", server.1));
    }
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "s3://records/prefix".to_string(),
        format!("file://{}", dir.path().display()),
    ] {
        let remote = open(&url);
        remote.check().unwrap();
        let name = entry_name(KEY);
        assert!(remote.create(&name, b"first".to_vec()).unwrap(), "{url}");
        assert!(
            !remote.create(&name, b"second".to_vec()).unwrap(),
            "{url}: the second create is refused (412 on S3), and that is not an error"
        );
        assert_eq!(remote.get_small(&name).unwrap().unwrap(), b"first", "{url}");
    }
    let missing = open("s3://no-such-bucket/prefix").check().unwrap_err();
    assert!(matches!(missing, RemoteError::NoBucket { .. }), "{missing}");

    // A file over 64 MiB goes up in parts (S3 multipart upload) and comes back whole.
    let store = Store::new(dir.path().join("big"));
    store.init().unwrap();
    let pending = store.begin(KEY).unwrap();
    let big: Vec<u8> = (0..(65u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(pending.out_dir().join("weights.bin"), &big).unwrap();
    store
        .commit(pending, "train", "train", &RunSummary::default(), 1.0)
        .unwrap();
    let remote = open("s3://records/big");
    let sent = remote
        .push_entries(&store, &[("train".to_string(), KEY.to_string())])
        .unwrap();
    assert_eq!((sent.blobs_sent, sent.bytes_sent), (1, big.len() as u64));
    let back = Store::new(dir.path().join("back"));
    back.init().unwrap();
    remote.pull_entry(&back, KEY).unwrap().unwrap();
    assert_eq!(
        std::fs::read(back.out_dir(KEY).join("weights.bin")).unwrap(),
        big
    );
}
