//! Files tracebench writes (issue 14, security and data loss): private,
//! never through a symlink we did not create, never into a directory
//! another user controls, and never half-written over what was there.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

/// The second user of the tests: nobody (65534), which owns nothing.
const OTHER_USER: u32 = 65534;

#[test]
fn a_recording_is_private_and_refuses_directories_others_control() {
    let _serial = serial();
    let base = tempdir();
    // runs/ planted as a symlink towards a directory of the victim's.
    let victim = base.path().join("etc");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, base.path().join("runs")).unwrap();
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "300ms"])
        .current_dir(base.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to write into runs"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing made there"
    );

    // A record directory another user owns, or anyone may write to.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(OTHER_USER), Some(OTHER_USER))
        .expect("chown needs root: the tests run as root");
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (dir, why) in [
        (&theirs, "belongs to uid 65534"),
        (&shared, "others may write to it"),
    ] {
        let output = Command::new(BIN)
            .args(["dash", "--headless-for", "300ms", "--record-dir"])
            .arg(dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }

    // A recording of our own: 0700, every file 0600.
    let run = base.path().join("mine");
    let output = Command::new(BIN)
        .args(["dash", "--headless-for", "500ms", "--record-dir"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(mode(&run), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&run).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(mode(&entry.path()), 0o600, "{:?}", entry.file_name());
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "latency.hlog",
            "load.csv",
            "output.log",
            "settings.json",
            "threads.json",
            "trace.tbt"
        ]
    );
}

#[test]
fn single_outputs_are_private_never_follow_a_symlink_and_replace_whole() {
    let _serial = serial();
    let base = tempdir();
    let victim = base.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Planted, as in /tmp, in a directory anyone may write to.
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("out");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // trace -o, trace --write: refused through the symlink.
    for flag in ["-o", "--write"] {
        let output = Command::new(BIN)
            .args(["trace", flag])
            .arg(&link)
            .args(["--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag}: {stderr}");
        assert!(stderr.contains("symlink"), "{flag}: {stderr}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // A trace file of our own is private.
    let trace = base.path().join("t.tbt");
    let output = Command::new(BIN)
        .args(["trace", "--write"])
        .arg(&trace)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(mode(&trace), 0o600);
    // export: refused through the symlink; a real output is private and
    // replaces an older file whole.
    let output = Command::new(BIN)
        .args(["export", "--jsonl"])
        .arg(&link)
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let jsonl = base.path().join("t.jsonl");
    std::fs::write(&jsonl, b"old").unwrap();
    std::fs::set_permissions(&jsonl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(BIN)
        .args(["export", "--jsonl"])
        .arg(&jsonl)
        .arg(&trace)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert!(text.starts_with('{') && text.contains("\"type\""), "{text}");
    assert_eq!(mode(&jsonl), 0o600);
    // No temporary is left beside it.
    let names: Vec<String> = std::fs::read_dir(base.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tracebench-")),
        "{names:?}"
    );
}

/// A 256 KiB tmpfs mounted on a fresh directory for the test's life (the
/// tests run as root in CI, which may mount).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempdir();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount: the tests run as root");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_names_the_file_fails_the_run_and_lists_nothing_as_whole() {
    // Issue 14: dash said "trace file is incomplete" yet exited 0 and
    // listed its cut files; load --hlog exited 0 with an empty log.
    let _serial = serial();
    let disk = SmallDisk::mount();
    let run = disk.path().join("run");
    let output = Command::new(BIN)
        .args([
            "dash",
            "--headless-for",
            "3s",
            "--delay",
            "0ms",
            "--record-dir",
        ])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(stdout.contains("incompletely"), "{stdout}");
    assert!(!stdout.contains("(trace.tbt, latency.hlog"), "{stdout}");

    let server = ServerProcess::start(&["--delay", "0ms"]);
    let hlog = disk.path().join("full.hlog");
    let output = Command::new(BIN)
        .args([
            "load",
            &format!("http://{}/", server.addr),
            "-z",
            "2s",
            "--hlog",
        ])
        .arg(&hlog)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("full.hlog"), "{stderr}");
}

#[test]
fn every_output_on_a_full_disk_names_its_file_and_fails() {
    // Issue 14 item 4, outside the dashboard: the CSV, the .hgrm, a merge,
    // strace text and a trace file each name the file the disk refused.
    let _serial = serial();
    let disk = SmallDisk::mount();
    // Fill it, so even a small output cannot fit.
    let filler = disk.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 * 1024]);
    let server = ServerProcess::start(&["--delay", "0ms"]);
    let url = format!("http://{}/", server.addr);
    let log = tempdir();
    let hlog = log.path().join("ok.hlog");
    let made = Command::new(BIN)
        .args(["load", &url, "-n", "50", "--hlog"])
        .arg(&hlog)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec![
                "load".into(),
                url.clone().into(),
                "-n".into(),
                "50".into(),
                "--csv".into(),
                disk.path().join("l.csv").into(),
            ],
            "l.csv",
        ),
        (
            vec![
                "load".into(),
                url.clone().into(),
                "-n".into(),
                "50".into(),
                "--hgrm".into(),
                disk.path().join("l.hgrm").into(),
            ],
            "l.hgrm",
        ),
        (
            vec![
                "merge".into(),
                hlog.clone().into(),
                hlog.clone().into(),
                "-o".into(),
                disk.path().join("m.hlog").into(),
            ],
            "m.hlog",
        ),
        (
            vec![
                "trace".into(),
                "-o".into(),
                disk.path().join("t.txt").into(),
                "ls".into(),
                "/".into(),
            ],
            "t.txt",
        ),
        (
            vec![
                "trace".into(),
                "--write".into(),
                disk.path().join("t.tbt").into(),
                "ls".into(),
                "/".into(),
            ],
            "t.tbt",
        ),
    ];
    for (args, name) in cases {
        let output = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: {stderr}");
        let said = stderr
            .lines()
            .find(|l| l.contains("No space left on device"))
            .unwrap_or_else(|| panic!("{name}: {stderr}"));
        assert!(said.contains(name), "{name}: {said}");
    }
}
