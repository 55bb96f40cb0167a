//! Finding the kernel's tracepoints: their ids, read from tracefs, and a
//! check that the fields this backend reads sit where it reads them (a
//! kernel that moved one is refused with a clear message, never misread).

use std::path::{Path, PathBuf};

use tracebench_trace::{Backend, CaptureError};

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn unavailable(why: String) -> CaptureError {
    CaptureError::Unavailable {
        backend: Backend::Perf,
        why,
    }
}

/// Where tracefs is mounted; mounts it at /sys/kernel/tracing when it is
/// not and we may (root), as `perf` does.
pub fn root() -> Result<PathBuf, CaptureError> {
    for mount in MOUNTS {
        let events = Path::new(mount).join("events");
        match std::fs::metadata(&events) {
            Ok(meta) if meta.is_dir() => return Ok(PathBuf::from(mount)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(unavailable(format!(
                    "cannot read {}: tracefs is root's; run as root, or with \
                     CAP_DAC_READ_SEARCH besides CAP_BPF and CAP_PERFMON",
                    events.display()
                )));
            }
            _ => {}
        }
    }
    // SAFETY: mount(2) with NUL-terminated constant strings and no data.
    let mounted = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    } == 0;
    if mounted && Path::new(MOUNTS[0]).join("events").is_dir() {
        return Ok(PathBuf::from(MOUNTS[0]));
    }
    Err(unavailable(format!(
        "tracefs is not mounted and could not be mounted ({}); as root: mount -t tracefs nodev /sys/kernel/tracing",
        std::io::Error::last_os_error()
    )))
}

/// A tracepoint's id, checked against the fields we read: `(name, offset)`
/// pairs that its format must have.
pub fn tracepoint(
    tracefs: &Path,
    system: &str,
    name: &str,
    fields: &[(&str, usize)],
) -> Result<u64, CaptureError> {
    Ok(tracepoint_and_format(tracefs, system, name, fields)?.0)
}

/// A syscall tracepoint (`syscalls:sys_enter_NAME`): its id and how many
/// 8-byte argument fields follow the syscall number.
pub fn syscall_tracepoint(tracefs: &Path, name: &str) -> Result<(u64, usize), CaptureError> {
    let (id, format) = tracepoint_and_format(tracefs, "syscalls", name, &[("__syscall_nr", 8)])?;
    let args = format
        .lines()
        .filter_map(|line| {
            line.split(';')
                .find_map(|p| p.trim().strip_prefix("offset:"))
        })
        .filter_map(|offset| offset.parse::<usize>().ok())
        .filter(|&offset| offset >= 16)
        .count();
    Ok((id, args.min(6)))
}

/// Whether `system:name` has `field` at `offset` (a field newer kernels
/// added).
pub fn has_field(tracefs: &Path, system: &str, name: &str, field: &str, offset: usize) -> bool {
    tracepoint_and_format(tracefs, system, name, &[(field, offset)]).is_ok()
}

fn tracepoint_and_format(
    tracefs: &Path,
    system: &str,
    name: &str,
    fields: &[(&str, usize)],
) -> Result<(u64, String), CaptureError> {
    let dir = tracefs.join("events").join(system).join(name);
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => unavailable(format!(
                "cannot read {}: tracefs is root's (run as root)",
                dir.join(file).display()
            )),
            _ => unavailable(format!(
                "no tracepoint {system}:{name} in this kernel ({}: {e})",
                dir.display()
            )),
        })
    };
    let id = read("id")?
        .trim()
        .parse()
        .map_err(|_| unavailable(format!("{system}:{name} has an unreadable id")))?;
    let format = read("format")?;
    for &(field, offset) in fields {
        if field_offset(&format, field) != Some(offset) {
            return Err(unavailable(format!(
                "{system}:{name} has no field {field} at offset {offset} in this kernel; its layout changed"
            )));
        }
    }
    Ok((id, format))
}

/// The offset of `field` in a tracepoint's `format` text.
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let declaration = line.strip_prefix("field:")?.split(';').next()?;
        let name = declaration.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|offset| offset.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_field_offsets_from_a_format() {
        let format = "name: sys_enter\nID: 443\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:long id;\toffset:8;\tsize:8;\tsigned:1;\n\
            \tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;\n";
        assert_eq!(field_offset(format, "id"), Some(8));
        assert_eq!(field_offset(format, "args"), Some(16));
        assert_eq!(field_offset(format, "common_type"), Some(0));
        assert_eq!(field_offset(format, "ret"), None);
    }
}
