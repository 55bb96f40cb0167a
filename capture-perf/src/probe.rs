//! The backend's eBPF programs, one per tracepoint, assembled here at run
//! time. Each runs in the kernel at its tracepoint, on every CPU, and
//! within a microsecond decides whether the thread concerned is one we
//! follow (a hash of thread ids, which the fork and exec programs keep up
//! to date themselves); only then does it copy the tracepoint's fields
//! into the ring buffer, stamped with the time and the current thread:
//!
//! | offset | bytes | what |
//! |---:|---:|---|
//! | 0 | 8 | `bpf_ktime_get_ns` (CLOCK_MONOTONIC) |
//! | 8 | 4 | the current thread's id |
//! | 12 | 4 | its process's id |
//! | 16 | `end` | the tracepoint's raw record: its id (as `common_type`) and the CPU in the first 8 bytes, then its fields at their tracefs offsets |
//!
//! Every program returns 1, so that other tools' perf events on the same
//! tracepoint still get their samples. One limit remains: the kernel runs
//! one eBPF program at a time per CPU, so a tracepoint fired by an
//! interrupt while one of ours runs is skipped, for us (counted, and said
//! at the end) and for every perf event on it.

use crate::bpf::{Insn, RB_AVAIL_DATA, RB_FORCE_WAKEUP, RB_NO_WAKEUP, helper};

/// Where a record's copy of the tracepoint's raw data starts.
pub const RAW: usize = 16;

/// Which thread a tracepoint concerns, to be looked up among ours.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    /// The thread it fires in (syscalls, signals, fork, exit).
    Current,
    /// The thread whose id is the u32 field at this offset (a wake-up's).
    Field(i16),
    /// Either of two such threads (a context switch's prev and next).
    Either(i16, i16),
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
    /// The tracepoint's id (tracefs `id`).
    pub tracepoint: u64,
    pub filter: Filter,
    pub effect: Effect,
    /// Bytes of the raw record copied, up to the end of the last field
    /// used (more than 8).
    pub end: i16,
}

/// The maps a program names, by descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Maps {
    pub tids: i32,
    pub ring: i32,
    pub lost: i32,
    /// Ring bytes pending beyond which a record wakes the reader at once
    /// (below it, the reader's own timer picks records up).
    pub wake_above: i32,
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const CTX: u8 = 6;
const PID_TGID: u8 = 7;
const RECORD: u8 = 8;
const FP: u8 = 10;

/// Stack slots (below the frame pointer).
const KEY: i16 = -4;
const OTHER_KEY: i16 = -8;
const VALUE: i16 = -12;
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
    /// `lock *(u64 *)(dst + 0) += src`.
    fn atomic_add_u64(&mut self, dst: u8, src: u8) -> &mut Self {
        self.put(insn(0xdb, dst, src, 0, 0))
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
}

const JEQ: u8 = 0x15;
const JNE: u8 = 0x55;
const JLT: u8 = 0xa5;
const JA: u8 = 0x05;

impl Probe {
    /// The program's instructions, naming `maps`.
    pub fn assemble(&self, maps: &Maps) -> Vec<Insn> {
        let mut asm = Asm { insns: Vec::new() };
        asm.mov(CTX, R1)
            .call(helper::GET_CURRENT_PID_TGID)
            .mov(PID_TGID, R0);
        let mut to_end = self.filter(&mut asm, maps);
        self.effect(&mut asm, maps);
        to_end.extend(self.record(&mut asm, maps));
        for jump in to_end {
            asm.land(jump);
        }
        asm.mov_imm(R0, 1).exit();
        asm.insns
    }

