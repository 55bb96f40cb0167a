//! The backend's eBPF programs, one per tracepoint, assembled here at run
//! time. Each runs in the kernel at its tracepoint, on every CPU, and
//! within a microsecond decides whether the thread concerned is one we
//! follow (a bit per thread id, which the fork, exit and exec programs
//! keep up to date themselves: see [`crate::tidset`]); only then does it
//! copy the tracepoint's fields into the ring buffer, stamped with the
//! time and the current thread:
//!
//! | offset | bytes | what |
//! |---:|---:|---|
//! | 0 | 8 | `bpf_ktime_get_ns` (CLOCK_MONOTONIC) |
//! | 8 | 4 | the current thread's id |
//! | 12 | 4 | its process's id |
//! | 16 | `end` | the tracepoint's raw record: its id (as `common_type`) and the CPU in the first 8 bytes, then its fields at their tracefs offsets |
//!
//! Most programs run through a perf event on their tracepoint and read
//! its formatted record. Such a program returns 1, so that other tools'
//! perf events on the same tracepoint still get their samples; but the
//! kernel runs no such program while another eBPF program runs on the
//! CPU, and then drops the tracepoint's perf samples too, every tool's.
//! The tracepoints an interrupt fires in the middle of one of our syscall
//! programs (a wake-up, a signal sent) are therefore raw tracepoints: the
//! program is handed the tracepoint's arguments (tasks), writes the same
//! fields at the same offsets itself, and is stopped only by its own
//! recursion. They read a task's id at the offset the kernel's BTF gives.

use std::ffi::CStr;

use crate::bpf::{Insn, ProgramType, RB_AVAIL_DATA, RB_FORCE_WAKEUP, RB_NO_WAKEUP, helper};

/// Where a record's copy of the tracepoint's raw data starts.
pub const RAW: usize = 16;

/// A thread a tracepoint concerns.
#[derive(Debug, Clone, Copy)]
pub enum Thread {
    /// The thread it fires in (syscalls, signals, fork, exit).
    Current,
    /// The thread whose id is the u32 field at this offset (an exec's).
    Field(i16),
    /// The task that raw-tracepoint argument number this points to (a
    /// wake-up's woken thread, a signal's target).
    Task(i16),
}

/// Which threads to look up among ours.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    One(Thread),
    /// Either of two (a context switch's prev and next).
    Either(Thread, Thread),
}

/// Where a program finds its tracepoint's data, and what it copies.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A perf event's formatted record: bytes 8 to `end` are copied (up
    /// to the end of the last field used; more than 8).
    Perf { end: i16 },
    /// The arguments of the raw tracepoint `name`: each of `fields` is
    /// written at its offset, and the record is `end` bytes long.
    Raw {
        name: &'static CStr,
        fields: &'static [(i16, RawField)],
        end: i16,
    },
}

/// A field a raw-tracepoint program writes.
#[derive(Debug, Clone, Copy)]
pub enum RawField {
    /// The low 32 bits of argument number this.
    Arg32(i16),
    /// The id of the thread the filter looked up.
    Key,
}

/// What a program does to the followed threads besides recording.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    None,
    /// Follows the new thread whose id is the field at this offset too:
    /// the kernel extends the set at each fork, before the child runs.
    Follow(i16),
    /// Stops following the current thread (it exits; its id may be reused).
    Forget,
    /// Moves the followed id found by the filter to the current thread:
    /// an exec from a thread other than the leader gives it the leader's
    /// id.
    Move,
}

/// One tracepoint's program.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The tracepoint's id (tracefs `id`), which its records carry.
    pub tracepoint: u64,
    pub source: Source,
    pub filter: Filter,
    pub effect: Effect,
}

/// What every program shares: the maps it names, by descriptor, and what
/// it must know of the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    /// The followed threads' bits ([`crate::tidset`]).
    pub tids: i32,
    pub ring: i32,
    pub lost: i32,
    /// Ring bytes pending beyond which a record wakes the reader at once
    /// (below it, the reader's own timer picks records up).
    pub wake_above: i32,
    /// Where `task_struct` keeps the thread id (for [`Thread::Task`]).
    pub task_pid_at: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const CTX: u8 = 6;
const PID_TGID: u8 = 7;
const RECORD: u8 = 8;
const FP: u8 = 10;

