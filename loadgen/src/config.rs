//! What to load, and how.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::LoadError;

/// The server and path a run sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name as written in the URL (sent as `Host`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, e.g. `/?delay=10ms`.
    pub path: String,
    /// Where the host name resolved to; connections go to the first.
    pub addrs: Vec<SocketAddr>,
    /// `user:password@` of the URL, sent as HTTP Basic authorization as
    /// curl does (the value of the `Authorization` header).
    pub authorization: Option<String>,
    /// An https:// URL: connections speak TLS.
    pub tls: bool,
}

/// The `Authorization` header's value for `user:password`, as curl's `-u`
/// and oha's `-a` send it.
pub fn basic_authorization(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

impl Target {
    /// Parses and resolves an `http://` or `https://` URL.
    pub fn parse(text: &str) -> Result<Target, LoadError> {
        let url = url::Url::parse(text).map_err(|e| LoadError::BadUrl(format!("{text}: {e}")))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(LoadError::BadUrl(format!(
                    "{text}: unsupported scheme {other}: (http:// and https:// only)"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| LoadError::BadUrl(format!("{text}: no host")))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare_host, port)
            .to_socket_addrs()
            .map_err(|e| LoadError::BadUrl(format!("{text}: cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(LoadError::BadUrl(format!("{text}: {host} has no address")));
        }
        let authorization = (!url.username().is_empty() || url.password().is_some()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            basic_authorization(&format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or(""))
            ))
        });
        Ok(Target {
            host,
            port,
            path,
            addrs,
            authorization,
            tls,
        })
    }
}

/// How many event-loop threads to use when the user did not say. With
/// keep-alive a request costs the generator little, and the server under
/// test (usually on the same machine) needs the cores more: half of them.
/// Without keep-alive every request is also a connect and a close, kernel
/// work that spreads over threads: all of them. Measured on 2 cores against
/// one nginx worker: keep-alive 1 thread ~210k req/s, 2 threads 175-200k;
/// without, 1 thread ~39k, 2 threads ~52k.
pub fn default_threads(keep_alive: bool) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if keep_alive { (cpus / 2).max(1) } else { cpus }
}

/// Whether `text` is an HTTP token (RFC 9110 §5.6.2): what a method or a
/// header name must be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    /// After exactly this many measured requests (`-n`).
    Requests(u64),
    /// After this long (`-z`).
    Duration(Duration),
}

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to send.
    pub target: Target,
    /// Connections open at once (`-c`): the closed loop's concurrency.
    pub connections: usize,
    /// When to stop.
    pub stop: StopAfter,
    /// Reuse connections (off: a new connection per request, like curl).
    pub keep_alive: bool,
    /// The method (`-X`).
    pub method: String,
    /// Extra headers (`-H "Name: value"`).
    pub headers: Vec<(String, String)>,
    /// The request body (`-d`).
    pub body: Vec<u8>,
    /// A request with no complete answer after this long fails.
    pub timeout: Duration,
    /// Requests completed during this first stretch are not measured.
    pub warmup: Duration,
    /// Event-loop threads (at most one per connection); 0 picks
    /// [`default_threads`].
    pub threads: usize,
    /// Open loop: requests per second, sent on schedule whatever the
    /// answers do; `None` is the closed loop.
    pub rate: Option<f64>,
    /// While set, only this many of the `connections` carry requests (at
    /// most `connections`); the rest wait until it grows. A dashboard turns
    /// the concurrency up and down with it during a run.
    pub live_limit: Option<Arc<AtomicUsize>>,
    /// https: trust only the certificates of this PEM file (curl's and
    /// oha's `--cacert`), not the system's.
    pub ca_file: Option<PathBuf>,
    /// https: take any certificate (curl's `-k`, oha's `--insecure`).
    pub insecure: bool,
}

impl LoadConfig {
    /// A closed-loop configuration with the defaults of `tracebench load`.
    pub fn new(target: Target) -> Self {
        LoadConfig {
            target,
            connections: 10,
            stop: StopAfter::Duration(Duration::from_secs(10)),
            keep_alive: false,
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
            warmup: Duration::ZERO,
            threads: 0,
            rate: None,
            live_limit: None,
            ca_file: None,
            insecure: false,
        }
    }

    /// Checks the numbers a user can get wrong.
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.connections == 0 {
            return Err(LoadError::BadConfig("-c must be at least 1".into()));
        }
        if self.stop == StopAfter::Requests(0) {
            return Err(LoadError::BadConfig("-n must be at least 1".into()));
        }
        if self.stop == StopAfter::Duration(Duration::ZERO) {
            return Err(LoadError::BadConfig("-z must be longer than 0".into()));
        }
        // The method and headers go into the request as they are: a space,
        // CR or LF in them would make another request line or header.
        if !is_token(&self.method) {
            return Err(LoadError::BadConfig(format!(
                "-X {:?} is not an HTTP method (letters, digits and !#$%&'*+-.^_`|~ only)",
                self.method
            )));
        }
        for (name, value) in &self.headers {
            if !is_token(name) || value.contains(['\r', '\n', '\0']) {
                return Err(LoadError::BadConfig(format!(
                    "-H {:?} is not a valid header (a name of letters, digits and \
                     !#$%&'*+-.^_`|~, a value without CR, LF or NUL)",
                    format!("{name}: {value}")
                )));
            }
        }
        if self.timeout.is_zero() {
            return Err(LoadError::BadConfig(
                "--timeout must be longer than 0".into(),
            ));
        }

