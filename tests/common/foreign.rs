//! Servers we did not write, as test peers: the assembly thread-pool server
//! of tests/fixtures/asmserver.asm, nginx, python3's http.server, a node
//! http server and a JDK HttpServer. Each starts on a loopback port the
//! test chose, directly or under a command prefix (a tracer), and is
//! stopped by pid: SIGTERM, a grace period, then SIGKILL.
//!
//! A tool that is missing fails the test with what to run; nothing here
//! skips. `bash .ci/test --install-only` installs them all.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{children_of, eventually, exchange, tempdir};

/// How long a server gets to exit by itself after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(3);

/// How long a server gets to answer its first request. The JVM compiles
/// Server.java in memory before it listens: seconds on a busy machine.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// A free loopback port: bound on 127.0.0.1:0, read, and released for the
/// server to take.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// The path of `tool` (as the shell's `command -v` would find it, with the
/// sbin directories where nginx lives added), or a panic that says how to
/// install it.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "{tool} is not installed, and the foreign-server tests need it: \
                 run `bash .ci/test --install-only` (it installs nasm, nginx-light, \
                 python3, nodejs and default-jdk-headless from Debian)"
            )
        })
}

/// `pid` is a live process (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| super::parse_stat(&stat))
        .is_some_and(|(_, _, state, _)| state != 'Z')
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The assembly server, built once per test binary with
/// tests/fixtures/build-asmserver.sh into the target's test directory.
pub fn asm_server_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_tool("nasm");
        require_tool("ld");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("asmserver");
        let output = Command::new("bash")
            .arg(fixture("build-asmserver.sh"))
            .arg(&out)
            .output()
            .expect("run build-asmserver.sh");
        assert!(
            output.status.success(),
            "build-asmserver.sh failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// One of the five servers, on a port: what to run, and the temporary
/// directory it needs (its configuration, its files, its log).
pub struct ForeignServer {
    /// A short name for messages: "asm", "nginx", "python", "node", "java".
    pub name: &'static str,
    /// The loopback port it listens on.
    pub port: u16,
    program: PathBuf,
    args: Vec<OsString>,
    dir: tempfile::TempDir,
}

/// The assembly thread-pool server (4 workers) on 127.0.0.1:`port`.
pub fn asm_server(port: u16) -> ForeignServer {
    ForeignServer {
        name: "asm",
        port,
        program: asm_server_binary().to_owned(),
        args: vec![port.to_string().into()],
        dir: tempdir(),
    }
}

/// nginx with a master and `workers` worker processes on 127.0.0.1:`port`,
/// answering every GET with 200 "hello\n"; everything it writes (pid file,
/// error log, temp paths) goes into its temporary directory.
pub fn nginx(port: u16, workers: u32) -> ForeignServer {
    nginx_listening(port, workers, "")
}

/// nginx with one worker answering on 127.0.0.1:`port` in plain HTTP (so
/// [`ForeignServer::start`] sees it ready) and on 127.0.0.1:`tls_port`
/// over TLS with the certificate and key of these PEM files.
pub fn nginx_tls(port: u16, tls_port: u16, certificate: &Path, key: &Path) -> ForeignServer {
    let listen = format!(
        "\x20       listen 127.0.0.1:{tls_port} ssl;\n\
         \x20       ssl_certificate {};\n\
         \x20       ssl_certificate_key {};\n",
        certificate.display(),
        key.display()
    );
    nginx_listening(port, 1, &listen)
}

/// [`nginx`], with `more` added to its server block.
fn nginx_listening(port: u16, workers: u32, more: &str) -> ForeignServer {
    let program = require_tool("nginx");
    let dir = tempdir();
    let d = dir.path().display();
    let config = format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes {workers};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         {more}\
         \x20       location / {{ return 200 \"hello\\n\"; }}\n\
         \x20   }}\n\
         }}\n"
    );
    let config_path = dir.path().join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    // -e: the error log before the configuration is read (the default one
    // under /var/log may not be writable); -p: the prefix for relative paths.
    let args = vec![
        "-e".into(),
        dir.path().join("error.log").into(),
        "-p".into(),
        dir.path().into(),
        "-c".into(),
        config_path.into(),
    ];
    ForeignServer {
        name: "nginx",
        port,
        program,
        args,
        dir,
    }
}

/// `python3 -m http.server PORT --bind 127.0.0.1 --directory DIR`, DIR
/// holding an index.html: python's ThreadingHTTPServer, a thread per
/// request.
pub fn python(port: u16) -> ForeignServer {
    let program = python_interpreter();
    let dir = tempdir();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hello from python</h1>\n").unwrap();
    let args = vec![
        "-m".into(),
        "http.server".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--directory".into(),
        site.into(),
    ];
    ForeignServer {
        name: "python",
        port,
        program,
        args,
        dir,
    }
}

/// The interpreter `python3` runs: through a version manager's shim (a
/// shell script, pyenv's forks some 40 processes before it execs) the
/// trace would start with the shim's work, so the server runs the
/// interpreter itself.
fn python_interpreter() -> PathBuf {
    let python3 = require_tool("python3");
    let output = Command::new(&python3)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("run python3");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && !path.is_empty(),
        "{} does not say where its interpreter is: {}",
        python3.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(path)
}

/// `node tests/fixtures/server.js PORT`.
pub fn node(port: u16) -> ForeignServer {
    ForeignServer {
        name: "node",
        port,
        program: require_tool("node"),
        args: vec![fixture("server.js").into(), port.to_string().into()],
        dir: tempdir(),
    }
}

/// `java tests/fixtures/Server.java PORT`: the JDK's HttpServer with a
/// pool of 4 threads, launched from its single source file.
pub fn java(port: u16) -> ForeignServer {
    ForeignServer {
        name: "java",
        port,
        program: require_tool("java"),
        args: vec![fixture("Server.java").into(), port.to_string().into()],
        dir: tempdir(),
    }
}

impl ForeignServer {
    /// The command line, program first.
    pub fn command_line(&self) -> Vec<OsString> {
        let mut line = vec![self.program.clone().into_os_string()];
        line.extend(self.args.iter().cloned());
        line
    }

    /// Its temporary directory (configuration, files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts it and waits until it answers a GET with 200.
    pub fn start(self) -> Running {
        self.start_under(&[])
    }

    /// Starts `prefix… program args…` (prefix: a tracer and its options
    /// ending in `--`, or nothing) and waits until the server answers a
    /// GET with 200. With a prefix the server is the prefix's child.
    pub fn start_under(self, prefix: &[OsString]) -> Running {
        let log_path = self.dir.path().join("output.log");
        let log = File::create(&log_path).unwrap();
        let mut line = prefix.to_vec();
        line.extend(self.command_line());
        let child = Command::new(&line[0])
            .args(&line[1..])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {line:?}: {e}", self.name));
        let mut running = Running {
            child: Some(child),
            prefixed: !prefix.is_empty(),
            server: self,
            log_path,
            started: Instant::now(),
        };
        let port = running.server.port;
        if let Err(why) = serving_within(port, START_LIMIT, || running.still_running()) {
            panic!(
                "{} did not serve on port {port} within {START_LIMIT:?}: {why}\n\
                 its output:\n{}",
                running.server.name,
                running.log()
            );
        }
        running
    }
}

/// Waits (up to [`START_LIMIT`]) until 127.0.0.1:`port` answers `GET /`
/// with 200 and a body of its Content-Length.
pub fn wait_until_serving(port: u16) -> Result<(), String> {
    serving_within(port, START_LIMIT, || true)
}

fn serving_within(
    port: u16,
    limit: Duration,
    mut still_running: impl FnMut() -> bool,
) -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        // Connection: close, or node and the JDK would keep the connection
        // open for the next request and the read would wait for it.
        let last = match exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ) {
            Ok(response) if response.status == 200 => return Ok(()),
            Ok(response) => format!("answered {}", response.status),
            Err(e) => e.to_string(),
        };
        if !still_running() {
            return Err(format!("it exited ({last})"));
        }
        if Instant::now() > deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a server ended.
#[derive(Debug)]
pub struct Stopped {
    /// The exit status of the process we started (the server, or the
    /// tracer in front of it).
    pub status: ExitStatus,
    /// It exited by itself within [`GRACE`] of SIGTERM (no SIGKILL).
    pub graceful: bool,
    /// From SIGTERM to its exit.
    pub took: Duration,
    /// Everything it wrote, stdout and stderr.
    pub output: String,
}

/// A started server: stopped by pid when dropped (SIGTERM, up to
/// [`GRACE`], then SIGKILL for it and every process it started, then wait).
pub struct Running {
    child: Option<Child>,
    prefixed: bool,
    /// What was started.
    pub server: ForeignServer,
    log_path: PathBuf,
    /// When it was spawned.
    pub started: Instant,
}

impl Running {
    /// The pid of the process we started (the tracer, with a prefix).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).unwrap()
    }

    /// The server's own pid: our child, or the prefix's only child.
    pub fn server_pid(&self) -> i32 {
        if !self.prefixed {
            return self.pid();
        }
        let pid = self.pid();
        let (found, children) = eventually(Duration::from_secs(10), || {
            let children = children_of(pid);
            (children.len() == 1, children)
        });
        assert!(found, "{pid} should have one child, has {children:?}");
        children[0].0
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.server.port)
    }

    /// What the server (and the prefix) wrote so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    fn still_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// SIGTERM to the server, up to [`GRACE`] for the process we started
    /// to exit, then SIGKILL for it and everything it started.
    pub fn stop(mut self) -> Stopped {
        let target = self.server_pid();
        self.terminate(target)
    }

    fn terminate(&mut self, target: i32) -> Stopped {
        let mut child = self.child.take().expect("stopped once");
        let ours = i32::try_from(child.id()).unwrap();
        // Taken before the signal: after the exit, orphans move to init.
        let family = descendants(ours);
        let start = Instant::now();
        // SAFETY: kill(2) on a process we started or its child.
        unsafe { libc::kill(target, libc::SIGTERM) };
        let mut graceful = true;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > GRACE {
                graceful = false;
                for pid in family.iter().copied().chain([ours]) {
                    // SAFETY: kill(2) on processes we started, by pid.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Stopped {
            status,
            graceful,
            took: start.elapsed(),
            output: self.log(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave a server behind. The server first
        // (with a prefix, a tracer would otherwise take the signal for it).
        if self.still_running() {
            let pid = self.pid();
            let target = if self.prefixed {
                children_of(pid).first().map_or(pid, |c| c.0)
            } else {
                pid
            };
            self.terminate(target);
        } else if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// Every process below `pid` (children, their children…), now.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in children_of(parent) {
            all.push(child);
            frontier.push(child);
        }
    }
    all
}

/// A CA and a server certificate it signed for IP 127.0.0.1, made with
/// openssl in `dir`: (ca.pem, server.pem, server.key).
pub fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let openssl = require_tool("openssl");
    let run = |args: &[&str]| {
        let output = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tracebench test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    ["ca.pem", "server.pem", "server.key"].map(|name| dir.join(name))
}
