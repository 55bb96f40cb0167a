//! futex(2): the operation names and the arguments each command reads.

use super::text::{hex, int, timespec};
use tracebench_trace::syscall::is_futex_wait;

/// `FUTEX_WAIT_PRIVATE`, `FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME`, …
pub fn futex_op(op: u64) -> String {
    let op = op as u32 as i32;
    let command = op & libc::FUTEX_CMD_MASK;
    let name = match command {
        libc::FUTEX_WAIT => "FUTEX_WAIT",
        libc::FUTEX_WAKE => "FUTEX_WAKE",
        libc::FUTEX_FD => "FUTEX_FD",
        libc::FUTEX_REQUEUE => "FUTEX_REQUEUE",
        libc::FUTEX_CMP_REQUEUE => "FUTEX_CMP_REQUEUE",
        libc::FUTEX_WAKE_OP => "FUTEX_WAKE_OP",
        libc::FUTEX_LOCK_PI => "FUTEX_LOCK_PI",
        libc::FUTEX_UNLOCK_PI => "FUTEX_UNLOCK_PI",
        libc::FUTEX_TRYLOCK_PI => "FUTEX_TRYLOCK_PI",
        libc::FUTEX_WAIT_BITSET => "FUTEX_WAIT_BITSET",
        libc::FUTEX_WAKE_BITSET => "FUTEX_WAKE_BITSET",
        libc::FUTEX_WAIT_REQUEUE_PI => "FUTEX_WAIT_REQUEUE_PI",
        libc::FUTEX_CMP_REQUEUE_PI => "FUTEX_CMP_REQUEUE_PI",
        13 => "FUTEX_LOCK_PI2",
        _ => return format!("{op:#x}"),
    };
    let mut text = name.to_owned();
    if op & libc::FUTEX_PRIVATE_FLAG != 0 {
        text += "_PRIVATE";
    }
    if op & libc::FUTEX_CLOCK_REALTIME != 0 {
        text += "|FUTEX_CLOCK_REALTIME";
    }
    text
}

/// FUTEX_WAKE_OP's encoded operation, as strace writes it:
/// `FUTEX_OP_SET<<28|0<<12|FUTEX_OP_CMP_GT<<24|0x1`.
pub(super) fn futex_wake_op(encoded: u32) -> String {
    const OPS: [&str; 5] = [
        "FUTEX_OP_SET",
        "FUTEX_OP_ADD",
        "FUTEX_OP_OR",
        "FUTEX_OP_ANDN",
        "FUTEX_OP_XOR",
    ];
    const CMPS: [&str; 6] = [
        "FUTEX_OP_CMP_EQ",
        "FUTEX_OP_CMP_NE",
        "FUTEX_OP_CMP_LT",
        "FUTEX_OP_CMP_LE",
        "FUTEX_OP_CMP_GT",
        "FUTEX_OP_CMP_GE",
    ];
    let op = (encoded >> 28) & 0x7;
    let shift_flag = if encoded & (8 << 28) != 0 {
        "FUTEX_OP_OPARG_SHIFT<<28|"
    } else {
        ""
    };
    let cmp = (encoded >> 24) & 0xf;
    let oparg = (encoded >> 12) & 0xfff;
    let cmparg = encoded & 0xfff;
    let op = OPS
        .get(op as usize)
        .map_or_else(|| op.to_string(), |s| (*s).to_owned());
    let cmp = CMPS
        .get(cmp as usize)
        .map_or_else(|| cmp.to_string(), |s| (*s).to_owned());
    // C's %#x, as strace prints them: 0 has no 0x.
    let c_hex = |v: u32| match v {
        0 => "0".to_owned(),
        v => format!("{v:#x}"),
    };
    format!(
        "{shift_flag}{op}<<28|{}<<12|{cmp}<<24|{}",
        c_hex(oparg),
        c_hex(cmparg)
    )
}

/// futex's arguments: only those the command reads, val2 (in the timeout
/// register) and val3 as the 32-bit numbers they are, as strace shows them.
pub(super) fn entry_args(a: &[u64; 6], data: &[u8]) -> String {
    let command = (a[1] as i32) & libc::FUTEX_CMD_MASK;
    let op = futex_op(a[1]);
    if is_futex_wait(a[1]) && command != libc::FUTEX_WAIT_BITSET {
        format!(
            "{}, {op}, {}, {}",
            hex(a[0]),
            int(a[2]),
            timespec(data, a[3])
        )
    } else if command == libc::FUTEX_WAIT_BITSET {
        let bitset = if a[5] as u32 == u32::MAX {
            "FUTEX_BITSET_MATCH_ANY".to_owned()
        } else {
            hex(a[5])
        };
        format!(
            "{}, {op}, {}, {}, {bitset}",
            hex(a[0]),
            int(a[2]),
            timespec(data, a[3])
        )
    } else {
        // As strace shows each command: only the arguments it
        // reads, val2 (in the timeout register) and val3 as the
        // 32-bit numbers they are.
        let (uaddr, val, val2, uaddr2, val3) =
            (hex(a[0]), int(a[2]), a[3] as u32, hex(a[4]), a[5] as u32);
        match command {
            libc::FUTEX_WAKE | libc::FUTEX_FD => format!("{uaddr}, {op}, {val}"),
            libc::FUTEX_UNLOCK_PI | libc::FUTEX_TRYLOCK_PI => format!("{uaddr}, {op}"),
            libc::FUTEX_LOCK_PI | 13 => {
                format!("{uaddr}, {op}, {}", timespec(data, a[3]))
            }
            libc::FUTEX_WAKE_BITSET => {
                let bitset = if val3 == u32::MAX {
                    "FUTEX_BITSET_MATCH_ANY".to_owned()
                } else {
                    format!("{val3:#x}")
                };
                format!("{uaddr}, {op}, {val}, NULL, NULL, {bitset}")
            }
            libc::FUTEX_REQUEUE => format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}"),
            libc::FUTEX_CMP_REQUEUE | libc::FUTEX_CMP_REQUEUE_PI => {
                format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}, {val3}")
            }
            libc::FUTEX_WAKE_OP => format!(
                "{uaddr}, {op}, {val}, {val2}, {uaddr2}, {}",
                futex_wake_op(val3)
            ),
            libc::FUTEX_WAIT_REQUEUE_PI => {
                format!("{uaddr}, {op}, {val}, {}, {uaddr2}", timespec(data, a[3]))
            }
            _ => format!("{uaddr}, {op}, {val}, {val2}, {uaddr2}, {val3}"),
        }
    }
}
