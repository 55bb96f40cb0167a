//! The trace file reader against hostile input: random bytes, random cuts
//! and random damage give a clean error or a clean early end, never a
//! panic, and a cut never invents an event.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]

use proptest::prelude::*;
use tracebench_trace::format::{Header, TraceReader, TraceWriter};
use tracebench_trace::{Backend, Creation, DataCapture, Event, EventKind, EventSink, ExitStatus};

fn event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        (
            0u32..450,
            any::<[u64; 6]>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(nr, args, data)| EventKind::SyscallEntry {
                nr,
                args,
                data,
                data_capture: DataCapture::Captured
            }),
        (
            0u32..450,
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(nr, ret, data)| EventKind::SyscallExit {
                nr,
                ret,
                data,
                data_capture: DataCapture::Partial
            }),
        (any::<i32>(), any::<i32>(), 0..3u8).prop_map(|(child_tid, child_pid, c)| {
            EventKind::Spawned {
                child_tid,
                child_pid,
                creation: [Creation::Thread, Creation::Process, Creation::Vfork][c as usize],
            }
        }),
        any::<i32>().prop_map(|code| EventKind::Exited {
            status: ExitStatus::Code(code)
        }),
        (1..65i32).prop_map(|signal| EventKind::Exited {
            status: ExitStatus::Signal(signal)
        }),
        (1..65i32, proptest::collection::vec(any::<u8>(), 0..130))
            .prop_map(|(signal, info)| EventKind::Signal { signal, info }),
        any::<i32>().prop_map(|former_tid| EventKind::Exec { former_tid }),
        (1..65i32).prop_map(|signal| EventKind::GroupStop { signal }),
    ];
    (0u64..1 << 40, any::<i32>(), any::<i32>(), kind).prop_map(|(time_ns, pid, tid, kind)| Event {
        time_ns,
        pid,
        tid,
        kind,
    })
}

fn file_of(events: &[Event]) -> Vec<u8> {
    let mut writer = TraceWriter::new(
        Vec::new(),
        &Header::now(vec!["prop".into()], Backend::Ptrace),
    )
    .unwrap();
    for e in events {
        writer.event(e);
    }
    writer.finish().unwrap()
}

proptest! {
    #[test]
    fn any_events_round_trip(events in proptest::collection::vec(event(), 0..200)) {
        let bytes = file_of(&events);
        let read: Vec<Event> = TraceReader::new(bytes.as_slice()).unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(read, events);
    }

    #[test]
    fn cuts_give_a_prefix(events in proptest::collection::vec(event(), 1..200), cut in any::<prop::sample::Index>()) {
        let bytes = file_of(&events);
        let cut = cut.index(bytes.len());
        if let Ok(reader) = TraceReader::new(&bytes[..cut]) {
            let read: Vec<Event> = reader.map_while(Result::ok).collect();
            prop_assert!(read.len() <= events.len());
            prop_assert_eq!(&read[..], &events[..read.len()]);
        }
    }

    #[test]
    fn damage_is_an_error_or_harmless(
        events in proptest::collection::vec(event(), 1..100),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = file_of(&events);
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(reader) = TraceReader::new(bytes.as_slice()) {
            // Never a panic; whatever decodes before an error is real.
            for result in reader {
                if result.is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut with_magic = b"TBTRACE\0\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        for input in [bytes.as_slice(), with_magic.as_slice()] {
            if let Ok(reader) = TraceReader::new(input) {
                for result in reader {
                    if result.is_err() {
                        break;
                    }
                }
            }
        }
    }
}
