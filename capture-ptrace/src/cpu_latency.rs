//! CPU latency QoS: asking the kernel to keep idle CPUs out of deep idle
//! states while we trace.
//!
//! Every ptrace stop is two wake-ups: the stopping thread wakes the tracer,
//! and the tracer's `PTRACE_CONT` wakes the thread. When the woken task's
//! CPU is idle in `HLT` (or deeper), the wake-up is an inter-processor
//! interrupt and an idle exit. On a virtual machine that is a VM exit on
//! both sides, several times the cost of the stop itself; measured on this
//! project's 2-core VM, it is most of what a traced accept4 costs. An idle
//! CPU that *polls* (cpuidle's `POLL` state) instead sees the wake-up as a
//! flag in memory: no interrupt, no exit.
//!
//! The kernel's interface for that is a CPU latency QoS request: while a
//! process holds `/dev/cpu_dma_latency` open with a value written to it,
//! cpuidle picks no state whose exit latency exceeds that many
//! microseconds. Zero leaves only polling. Closing the file (on drop, or
//! when the process dies in any way) withdraws the request, so a crashed
//! tracer cannot leave the machine polling. See the kernel's
//! Documentation/power/pm_qos_interface.rst.
//!
//! The cost: while the request is held, idle CPUs spin instead of sleeping
//! (power, and on a VM the host's CPU time). Idle time stays idle time: a
//! runnable task takes the CPU at once, and no process is charged for it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

/// The device through which user space makes a CPU latency request.
const DEVICE: &str = "/dev/cpu_dma_latency";

/// A held request that idle CPUs wake within `max_us` microseconds;
/// withdrawn when dropped.
#[derive(Debug)]
pub struct CpuLatencyRequest {
    /// Open for as long as the request stands.
    _device: File,
}

impl CpuLatencyRequest {
    /// Asks that idle CPUs wake within `max_us` microseconds (0: poll).
    /// Fails where the device is absent or not writable (it is root's).
    pub fn new(max_us: i32) -> io::Result<CpuLatencyRequest> {
        let mut device = OpenOptions::new().write(true).open(DEVICE)?;
        // The device takes a raw native-endian s32 (or its value in hex
        // text); a short write would be refused whole.
        device.write_all(&max_us.to_ne_bytes())?;
        Ok(CpuLatencyRequest { _device: device })
    }

    /// The request that matters for tracing: idle CPUs poll.
    pub fn poll_idle() -> io::Result<CpuLatencyRequest> {
        CpuLatencyRequest::new(0)
    }
}

/// The latency in microseconds that the kernel currently grants, i.e. the
/// strictest request held by any process (`i32::MAX`-ish when none is).
pub fn current_limit_us() -> io::Result<i32> {
    use std::io::Read;
    let mut device = File::open(DEVICE)?;
    let mut value = [0u8; 4];
    device.read_exact(&mut value)?;
    Ok(i32::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_holds_while_alive_and_is_withdrawn_on_drop() {
        // Needs root, as the tracer's default does; CI runs as root.
        let before = current_limit_us().expect("read /dev/cpu_dma_latency (run as root)");
        let request = CpuLatencyRequest::new(3).expect("write /dev/cpu_dma_latency");
        let held = current_limit_us().unwrap();
        assert!(held <= 3, "limit {held} us while a 3 us request is held");
        drop(request);
        let after = current_limit_us().unwrap();
        // Other processes may hold requests of their own: compare with what
        // stood before ours.
        assert_eq!(after, before, "the request outlived its guard");
    }
}