        if self
            .rate
            .is_some_and(|r| !(r.is_finite() && (0.001..=1e9).contains(&r)))
        {
            return Err(LoadError::BadConfig(
                "--rate must be between 0.001 and 1e9 requests per second".into(),
            ));
        }
        Ok(())
    }

    /// The connections the run will use: `connections`, but never more
    /// than a `-n` run has requests (the rest could only sit idle, and each
    /// costs a slot in the event loop). Warm-up requests are not taken
    /// from `-n`, so with a warm-up the cap would also throttle it; that is
    /// accepted: `-n` smaller than `-c` is a short run either way.
    pub fn effective_connections(&self) -> usize {
        match self.stop {
            StopAfter::Requests(n) => self
                .connections
                .min(usize::try_from(n).unwrap_or(usize::MAX)),
            StopAfter::Duration(_) => self.connections,
        }
    }

    /// The number of event-loop threads the run will use.
    pub fn effective_threads(&self) -> usize {
        if self.rate.is_some() && self.live_limit.is_some() {
            // Each thread keeps its share of the rate; a limit turned down
            // below the thread count would leave a thread with no
            // connection and its share of the rate unsent.
            return 1;
        }
        let threads = if self.threads == 0 {
            default_threads(self.keep_alive)
        } else {
            self.threads
        };
        threads.min(self.effective_connections()).max(1)
    }

    /// The request bytes, built once and sent as they are.
    pub fn request_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target.path);
        let default_port = self.target.port == 80;
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            if default_port {
                head += &format!("Host: {}\r\n", self.target.host);
            } else {
                head += &format!("Host: {}:{}\r\n", self.target.host, self.target.port);
            }
        }
        if !has("user-agent") {
            head += "User-Agent: tracebench\r\n";
        }
        if !has("accept") {
            head += "Accept: */*\r\n";
        }
        if let Some(credentials) = self
            .target
            .authorization
            .as_ref()
            .filter(|_| !has("authorization"))
        {
            head += &format!("Authorization: {credentials}\r\n");
        }
        if !self.keep_alive && !has("connection") {
            head += "Connection: close\r\n";
        }
        for (name, value) in &self.headers {
            head += &format!("{name}: {value}\r\n");
        }
        if !self.body.is_empty() && !has("content-length") {
            head += &format!("Content-Length: {}\r\n", self.body.len());
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8080/?delay=10ms").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/?delay=10ms")
        );
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        let https = Target::parse("https://127.0.0.1/").unwrap();
        assert!(https.tls && https.port == 443, "{https:?}");
        assert!(Target::parse("not a url").is_err());
        assert!(Target::parse("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn methods_and_headers_that_would_break_the_request_are_refused() {
        let mut config = LoadConfig::new(Target::parse("http://127.0.0.1:3000/").unwrap());
        for method in ["GET", "PATCH", "M-SEARCH", "X_1"] {
            config.method = method.into();
            assert!(config.validate().is_ok(), "{method}");
        }
        for method in ["BAD METHOD", "GET\r\nX: 1", "GET\n", "", "G\u{e9}T"] {
            config.method = method.into();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.starts_with("-X ") && !error.contains('\n'), "{error}");
        }
        config.method = "GET".into();
        config.headers = vec![("X-A".into(), "1\r\nX-B: 2".into())];
        assert!(config.validate().is_err());
        config.headers = vec![("X A".into(), "1".into())];
        assert!(config.validate().is_err());
        config.headers = vec![("X-A".into(), "a b, c".into())];
        assert!(config.validate().is_ok());
    }

    #[test]
    fn request_bytes() {
        let mut config = LoadConfig::new(Target::parse("http://127.0.0.1:3000/x").unwrap());
        config.method = "POST".into();
        config.body = b"abc".to_vec();
        config.headers.push(("X-Test".into(), "1".into()));
        let text = String::from_utf8(config.request_bytes()).unwrap();
        assert!(
            text.starts_with("POST /x HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n") && text.contains("X-Test: 1\r\n"));
        assert!(text.ends_with("Content-Length: 3\r\n\r\nabc"), "{text}");
        config.keep_alive = true;
        assert!(
            !String::from_utf8(config.request_bytes())
                .unwrap()
                .contains("Connection:")
        );
        assert!(!text.contains("Authorization"));
        // Issue 14: the URL's user:password was dropped without a word;
        // it is sent as Basic authorization, as curl does.
        let config =
            LoadConfig::new(Target::parse("http://al%40ice:s%3Acret@127.0.0.1:3000/").unwrap());
        let text = String::from_utf8(config.request_bytes()).unwrap();
        // base64("al@ice:s:cret")
        assert!(
            text.contains("Authorization: Basic YWxAaWNlOnM6Y3JldA==\r\n"),
            "{text}"
        );
    }
}