/// Stack slots (below the frame pointer): the thread ids looked up or
/// followed, a word's index in the bit set, the CPU's.
const KEY: i16 = -4;
const OTHER_KEY: i16 = -8;
const WORD: i16 = -12;
const CPU: i16 = -16;

/// A program being assembled, with forward jumps to patch.
struct Asm {
    insns: Vec<Insn>,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

impl Asm {
    fn put(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }
    fn mov(&mut self, dst: u8, src: u8) -> &mut Self {
        self.put(insn(0xbf, dst, src, 0, 0))
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.put(insn(0xb7, dst, 0, 0, imm))
    }
    fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.put(insn(0x07, dst, 0, 0, imm))
    }
    fn and_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.put(insn(0x57, dst, 0, 0, imm))
    }
    fn xor_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.put(insn(0xa7, dst, 0, 0, imm))
    }
    fn rsh_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.put(insn(0x77, dst, 0, 0, imm))
    }
    /// `dst <<= src` and `dst >>= src` (64 bits).
    fn lsh(&mut self, dst: u8, src: u8) -> &mut Self {
        self.put(insn(0x6f, dst, src, 0, 0))
    }
    fn rsh(&mut self, dst: u8, src: u8) -> &mut Self {
        self.put(insn(0x7f, dst, src, 0, 0))
    }
    fn load_u32(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.load(4, dst, src, off)
    }
    fn store_u32(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.store(4, dst, off, src)
    }
    fn store_u64(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.store(8, dst, off, src)
    }
    /// The size bits of a load or store of `bytes`.
    fn size(bytes: i16) -> u8 {
        match bytes {
            8 => 0x18,
            4 => 0x00,
            2 => 0x08,
            _ => 0x10,
        }
    }
    /// `dst = *(size *)(src + off)`.
    fn load(&mut self, bytes: i16, dst: u8, src: u8, off: i16) -> &mut Self {
        self.put(insn(0x61 | Asm::size(bytes), dst, src, off, 0))
    }
    /// `*(size *)(dst + off) = src`.
    fn store(&mut self, bytes: i16, dst: u8, off: i16, src: u8) -> &mut Self {
        self.put(insn(0x63 | Asm::size(bytes), dst, src, off, 0))
    }
    fn store_imm_u32(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.put(insn(0x62, dst, 0, off, imm))
    }
    /// `lock *(u64 *)(dst + 0) op= src`, op being `+` (0), `|` (0x40)
    /// or `&` (0x50).
    fn atomic_u64(&mut self, op: i32, dst: u8, src: u8) -> &mut Self {
        self.put(insn(0xdb, dst, src, 0, op))
    }
    /// The 64-bit immediate naming map `fd` (BPF_PSEUDO_MAP_FD).
    fn map(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.put(insn(0x18, dst, 1, 0, fd)).put(insn(0, 0, 0, 0, 0))
    }
    fn call(&mut self, helper: i32) -> &mut Self {
        self.put(insn(0x85, 0, 0, 0, helper))
    }
    fn exit(&mut self) -> &mut Self {
        self.put(insn(0x95, 0, 0, 0, 0))
    }
    /// A jump to be [`Asm::land`]ed: if `reg == imm` (0x15), `!=` (0x55),
    /// `<` unsigned (0xa5), or always (0x05).
    fn jump(&mut self, code: u8, reg: u8, imm: i32) -> usize {
        self.put(insn(code, reg, 0, 0, imm));
        self.insns.len() - 1
    }
    /// Points the jump at `from` to the next instruction.
    fn land(&mut self, from: usize) {
        self.insns[from].off = (self.insns.len() - from - 1) as i16;
    }
    /// `r0 = bpf_map_lookup_elem(map, fp + key)`.
    fn lookup(&mut self, map: i32, key: i16) -> &mut Self {
        self.map(R1, map)
            .mov(R2, FP)
            .add_imm(R2, key.into())
            .call(helper::MAP_LOOKUP_ELEM)
    }

    /// `r0` = the word of the bit set holding the bit of the thread id in
    /// stack `slot`, and the jump taken if there is none (an id past
    /// [`crate::tidset::MAX_TIDS`]).
    fn word(&mut self, bits: i32, slot: i16) -> usize {
        self.load_u32(R1, FP, slot)
            .rsh_imm(R1, 6)
            .store_u32(FP, WORD, R1)
            .lookup(bits, WORD);
        self.jump(JEQ, R0, 0)
    }

    /// `r1` = the mask of that id's bit within its word.
    fn bit(&mut self, slot: i16) -> &mut Self {
        self.load_u32(R2, FP, slot)
            .and_imm(R2, 63)
            .mov_imm(R1, 1)
            .lsh(R1, R2)
    }

    /// Whether the thread id in stack `slot` is followed: the jumps taken
    /// when not.
    fn test(&mut self, bits: i32, slot: i16) -> [usize; 2] {
        let none = self.word(bits, slot);
        self.load(8, R1, R0, 0)
            .load_u32(R2, FP, slot)
            .and_imm(R2, 63)
            .rsh(R1, R2)
            .and_imm(R1, 1);
        [none, self.jump(JEQ, R1, 0)]
    }

    /// Follows (or forgets) the thread id in stack `slot`, atomically: a
    /// program on another CPU, or the reader, may change the same word.
    fn set(&mut self, bits: i32, slot: i16, follow: bool) {
        let none = self.word(bits, slot);
        self.bit(slot);
        if follow {
            self.atomic_u64(ATOMIC_OR, R0, R1);
        } else {
            self.xor_imm(R1, -1).atomic_u64(ATOMIC_AND, R0, R1);
        }
        self.land(none);
    }
}

