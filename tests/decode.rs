//! strace's text, call by call (issue 15): real programs traced with
//! `-e trace=all` by strace and by `tracebench trace`, each writing one
//! file per thread (`-ff -o`), and the lines compared once addresses,
//! thread ids, inode numbers and random bytes are normalised. At least 95 % of our calls
//! must print exactly as strace prints them; a call that differs in a
//! program that runs the same way every time must be one of the known
//! differences listed here, with the reason.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};

use common::foreign::require_tool;
use common::{BIN, ServerProcess, serial, tempdir};
use regex::Regex;

/// Calls whose lines may differ between two runs of the same program, or
/// that we print differently from strace, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "sysinfo",
        "free memory and the process count change between runs",
    ),
    ("getrusage", "CPU times change between runs"),
    (
        "rt_sigreturn",
        "strace reads the restored mask from the signal frame on the stack; \
         we show the registers",
    ),
    (
        "getppid",
        "the parent is the tracer: strace in one run, us in the other",
    ),
    (
        "getsockname",
        "the client's ephemeral port changes between runs",
    ),
    (
        "poll",
        "curl's timeout counts down with the time already spent",
    ),
    (
        "futex",
        "whether a waiter sleeps or finds the word changed is timing",
    ),
    (
        "rt_sigaction",
        "curl's threads ignore and restore SIGPIPE around their work: the \
         old action one of them reads depends on which ran first",
    ),
];

/// One program of the corpus.
struct Program {
    name: &'static str,
    argv: Vec<String>,
    /// Runs the same calls every time: every differing line must be a
    /// known difference. (The JVM's threads race: its calls vary.)
    deterministic: bool,
}

/// Lines of every `PREFIX.TID` file in `dir`, normalised.
fn lines_of(dir: &Path, prefix: &str) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(tid) = name.strip_prefix(&format!("{prefix}.")) {
            files.push((name.clone(), tid.to_owned()));
        }
    }
    assert!(
        !files.is_empty(),
        "no {prefix}.* files in {}",
        dir.display()
    );
    let tids: HashSet<String> = files.iter().map(|(_, tid)| tid.clone()).collect();
    let address = Regex::new(r"0x[0-9a-f]+").unwrap();
    let random = Regex::new(r#""(\\x[0-9a-f]{2})+""#).unwrap();
    let number = Regex::new(r"\b\d+\b").unwrap();
    // -y: sockets, pipes and anonymous inodes are named by inode number.
    let inode = Regex::new(r":\[\d+\]>").unwrap();
    let padding = Regex::new(r"\) +=").unwrap();
    let mut lines = Vec::new();
    for (file, _) in &files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        // Signals and exits are not calls.
        for line in text
            .lines()
            .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
        {
            let line = address.replace_all(line, "0xADDR");
            let line = inode.replace_all(&line, ":[INODE]>");
            let line = random.replace_all(&line, "\"RANDOM\"");
            let line = number.replace_all(&line, |c: &regex::Captures| {
                if tids.contains(&c[0]) {
                    "TID".to_owned()
                } else {
                    c[0].to_owned()
                }
            });
            // Alignment follows the length of what was normalised.
            lines.push(padding.replace_all(&line, ") =").into_owned());
        }
    }
    lines
}

fn count(lines: Vec<String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        *counts.entry(line).or_default() += 1;
    }
    counts
}

/// Our lines with no equal among strace's, by call name.
struct Comparison {
    ours: usize,
    identical: usize,
    differing: BTreeMap<String, Vec<String>>,
}

/// Traces `program` with strace and with us, both given `flags` too.
impl Comparison {
    /// How many lines were identical, and an example of each difference.
    fn report(&self, name: &str) -> String {
        let share = self.identical as f64 / self.ours as f64;
        let mut text = format!(
            "{name}: {} of {} calls identical ({:.1} %)\n",
            self.identical,
            self.ours,
            share * 100.0
        );
        for (call, lines) in &self.differing {
            text += &format!("  {call}: {} differ, e.g. {}\n", lines.len(), lines[0]);
        }
        text
    }

