//! raw-clone leaves no stack mapped: /proc/self/maps counted before and
//! after. Alone in its own test binary, so no other test thread maps or
//! unmaps memory (thread stacks, allocator arenas) between the counts.
// A test reads as one story, start to finish: no line limit here.
#![allow(clippy::too_many_lines)]
#![cfg(target_arch = "x86_64")]

use tracebench_labs::raw_clone::{self, Job, Options};

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count()
}

#[test]
fn no_stack_is_left_mapped_after_the_threads_are_joined() {
    let options = Options::default();
    // A first run lets the allocator and the lab's one-time setup settle;
    // the counts bracket the next ones.
    raw_clone::run(&options, &mut Vec::new()).unwrap();
    let mut out = Vec::with_capacity(64 * 1024);
    let before = mappings();
    for _ in 0..20 {
        out.clear();
        let report = raw_clone::run(&options, &mut out).unwrap();
        assert_eq!(report.stacks_unmapped, 2);
        assert_eq!(report.byte(Job::Min), Some(b' '));
        assert_eq!(report.byte(Job::Max), Some(b'w'));
    }
    let after = mappings();
    assert_eq!(before, after, "mappings before and after 20 runs");
}
