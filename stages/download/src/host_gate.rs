//! The per-host limit: at most `max_per_host` requests in flight to one host, hosts named as
//! browsers name them.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// At most `limit` requests in flight to each host; a request to a busy host waits its turn.
pub struct HostGate {
    limit: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// A request slot for one host, given back on drop.
pub struct HostSlot<'a> {
    gate: &'a HostGate,
    host: String,
}

impl HostGate {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: Mutex::new(HashMap::new()),
            freed: Condvar::new(),
        }
    }

    pub fn enter(&self, host: &str) -> HostSlot<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while in_flight.get(host).copied().unwrap_or(0) >= self.limit {
            in_flight = self
                .freed
                .wait(in_flight)
                .unwrap_or_else(|e| e.into_inner());
        }
        *in_flight.entry(host.to_string()).or_default() += 1;
        HostSlot {
            gate: self,
            host: host.to_string(),
        }
    }
}

impl Drop for HostSlot<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .gate
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.host);
            }
        }
        drop(in_flight);
        self.gate.freed.notify_all();
    }
}

/// The `host:port` part of an http(s) URL, lowercased, without user info (`a@b` -> `b`).
pub fn host_of(source: &str) -> String {
    // The `url` crate's parser (WHATWG): userinfo, case, IDNA and default ports are handled as
    // browsers do, so `http://a.com` and `http://A.com:80/x` share one per-host limit.
    match url::Url::parse(source) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => source.to_string(),
        },
        Err(_) => source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn hosts_are_the_authority_of_the_url() {
        assert_eq!(
            host_of("http://User:pw@Images.Example.com:8080/a/b.jpg?x=1"),
            "images.example.com:8080"
        );
        assert_eq!(host_of("https://example.org?q=/x"), "example.org:443");
        assert_eq!(host_of("https://example.org#frag"), "example.org:443");
        assert_eq!(
            host_of("http://example.org/a"),
            host_of("HTTP://Example.ORG:80/b"),
            "the default port is the same host"
        );
        assert_eq!(host_of("http://[::1]:8080/p.jpg"), "[::1]:8080");
        assert_eq!(host_of("not a url"), "not a url");
    }

    #[test]
    fn a_host_gate_admits_the_limit_and_then_waits() {
        let gate = HostGate::new(2);
        let a1 = gate.enter("a");
        let _a2 = gate.enter("a");
        let _b = gate.enter("b"); // another host is not held up
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _a3 = gate.enter("a");
                admitted.fetch_add(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(admitted.load(Ordering::SeqCst), 0, "a third `a` waits");
            drop(a1);
        });
        assert_eq!(
            admitted.load(Ordering::SeqCst),
            1,
            "and enters once a slot is free"
        );
    }
}