    /// Looks the thread (or threads) up; the jumps taken when not ours.
    fn filter(&self, asm: &mut Asm, maps: &Maps) -> Vec<usize> {
        let key = |asm: &mut Asm, field: Option<i16>| {
            match field {
                None => asm.store_u32(FP, KEY, PID_TGID),
                Some(off) => asm.load_u32(R1, CTX, off).store_u32(FP, KEY, R1),
            };
            asm.lookup(maps.tids, KEY);
        };
        match self.filter {
            Filter::Current => key(asm, None),
            Filter::Field(off) => key(asm, Some(off)),
            Filter::Either(first, second) => {
                key(asm, Some(first));
                let found = asm.jump(JNE, R0, 0);
                key(asm, Some(second));
                let missed = asm.jump(JEQ, R0, 0);
                asm.land(found);
                return vec![missed];
            }
        }
        vec![asm.jump(JEQ, R0, 0)]
    }

    fn effect(&self, asm: &mut Asm, maps: &Maps) {
        let follow = |asm: &mut Asm| {
            asm.store_imm_u32(FP, VALUE, 1)
                .map(R1, maps.tids)
                .mov(R2, FP)
                .add_imm(R2, OTHER_KEY.into())
                .mov(R3, FP)
                .add_imm(R3, VALUE.into())
                .mov_imm(R4, 0)
                .call(helper::MAP_UPDATE_ELEM);
        };
        let forget = |asm: &mut Asm| {
            asm.map(R1, maps.tids)
                .mov(R2, FP)
                .add_imm(R2, KEY.into())
                .call(helper::MAP_DELETE_ELEM);
        };
        match self.effect {
            Effect::None => {}
            Effect::Follow(off) => {
                asm.load_u32(R1, CTX, off).store_u32(FP, OTHER_KEY, R1);
                follow(asm);
            }
            Effect::Forget => forget(asm),
            Effect::Move => {
                forget(asm);
                asm.store_u32(FP, OTHER_KEY, PID_TGID);
                follow(asm);
            }
        }
    }

    /// Reserves, fills and submits the record; a full ring adds one to
    /// this CPU's loss counter instead. The jumps to the end.
    fn record(&self, asm: &mut Asm, maps: &Maps) -> Vec<usize> {
        let size = RAW as i32 + i32::from(self.end);
        asm.map(R1, maps.ring)
            .mov_imm(R2, size)
            .mov_imm(R3, 0)
            .call(helper::RINGBUF_RESERVE);
        let reserved = asm.jump(JNE, R0, 0);
        asm.call(helper::GET_SMP_PROCESSOR_ID)
            .store_u32(FP, CPU, R0)
            .lookup(maps.lost, CPU);
        let no_counter = asm.jump(JEQ, R0, 0);
        asm.mov_imm(R1, 1).atomic_add_u64(R0, R1);
        let counted = asm.jump(JA, 0, 0);
        asm.land(reserved);
        asm.mov(RECORD, R0)
            .call(helper::KTIME_GET_NS)
            .store_u64(RECORD, 0, R0)
            .store_u64(RECORD, 8, PID_TGID)
            .store_imm_u32(RECORD, RAW as i16, self.tracepoint as i32)
            .call(helper::GET_SMP_PROCESSOR_ID)
            .store_u32(RECORD, RAW as i16 + 4, R0);
        // No read past the tracepoint's fields: the kernel refuses to
        // attach a program that could. Widest loads first.
        let mut off = 8;
        while off < self.end {
            let size = [8, 4, 2, 1]
                .into_iter()
                .find(|size| off + size <= self.end)
                .unwrap_or(1);
            asm.load(size, R1, CTX, off)
                .store(size, RECORD, RAW as i16 + off, R1);
            off += size;
        }
        asm.map(R1, maps.ring)
            .mov_imm(R2, RB_AVAIL_DATA)
            .call(helper::RINGBUF_QUERY)
            .mov_imm(R2, RB_NO_WAKEUP);
        let quiet = asm.jump(JLT, R0, maps.wake_above);
        asm.mov_imm(R2, RB_FORCE_WAKEUP);
        asm.land(quiet);
        asm.mov(R1, RECORD).call(helper::RINGBUF_SUBMIT);
        vec![no_counter, counted]
    }
}