const JEQ: u8 = 0x15;
const JNE: u8 = 0x55;
const JLT: u8 = 0xa5;
const JA: u8 = 0x05;
const ATOMIC_ADD: i32 = 0;
const ATOMIC_OR: i32 = 0x40;
const ATOMIC_AND: i32 = 0x50;

/// A raw-tracepoint program that reads 4 bytes of kernel memory and
/// nothing else: loaded (never attached) to learn whether this kernel lets
/// our programs read task fields (lockdown may refuse the helper).
pub fn kernel_read_check() -> Vec<Insn> {
    let mut asm = Asm { insns: Vec::new() };
    asm.mov(R1, FP)
        .add_imm(R1, KEY.into())
        .mov_imm(R2, 4)
        .mov_imm(R3, 0)
        .call(helper::PROBE_READ_KERNEL)
        .mov_imm(R0, 0)
        .exit();
    asm.insns
}

impl Probe {
    /// What kind of program this is.
    pub fn program_type(&self) -> ProgramType {
        match self.source {
            Source::Perf { .. } => ProgramType::Tracepoint,
            Source::Raw { .. } => ProgramType::RawTracepoint,
        }
    }

    /// The program's instructions, naming `shared`'s maps.
    pub fn assemble(&self, shared: &Shared) -> Vec<Insn> {
        let mut asm = Asm { insns: Vec::new() };
        asm.mov(CTX, R1)
            .call(helper::GET_CURRENT_PID_TGID)
            .mov(PID_TGID, R0);
        let mut to_end = self.filter(&mut asm, shared);
        self.effect(&mut asm, shared);
        to_end.extend(self.record(&mut asm, shared));
        for jump in to_end {
            asm.land(jump);
        }
        // 1: a tracepoint program's 0 would drop the hit for every perf
        // event on the tracepoint, another tool's too (ARCHITECTURE.md).
        asm.mov_imm(R0, 1).exit();
        asm.insns
    }

    /// Puts the id of `thread` in stack `slot`.
    fn key(asm: &mut Asm, shared: &Shared, thread: Thread, slot: i16) {
        match thread {
            Thread::Current => {
                asm.store_u32(FP, slot, PID_TGID);
            }
            Thread::Field(off) => {
                asm.load_u32(R1, CTX, off).store_u32(FP, slot, R1);
            }
            Thread::Task(arg) => {
                // The task's id, read where this kernel keeps it (a failed
                // read leaves 0, the idle task's, never followed).
                asm.load(8, R3, CTX, 8 * arg)
                    .add_imm(R3, shared.task_pid_at)
                    .mov(R1, FP)
                    .add_imm(R1, slot.into())
                    .mov_imm(R2, 4)
                    .call(helper::PROBE_READ_KERNEL);
            }
        }
    }

