//! Every file tracebench writes goes through here, so that, as git and
//! ssh do for theirs, none is ever:
//!
//! - readable by others: recordings hold the program's output and the
//!   first bytes of every read (request lines, bodies), so files are
//!   created 0600 and directories 0700 (the umask can only narrow that);
//! - written through a symlink we did not create: a recording's files are
//!   opened relative to a handle on its directory with `O_NOFOLLOW |
//!   O_EXCL`, so a name swapped for a symlink mid-run, or the directory
//!   itself renamed, cannot redirect them; a directory we did not create
//!   is refused unless we own it and no one else may write to it;
//! - half-written over what was there: a single output (`-o`, `--csv`…)
//!   is written to a private temporary beside it and renamed over its
//!   name only once whole, so a full disk or an error leaves the old file
//!   (which may be one of the inputs) as it was.
//!
//! `-` as an output name means standard output, as in every Unix tool
//! ([`Output`]); as an input, standard input ([`read_input`],
//! [`InputFile`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

/// Why a file or directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The system refused. (The reason is part of the message, not a
    /// source: an error chain would print it twice.)
    #[error("cannot write {}: {error}", path.display())]
    Io {
        /// What we tried to write.
        path: PathBuf,
        /// Why not.
        error: io::Error,
    },
    /// A directory we are asked to write into is not safe to write into.
    #[error("refusing to write into {}: {why}", path.display())]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

fn io_error(path: &Path) -> impl Fn(rustix::io::Errno) -> FileError + '_ {
    move |errno| FileError::Io {
        path: path.to_path_buf(),
        error: errno.into(),
    }
}

/// The modes of what we create.
const PRIVATE_FILE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

/// A directory a run writes its files into, held open: every file is
/// created relative to this handle, whatever happens to its path.
#[derive(Debug)]
pub struct OutputDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl OutputDir {
    /// Creates `path` (0700; its missing parents too) or takes the
    /// existing directory there if we own it and only we may write to it.
    /// A symlink is refused.
    pub fn create(path: &Path) -> Result<OutputDir, FileError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_parents(parent)?;
        }
        match rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(PRIVATE_DIR)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(errno) => return Err(io_error(path)(errno)),
        }
        OutputDir::open(path)
    }

    /// Opens the existing directory `path` (never through a symlink) and
    /// checks that it is ours and not writable by others.
    pub fn open(path: &Path) -> Result<OutputDir, FileError> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => FileError::Unsafe {
                path: path.to_path_buf(),
                why: "it is a symlink or not a directory".into(),
            },
            other => io_error(path)(other),
        })?;
        check_ours(&fd, path)?;
        Ok(OutputDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory holds nothing (a recording is never written
    /// over; [`OutputDir::create_file`] refuses any existing name anyway).
    pub fn is_empty(&self) -> Result<bool, FileError> {
        let mut entries = std::fs::read_dir(&self.path).map_err(|error| FileError::Io {
            path: self.path.clone(),
            error,
        })?;
        Ok(entries.next().is_none())
    }

    /// Creates the new file `name` in the directory (0600), failing if the
    /// name exists, whatever it is (a planted symlink included).
    pub fn create_file(&self, name: &str) -> Result<File, FileError> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(PRIVATE_FILE),
        )
        .map_err(io_error(&path))?;
        Ok(File::from(fd))
    }

    /// Writes the whole of `contents` into the new file `name`.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<(), FileError> {
        let mut file = self.create_file(name)?;
        file.write_all(contents)
            .and_then(|()| file.sync_data())
            .map_err(|error| FileError::Io {
                path: self.path.join(name),
                error,
            })
    }

    /// Creates the new subdirectory `name` (0700) and returns it.
    pub fn create_dir(&self, name: &str) -> Result<OutputDir, FileError> {
        let path = self.path.join(name);
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(PRIVATE_DIR))
            .map_err(io_error(&path))?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(&path))?;
        Ok(OutputDir { fd, path })
    }
}