    /// Every call that differs is a known difference.
    fn assert_known(&self, known: &HashSet<&str>, report: &str) {
        let unknown: Vec<_> = self
            .differing
            .keys()
            .filter(|call| !known.contains(call.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "differences not known: {unknown:?}\n{report}"
        );
    }
}

fn compare(program: &Program, dir: &Path, flags: &[&str]) -> Comparison {
    let run = |tracer: &mut Command| {
        let status = tracer
            .args(&program.argv)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{}: {status}", program.name);
    };
    let suffix = flags.concat();
    let theirs = format!("{}{suffix}-strace", program.name);
    let ours = format!("{}{suffix}-ours", program.name);
    let strace = require_tool("strace");
    run(Command::new(strace)
        .args(flags)
        .args(["-ff", "-e", "trace=all", "-o", &theirs]));
    run(Command::new(BIN)
        .arg("trace")
        .args(flags)
        .args(["-ff", "-e", "trace=all", "-o", &ours]));
    let theirs = count(lines_of(dir, &theirs));
    let ours = count(lines_of(dir, &ours));
    let mut comparison = Comparison {
        ours: ours.values().sum(),
        identical: 0,
        differing: BTreeMap::new(),
    };
    for (line, n) in ours {
        let same = n.min(theirs.get(&line).copied().unwrap_or(0));
        comparison.identical += same;
        if same < n {
            let name = line.split('(').next().unwrap_or_default().to_owned();
            comparison.differing.entry(name).or_default().push(line);
        }
    }
    comparison
}

fn python3() -> String {
    let output = Command::new(require_tool("python3"))
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A configuration for `nginx -t` whose files are all in `dir`. nginx
/// creates its temporary directories when they are missing, so it is run
/// once untraced first: otherwise the first traced run's mkdir calls
/// succeed and the second's fail (EEXIST), and the comparison differs by
/// whichever tracer ran first.
fn nginx_config(dir: &Path, nginx: &str) -> String {
    let config = dir.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "worker_processes 1;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\n\
             events {{ worker_connections 16; }}\n\
             http {{ access_log off; client_body_temp_path {0}/body; \
             proxy_temp_path {0}/proxy; fastcgi_temp_path {0}/fastcgi; \
             uwsgi_temp_path {0}/uwsgi; scgi_temp_path {0}/scgi; \
             server {{ listen 127.0.0.1:{1}; }} }}\n",
            dir.display(),
            common::foreign::free_port()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let warm_up = Command::new(nginx)
        .args(["-t", "-c", &config, "-p"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(warm_up.status.success(), "{warm_up:?}");
    config
}

fn corpus(dir: &Path, server: &ServerProcess) -> Vec<Program> {
    let strings = |argv: &[&str]| argv.iter().map(|s| (*s).to_owned()).collect();
    let nginx = require_tool("nginx").display().to_string();
    let config = nginx_config(dir, &nginx);
    let prefix = dir.display().to_string();
    vec![
        Program {
            name: "ls",
            argv: strings(&["ls", "-la", "/etc"]),
            deterministic: true,
        },
        Program {
            name: "python3",
            argv: vec![python3(), "-c".into(), "pass".into()],
            deterministic: true,
        },
        Program {
            name: "sh",
            argv: strings(&["sh", "-c", "ls / | wc -l; sleep 0.1 & wait"]),
            deterministic: true,
        },
        Program {
            name: "curl",
            argv: strings(&["curl", "-s", &format!("http://{}/", server.addr)]),
            deterministic: true,
        },
        Program {
            name: "nginx",
            argv: vec![nginx, "-t".into(), "-c".into(), config, "-p".into(), prefix],
            deterministic: true,
        },
        Program {
            name: "java",
            argv: strings(&["java", "-version"]),
            deterministic: false,
        },
    ]
}

#[test]
fn our_lines_are_straces_for_95_percent_of_the_calls_of_real_programs() {
    let _guard = serial();
    for tool in ["strace", "curl", "nginx", "java"] {
        require_tool(tool);
    }
    let dir = tempdir();
    let server = ServerProcess::start(&[]);
    let known: HashSet<&str> = KNOWN_DIFFERENCES.iter().map(|(name, _)| *name).collect();
    let (mut ours, mut identical) = (0, 0);
    let mut report = String::new();
    for program in corpus(dir.path(), &server) {
        let comparison = compare(&program, dir.path(), &[]);
        let share = comparison.identical as f64 / comparison.ours as f64;
        report += &comparison.report(program.name);
        assert!(comparison.ours > 50, "too few calls traced:\n{report}");
        assert!(share >= 0.90, "{}: below 90 %:\n{report}", program.name);
        if program.deterministic {
            comparison.assert_known(&known, &report);
        }
        ours += comparison.ours;
        identical += comparison.identical;
    }
    let share = identical as f64 / ours as f64;
    eprintln!(
        "{report}all: {identical} of {ours} ({:.1} %)",
        share * 100.0
    );
    assert!(share >= 0.95, "{report}");
    server.stop();
}

#[test]
fn with_y_descriptors_name_what_they_refer_to_as_straces_do() {
    // strace -y reads /proc/PID/fd/N while the thread is stopped; so do we.
    let _guard = serial();
    require_tool("strace");
    let dir = tempdir();
    let server = ServerProcess::start(&[]);
    let strings = |argv: &[&str]| argv.iter().map(|s| (*s).to_owned()).collect();
    let programs = [
        ("cat", strings(&["cat", "/etc/hostname"])),
        ("ls", strings(&["ls", "-la", "/etc"])),
        ("sh", strings(&["sh", "-c", "ls / | wc -l"])),
        (
            "curl",
            strings(&["curl", "-s", &format!("http://{}/", server.addr)]),
        ),
    ];
    let known: HashSet<&str> = KNOWN_DIFFERENCES.iter().map(|(name, _)| *name).collect();
    let mut report = String::new();
    for (name, argv) in programs {
        let program = Program {
            name,
            argv,
            deterministic: true,
        };
        let comparison = compare(&program, dir.path(), &["-y"]);
        let share = comparison.identical as f64 / comparison.ours as f64;
        report += &comparison.report(name);
        assert!(share >= 0.95, "{report}");
        comparison.assert_known(&known, &report);
    }
    // What -y adds is there: a path read, a socket connected.
    let text = |prefix: &str| {
        let mut all = String::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with(prefix) {
                all += &std::fs::read_to_string(&path).unwrap();
            }
        }
        all
    };
    let cat = text("cat-y-ours");
    assert!(cat.contains("read(3</etc/hostname>, "), "{cat}");
    assert!(cat.contains("= 3</etc/hostname>"), "{cat}");
    let curl = text("curl-y-ours");
    assert!(curl.contains("<socket:["), "{curl}");
    eprintln!("{report}");
    server.stop();
}