    /// Looks the thread (or threads) up; the jumps taken when not ours.
    fn filter(&self, asm: &mut Asm, shared: &Shared) -> Vec<usize> {
        let (first, second) = match self.filter {
            Filter::One(thread) => {
                Probe::key(asm, shared, thread, KEY);
                return asm.test(shared.tids, KEY).to_vec();
            }
            Filter::Either(first, second) => (first, second),
        };
        Probe::key(asm, shared, first, KEY);
        Probe::key(asm, shared, second, OTHER_KEY);
        let first_missed = asm.test(shared.tids, KEY);
        let found = asm.jump(JA, 0, 0);
        for jump in first_missed {
            asm.land(jump);
        }
        let missed = asm.test(shared.tids, OTHER_KEY);
        asm.land(found);
        missed.to_vec()
    }

    fn effect(&self, asm: &mut Asm, shared: &Shared) {
        match self.effect {
            Effect::None => {}
            Effect::Follow(off) => {
                asm.load_u32(R1, CTX, off).store_u32(FP, OTHER_KEY, R1);
                asm.set(shared.tids, OTHER_KEY, true);
            }
            Effect::Forget => asm.set(shared.tids, KEY, false),
            Effect::Move => {
                asm.set(shared.tids, KEY, false);
                asm.store_u32(FP, OTHER_KEY, PID_TGID);
                asm.set(shared.tids, OTHER_KEY, true);
            }
        }
    }

    /// Bytes of record after the header.
    fn end(&self) -> i16 {
        match self.source {
            Source::Perf { end } | Source::Raw { end, .. } => end,
        }
    }

    /// Reserves, fills and submits the record; a full ring adds one to
    /// this CPU's loss counter instead. The jumps to the end.
    fn record(&self, asm: &mut Asm, shared: &Shared) -> Vec<usize> {
        let size = RAW as i32 + i32::from(self.end());
        asm.map(R1, shared.ring)
            .mov_imm(R2, size)
            .mov_imm(R3, 0)
            .call(helper::RINGBUF_RESERVE);
        let reserved = asm.jump(JNE, R0, 0);
        asm.call(helper::GET_SMP_PROCESSOR_ID)
            .store_u32(FP, CPU, R0)
            .lookup(shared.lost, CPU);
        let no_counter = asm.jump(JEQ, R0, 0);
        asm.mov_imm(R1, 1).atomic_u64(ATOMIC_ADD, R0, R1);
        let counted = asm.jump(JA, 0, 0);
        asm.land(reserved);
        asm.mov(RECORD, R0)
            .call(helper::KTIME_GET_NS)
            .store_u64(RECORD, 0, R0)
            .store_u64(RECORD, 8, PID_TGID)
            .store_imm_u32(RECORD, RAW as i16, self.tracepoint as i32)
            .call(helper::GET_SMP_PROCESSOR_ID)
            .store_u32(RECORD, RAW as i16 + 4, R0);
        match self.source {
            Source::Perf { end } => Probe::copy(asm, end),
            Source::Raw { fields, .. } => Probe::write(asm, fields),
        }
        asm.map(R1, shared.ring)
            .mov_imm(R2, RB_AVAIL_DATA)
            .call(helper::RINGBUF_QUERY)
            .mov_imm(R2, RB_NO_WAKEUP);
        let quiet = asm.jump(JLT, R0, shared.wake_above);
        asm.mov_imm(R2, RB_FORCE_WAKEUP);
        asm.land(quiet);
        asm.mov(R1, RECORD).call(helper::RINGBUF_SUBMIT);
        vec![no_counter, counted]
    }

    /// Copies a formatted record's bytes 8 to `end`. No read past the
    /// tracepoint's fields: the kernel refuses to attach a program that
    /// could. Widest loads first.
    fn copy(asm: &mut Asm, end: i16) {
        let mut off = 8;
        while off < end {
            let size = [8, 4, 2, 1]
                .into_iter()
                .find(|size| off + size <= end)
                .unwrap_or(1);
            asm.load(size, R1, CTX, off)
                .store(size, RECORD, RAW as i16 + off, R1);
            off += size;
        }
    }

    /// Writes a raw tracepoint's `fields` (a raw tracepoint's arguments
    /// are read 8 bytes at a time).
    fn write(asm: &mut Asm, fields: &[(i16, RawField)]) {
        for &(at, field) in fields {
            match field {
                RawField::Arg32(arg) => asm.load(8, R1, CTX, 8 * arg),
                RawField::Key => asm.load_u32(R1, FP, KEY),
            };
            asm.store_u32(RECORD, RAW as i16 + at, R1);
        }
    }
}
