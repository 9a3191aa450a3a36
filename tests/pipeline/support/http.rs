//! One real HTTP/1.1 server on 127.0.0.1 for every download test: a route function per test (or
//! the shared poster routes, [`posters`]), with hits and requests in flight counted by the server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests being served at once, and the most ever.
#[derive(Default)]
pub struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    /// The most requests ever in flight at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// `route(path, nth, stream)`: the response bytes for the `nth` (1-based) request of `path`, or
/// `None` when the route wrote to (or reset) the connection itself.
pub type Route = dyn Fn(&str, usize, &mut TcpStream) -> Option<Vec<u8>> + Send + Sync;

struct State {
    route: Box<Route>,
    hits: Mutex<BTreeMap<String, Vec<Instant>>>,
    in_flight: InFlight,
    /// Also counts into this, for limits across several servers (hosts).
    shared: Option<Arc<InFlight>>,
}

/// A running server; it lives until the test process ends.
pub struct Server {
    pub port: u16,
    state: Arc<State>,
}

impl Server {
    /// A server answering with `route`. Each connection serves one request.
    pub fn start(
        route: impl Fn(&str, usize, &mut TcpStream) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        Self::start_counted(route, None)
    }

    /// [`Server::start`], also counting requests in flight into `shared`.
    pub fn start_counted(
        route: impl Fn(&str, usize, &mut TcpStream) -> Option<Vec<u8>> + Send + Sync + 'static,
        shared: Option<Arc<InFlight>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            route: Box::new(route),
            hits: Mutex::default(),
            in_flight: InFlight::default(),
            shared,
        });
        let serving = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = serving.clone();
                std::thread::spawn(move || serve_one(&state, stream));
            }
        });
        Self { port, state }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Requests of `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.hit_times(path).len()
    }

    /// When each request of `path` arrived.
    pub fn hit_times(&self, path: &str) -> Vec<Instant> {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests of every path so far.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().map(Vec::len).sum()
    }

    /// The most requests this server served at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.in_flight.max()
    }
}

fn serve_one(state: &State, mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&request)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let nth = {
        let mut hits = state.hits.lock().unwrap();
        let times = hits.entry(path.clone()).or_default();
        times.push(Instant::now());
        times.len()
    };
    // In flight while the route works on it: the count ends before the response goes out, since
    // a client that has read it may start its next request before this thread runs again.
    let counters = [Some(&state.in_flight), state.shared.as_deref()];
    counters.iter().flatten().for_each(|c| c.enter());
    let response = (state.route)(&path, nth, &mut stream);
    counters.iter().flatten().for_each(|c| c.leave());
    if let Some(response) = response {
        let _ = stream.write_all(&response);
        let _ = stream.flush();
    }
}

/// `200 OK` with `body` as a JPEG.
pub fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// An empty response with `code` (`404 Not Found`).
pub fn http_status(code: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

fn http_redirect(to: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Closes the connection with a TCP reset instead of an orderly shutdown.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Every way a poster server can behave, one route each, serving `jpeg` where it succeeds.
pub fn posters(jpeg: Vec<u8>) -> Server {
    Server::start(move |path, nth, stream| {
        let head = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        Some(match path {
            "/ok.jpg" | "/chain-end.jpg" => http_ok(&jpeg),
            "/gone.jpg" => http_status("410 Gone"),
            "/missing.jpg" => http_status("404 Not Found"),
            "/error.jpg" => http_status("500 Internal Server Error"),
            "/flaky.jpg" if nth == 1 => http_status("500 Internal Server Error"),
            "/flaky.jpg" => http_ok(&jpeg),
            "/busy.jpg" if nth == 1 => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            "/busy.jpg" => http_ok(&jpeg),
            "/too-busy.jpg" => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            "/slow.jpg" => {
                std::thread::sleep(Duration::from_secs(4));
                http_ok(&jpeg)
            }
            "/slow-body.jpg" => {
                let _ = stream.write_all(head(jpeg.len()).as_bytes());
                let _ = stream.write_all(&jpeg[..jpeg.len() / 2]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_secs(3));
                jpeg[jpeg.len() / 2..].to_vec()
            }
            "/reset.jpg" => {
                let _ = stream.write_all(head(jpeg.len()).as_bytes());
                let _ = stream.write_all(&jpeg[..jpeg.len() / 3]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_millis(50));
                reset(stream.try_clone().unwrap());
                return None;
            }
            "/truncated.jpg" => {
                // Declares the whole JPEG, sends half, closes.
                let mut r = head(jpeg.len()).into_bytes();
                r.extend_from_slice(&jpeg[..jpeg.len() / 2]);
                r
            }
            "/cut.jpg" => {
                // A complete HTTP body that holds only the first half of a JPEG.
                let half = &jpeg[..jpeg.len() / 2];
                let mut r = head(half.len()).into_bytes();
                r.extend_from_slice(half);
                r
            }
            "/page.jpg" => {
                let page = b"<!DOCTYPE html><html><body>Poster not available</body></html>";
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", page.len()).into_bytes();
                r.extend_from_slice(page);
                r
            }
            "/huge.jpg" => {
                let mut r = head(3_000_000).into_bytes();
                r.extend(std::iter::repeat_n(0u8, 3_000_000));
                r
            }
            "/huge-undeclared.jpg" => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n".to_vec();
                r.extend(std::iter::repeat_n(0u8, 3_000_000));
                r
            }
            "/chain-1.jpg" => http_redirect("/chain-2.jpg"),
            "/chain-2.jpg" => http_redirect("/chain-3.jpg"),
            "/chain-3.jpg" => http_redirect("/chain-end.jpg"),
            "/relative-1.jpg" => http_redirect("chain-end.jpg"),
            "/to-file.jpg" => http_redirect("file:///etc/passwd"),
            "/loop-a.jpg" => http_redirect("/loop-b.jpg"),
            "/loop-b.jpg" => http_redirect("/loop-a.jpg"),
            _ => http_status("404 Not Found"),
        })
    })
}
