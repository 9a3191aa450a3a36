//! A real S3 server for the shared-cache tests: PyPI's `moto[server]` 5.2.5 on 127.0.0.1, started
//! and stopped by the test itself, and boto3 (which moto brings) to look at and damage objects.

use super::*;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// A running `moto_server`; killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

/// Python with moto's server and boto3 (installed into `.venv` as `.ci/run` does).
pub fn python_with_moto() -> std::path::PathBuf {
    python_with(&["moto[server]==5.2.5"], "moto.server, boto3")
}

impl Moto {
    /// A server on a free port, accepting any credentials.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra environment (`INITIAL_NO_AUTH_ACTION_COUNT=0` makes it check
    /// credentials as AWS does).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let python = python_with_moto();
        let server = python.with_file_name("moto_server");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let started = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a `pipeline` process needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint()),
        ]
    }

    /// Runs a boto3 snippet with `s3` (a client of this server) and `args` in scope; returns
    /// what it prints as JSON.
    pub fn boto(&self, snippet: &str, args: &[&str]) -> serde_json::Value {
        let script = format!(
            "import boto3, json, sys\nargs = sys.argv[1:]\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n{snippet}",
            self.endpoint()
        );
        python_json(&python_with_moto(), &script, args)
    }

    /// Creates `bucket`; returns the remote URL `s3://bucket/cache`.
    pub fn bucket(&self, bucket: &str) -> String {
        self.boto("s3.create_bucket(Bucket=args[0]); print('null')", &[bucket]);
        format!("s3://{bucket}/cache")
    }

    /// Keys below `prefix` in `bucket`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listed = self.boto(
            "p = s3.get_paginator('list_objects_v2')\nkeys = [o['Key'] for page in p.paginate(Bucket=args[0], Prefix=args[1]) for o in page.get('Contents', [])]\nprint(json.dumps(keys))",
            &[bucket, prefix],
        );
        serde_json::from_value(listed).unwrap()
    }

    /// Flips one byte in the middle of an object, keeping its size.
    pub fn flip_byte(&self, bucket: &str, key: &str) {
        self.boto(
            "body = bytearray(s3.get_object(Bucket=args[0], Key=args[1])['Body'].read())\nbody[len(body) // 2] ^= 0xFF\ns3.put_object(Bucket=args[0], Key=args[1], Body=bytes(body))\nprint('null')",
            &[bucket, key],
        );
    }

    /// Kills the server at once (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of a server that the test can cut (every connection reset, new ones
/// refused by closing them at once) and restore: the server going away mid-transfer, as seen by
/// the client, while its state survives for the next attempt.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    cut: std::sync::atomic::AtomicBool,
    /// Cut once this many `PUT` requests have gone through (0: never).
    cut_after_puts: std::sync::atomic::AtomicUsize,
    puts: std::sync::atomic::AtomicUsize,
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn cut_now(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Proxy {
    /// A proxy on a free port forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState::default());
        let serving = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if serving.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut open = serving.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let pump = |mut from: TcpStream,
                            mut to: TcpStream,
                            state: Option<std::sync::Arc<ProxyState>>| {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 65536];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if let Some(state) = &state {
                                if buf[..n].starts_with(b"PUT ") {
                                    let puts = state.puts.fetch_add(1, Ordering::SeqCst) + 1;
                                    let limit = state.cut_after_puts.load(Ordering::SeqCst);
                                    if limit > 0 && puts >= limit {
                                        state.cut_now();
                                        break;
                                    }
                                }
                                if state.cut.load(Ordering::SeqCst) {
                                    break;
                                }
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Some(serving.clone()),
                );
                pump(server, client, None);
            }
        });
        Self { port, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection once `puts` more `PUT` requests have started.
    pub fn cut_after_puts(&self, puts: usize) {
        use std::sync::atomic::Ordering;
        let done = self.state.puts.load(Ordering::SeqCst);
        self.state
            .cut_after_puts
            .store(done + puts, Ordering::SeqCst);
    }

    /// `PUT` requests seen so far.
    pub fn puts(&self) -> usize {
        self.state.puts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        use std::sync::atomic::Ordering;
        self.state.cut_after_puts.store(0, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }
}
