//! A version 1 trace file, written by the tracer before the format gained
//! the capture backend and the per-event data marker, still reads: every
//! event, with its captured bytes, as made by the ptrace backend.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

use std::path::Path;

use tracebench_trace::format::{OLDEST_VERSION, TraceReader, VERSION, read_index};
use tracebench_trace::{Backend, DataCapture, EventKind};

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1.tbt"
    ))
}

#[test]
fn a_version_1_file_reads_whole_as_a_ptrace_trace() {
    let bytes = std::fs::read(fixture()).unwrap();
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        1,
        "the fixture is v1"
    );
    const { assert!(OLDEST_VERSION == 1 && VERSION > 1) };
    let mut reader = TraceReader::open(fixture()).unwrap();
    assert_eq!(reader.header().backend, Backend::Ptrace);
    assert_eq!(reader.header().arch, "x86_64");
    assert!(reader.header().command.iter().any(|w| w == "serve"));
    let events: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert!(!reader.truncated());
    let index = read_index(fixture()).unwrap().expect("a finished file");
    let indexed = index.events();
    assert!(index.lost.is_empty());
    assert_eq!(events.len() as u64, indexed);
    assert!(events.len() > 1000, "{} events", events.len());
    let mut with_data = 0;
    for event in &events {
        match &event.kind {
            EventKind::SyscallEntry {
                data, data_capture, ..
            }
            | EventKind::SyscallExit {
                data, data_capture, ..
            } => {
                assert_eq!(*data_capture, DataCapture::Captured);
                with_data += usize::from(!data.is_empty());
            }
            EventKind::Sampled { .. } => panic!("v1 had no sampled events"),
            _ => {}
        }
    }
    // The requests the server read and the answers it wrote.
    assert!(with_data > 100, "{with_data} events with captured bytes");
    assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
}