/// Creates the missing directories of `path` (0700 each); existing ones
/// are left as they are.
fn create_parents(path: &Path) -> Result<(), FileError> {
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR);
    builder
        .recursive(true)
        .create(path)
        .map_err(|error| FileError::Io {
            path: path.to_path_buf(),
            error,
        })
}

/// Refuses a directory someone else owns, or that others may write to
/// (they could plant or swap names in it), as ssh and git do. The sticky
/// bit (/tmp) does not make another's directory ours.
fn check_ours(fd: &OwnedFd, path: &Path) -> Result<(), FileError> {
    let stat = rustix::fs::fstat(fd).map_err(io_error(path))?;
    let euid = rustix::process::geteuid().as_raw();
    let unsafe_dir = |why: String| FileError::Unsafe {
        path: path.to_path_buf(),
        why,
    };
    if stat.st_uid != euid {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to us (uid {euid})",
            stat.st_uid
        )));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others may write to it (mode {:o}); chmod go-w it",
            stat.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// A file written as it goes, for readers that follow it while it grows
/// (`trace -o`, `-w`, as strace's `-o`: `tail -f` works): created 0600 or
/// truncated, never through a symlink someone else could have planted.
/// Devices and pipes are fine (`-o /dev/null`, `-o /dev/stderr`: a
/// symlink of the system's, in a directory only root may change). `-` is
/// standard output.
pub fn create_streamed(path: &Path) -> Result<File, FileError> {
    if path == Path::new("-") {
        // Standard output, through a descriptor of its own that closing
        // this file leaves open.
        use std::os::fd::AsFd;
        let stdout = io::stdout().as_fd().try_clone_to_owned();
        return stdout.map(File::from).map_err(|error| FileError::Io {
            path: PathBuf::from("standard output"),
            error,
        });
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(PRIVATE_FILE);
    let fd = match rustix::fs::openat(CWD, path, flags | OFlags::NOFOLLOW, mode) {
        Err(rustix::io::Errno::LOOP) if trusted_symlink(path) => {
            rustix::fs::openat(CWD, path, flags, mode)
        }
        Err(rustix::io::Errno::LOOP) => {
            return Err(FileError::Unsafe {
                path: path.to_path_buf(),
                why: "it is a symlink that we or root did not make in a directory only we or root may change".into(),
            });
        }
        other => other,
    }
    .map_err(io_error(path))?;
    Ok(File::from(fd))
}

/// Whether the symlink `path` is one nobody else could have planted: it
/// and its directory belong to us or to root, and nobody else may write to
/// that directory (the rule of fs.protected_symlinks, and of ssh).
fn trusted_symlink(path: &Path) -> bool {
    let euid = rustix::process::geteuid().as_raw();
    let ours = |uid: u32| uid == euid || uid == 0;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let link = rustix::fs::lstat(path);
    let parent = rustix::fs::stat(dir);
    match (link, parent) {
        (Ok(link), Ok(parent)) => {
            ours(link.st_uid) && ours(parent.st_uid) && parent.st_mode & 0o022 == 0
        }
        _ => false,
    }
}

/// An output named on the command line: standard output for `-`, else an
/// [`OutputFile`] (whole or not at all).
pub enum Output {
    /// `-`.
    Stdout(io::Stdout),
    /// A file.
    File(io::BufWriter<OutputFile>),
}

impl Output {
    /// Starts writing `path` (`-`: standard output).
    pub fn create(path: &Path) -> Result<Output, FileError> {
        if path == Path::new("-") {
            return Ok(Output::Stdout(io::stdout()));
        }
        Ok(Output::File(io::BufWriter::new(OutputFile::create(path)?)))
    }

    /// Writes the rest out and, for a file, gives it its name.
    pub fn finish(self) -> Result<(), FileError> {
        match self {
            Output::Stdout(mut out) => out.flush().map_err(|error| FileError::Io {
                path: PathBuf::from("standard output"),
                error,
            }),
            Output::File(out) => {
                let path = out.get_ref().path().to_path_buf();
                out.into_inner()
                    .map_err(|e| FileError::Io {
                        path,
                        error: e.into_error(),
                    })?
                    .commit()
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(out) => out.write(buf),
            Output::File(out) => out.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(out) => out.flush(),
            Output::File(out) => out.flush(),
        }
    }
}

/// Reads the whole of the input file `path` (`-`: standard input, up to
/// `limit`), refusing what is not a regular file (a FIFO, /dev/zero:
/// endless) and what is larger than `limit` bytes, rather than growing
/// without bound.
pub fn read_input(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let too_large = || io::Error::other(format!("larger than {limit} bytes"));
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin().lock().take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        return Ok(bytes);
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// An input that may be read more than once, or at an offset: the file
/// itself, or for `-` standard input copied to a private temporary file
/// (0600, removed when this is dropped), so a pipe can feed a reader that
/// seeks, as `perf report -i -` reads one.
#[derive(Debug)]
pub enum InputFile {
    /// A file named on the command line.
    Named(PathBuf),
    /// Standard input, as it was copied.
    Stdin(tempfile::TempPath),
}

impl InputFile {
    /// `path`, or for `-` standard input copied whole, once its first
    /// bytes are `magic` (so that a wrong or endless stream is refused
    /// before it fills the disk).
    pub fn open(path: &Path, magic: &[u8]) -> io::Result<InputFile> {
        use std::io::Read;
        if path != Path::new("-") {
            return Ok(InputFile::Named(path.to_path_buf()));
        }
        let mut stdin = io::stdin().lock();
        let mut first = vec![0; magic.len()];
        stdin.read_exact(&mut first).map_err(|_| bad_magic())?;
        if first != magic {
            return Err(bad_magic());
        }
        // Named so that a message about it says where it came from.
        let mut copy = tempfile::Builder::new()
            .prefix("tracebench-stdin-")
            .tempfile()?;
        copy.write_all(&first)?;
        io::copy(&mut stdin, &mut copy)?;
        copy.flush()?;
        Ok(InputFile::Stdin(copy.into_temp_path()))
    }

    /// Where to read it from.
    pub fn path(&self) -> &Path {
        match self {
            InputFile::Named(path) => path,
            InputFile::Stdin(copy) => copy,
        }
    }
}

fn bad_magic() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "standard input does not start as the file expected (bad magic)",
    )
}

/// One output file: written to a private temporary beside `path`, then
/// renamed over it by [`OutputFile::commit`]. Dropped without a commit,
/// the temporary is removed and `path` is as it was.
#[derive(Debug)]
pub struct OutputFile {
    file: Option<File>,
    temporary: PathBuf,
    path: PathBuf,
}

impl OutputFile {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> Result<OutputFile, FileError> {
        let name = path.file_name().ok_or_else(|| FileError::Unsafe {
            path: path.to_path_buf(),
            why: "not a file name".into(),
        })?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            return Err(FileError::Unsafe {
                path: path.to_path_buf(),
                why: "it exists and is not a regular file (a symlink, a directory…)".into(),
            });
        }
        let mut attempt = 0u32;
        loop {
            let temporary_name = format!(
                ".{}.tracebench-{}-{attempt}",
                name.to_string_lossy(),
                std::process::id()
            );
            let temporary = dir.map_or_else(
                || PathBuf::from(&temporary_name),
                |d| d.join(&temporary_name),
            );
            match rustix::fs::openat(
                CWD,
                &temporary,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(PRIVATE_FILE),
            ) {
                Ok(fd) => {
                    return Ok(OutputFile {
                        file: Some(File::from(fd)),
                        temporary,
                        path: path.to_path_buf(),
                    });
                }
                Err(rustix::io::Errno::EXIST) if attempt < 100 => attempt += 1,
                Err(errno) => return Err(io_error(path)(errno)),
            }
        }
    }

    /// The name it will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the rest out, then gives the file its name: whole, or not at
    /// all.
    pub fn commit(mut self) -> Result<(), FileError> {
        let file = self.file.take().expect("a file until committed");
        let error = |error| FileError::Io {
            path: self.path.clone(),
            error,
        };
        file.sync_data().map_err(error)?;
        drop(file);
        rustix::fs::renameat(CWD, &self.temporary, CWD, &self.path)
            .map_err(|errno| error(errno.into()))?;
        // Renamed: nothing left to remove.
        self.temporary = PathBuf::new();
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .as_mut()
            .expect("a file until committed")
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("a file until committed").flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            let _ = rustix::fs::unlinkat(CWD, &self.temporary, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_run_directory_and_its_files_are_private_and_new() {
        let base = tempfile::tempdir().unwrap();
        let run = base.path().join("runs").join("one");
        let dir = OutputDir::create(&run).unwrap();
        assert_eq!(mode(&run), 0o700);
        assert!(dir.is_empty().unwrap());
        dir.write_file("trace.tbt", b"data").unwrap();
        assert_eq!(mode(&run.join("trace.tbt")), 0o600);
        // A name that exists is never written over.
        assert!(dir.create_file("trace.tbt").is_err());
        assert_eq!(std::fs::read(run.join("trace.tbt")).unwrap(), b"data");
        let sub = dir.create_dir("mode-2").unwrap();
        sub.write_file("x", b"").unwrap();
        assert_eq!(mode(&run.join("mode-2")), 0o700);
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = OutputDir::create(&base.path().join("run")).unwrap();
        // Planted where the run will write its next file.
        std::os::unix::fs::symlink(&victim, base.path().join("run/threads.json")).unwrap();
        assert!(dir.write_file("threads.json", b"{}").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // The run directory itself swapped for a symlink mid-run: files
        // still go into the directory we created, not where it points.
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(base.path().join("run"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.path().join("run")).unwrap();
        dir.write_file("latency.hlog", b"log").unwrap();
        assert!(base.path().join("moved/latency.hlog").exists());
        assert!(!elsewhere.join("latency.hlog").exists());
        // And a symlink is not taken for a run directory.
        let error = OutputDir::open(&base.path().join("run")).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
    }

    #[test]
    fn a_directory_others_may_write_or_another_owns_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = OutputDir::create(&shared).unwrap_err();
        assert!(
            error.to_string().contains("others may write to it"),
            "{error}"
        );
        // Another user's (the tests run as root in CI, which may chown).
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))
            .expect("chown needs root: the tests run as root");
        let error = OutputDir::open(&theirs).unwrap_err();
        assert!(
            error.to_string().contains("belongs to uid 65534"),
            "{error}"
        );
    }

    #[test]
    fn a_streamed_output_takes_the_systems_devices_not_a_planted_link() {
        // strace users write -o /dev/null and -o /dev/stderr.
        create_streamed(Path::new("/dev/null")).unwrap();
        create_streamed(Path::new("/dev/stderr")).unwrap();
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let link = shared.join("out");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = create_streamed(&link).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let fresh = base.path().join("t.txt");
        create_streamed(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn an_endless_or_oversized_input_is_refused() {
        let error = read_input(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let base = tempfile::tempdir().unwrap();
        let big = base.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let error = read_input(&big, 1024).unwrap_err();
        assert!(
            error.to_string().contains("larger than 1024 bytes"),
            "{error}"
        );
        assert_eq!(read_input(&big, 4096).unwrap().len(), 2048);
    }

    #[test]
    fn an_output_file_replaces_its_name_whole_or_not_at_all() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("out.csv");
        std::fs::write(&path, b"old").unwrap();
        // Dropped before its commit (an error on the way): the old file
        // stays, and no temporary is left.
        let mut out = OutputFile::create(&path).unwrap();
        out.write_all(b"half").unwrap();
        drop(out);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 1);
        let mut out = OutputFile::create(&path).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        // A symlink at the name is refused, its target untouched.
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = base.path().join("link.csv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = OutputFile::create(&link).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
