/*
 * A model of tracebench's futex primitives (server/src/sync), checked with
 * spin: the three-state mutex (Drepper, "Futexes Are Tricky") and the
 * sequence-counter condition variable, over a model of FUTEX_WAIT and
 * FUTEX_WAKE. `models/check.sh` runs it.
 *
 *   -DMUTEX    N threads lock and unlock K times each: mutual exclusion
 *              (an assertion) and no thread left asleep for ever (spin's
 *              invalid end states).
 *   -DCONDVAR  two players hand a turn back and forth ROUNDS times under
 *              the mutex, waiting on the condvar for their turn: a lost
 *              wake-up leaves a player asleep for ever.
 *   -DSPURIOUS FUTEX_WAIT may also return without a wake, as the kernel
 *              allows: the code must re-check.
 *
 * Mutants, which check.sh expects spin to catch (so the model can fail):
 *   -DFORGET_WAKE        unlock never wakes a sleeper;
 *   -DLATE_SEQUENCE      the condvar reads its sequence after unlocking.
 */

#ifndef N
#define N 3
#endif
#ifndef K
#define K 2
#endif
#ifndef ROUNDS
#define ROUNDS 4
#endif

/* The mutex word: 0 unlocked, 1 locked, 2 locked and maybe waiters. */
byte state = 0;
/* Who sleeps in FUTEX_WAIT on which word: asleep[word * N + thread], word
 * MUTEX_WORD or CONDVAR_WORD. */
#define MUTEX_WORD 0
#define CONDVAR_WORD 1
bool asleep[2 * N];
/* Threads inside the critical section. */
byte inside = 0;

/* FUTEX_WAIT(word, expected): atomically, sleep only if the word still
 * holds the expected value (else EAGAIN); return when woken. */
inline futex_wait(word, expected, which) {
    atomic {
        if
        :: word == expected -> asleep[which * N + _pid] = true
        :: else -> skip
        fi
    }
#ifdef SPURIOUS
    if
    :: asleep[which * N + _pid] == false -> skip
    :: asleep[which * N + _pid] = false
    fi
#else
    asleep[which * N + _pid] == false
#endif
}

/* FUTEX_WAKE(word, 1): wake one sleeper, if any. */
inline futex_wake_one(which) {
    atomic {
        i = 0;
        do
        :: i < N && asleep[which * N + i] -> asleep[which * N + i] = false; break
        :: i < N && !asleep[which * N + i] -> i++
        :: i >= N -> break
        od
    }
}

inline lock() {
    got = false;
    /* The fast path, and the retry after spinning: compare-exchange 0 -> 1. */
    atomic { if :: state == 0 -> state = 1; got = true :: else -> skip fi }
    if
    :: !got -> atomic { if :: state == 0 -> state = 1; got = true :: else -> skip fi }
    :: else -> skip
    fi
    /* Contended: mark the word 2 (swap) and sleep while it was held. */
    do
    :: got -> break
    :: !got ->
        atomic { old = state; state = 2 }
        if
        :: old == 0 -> got = true
        :: else -> futex_wait(state, 2, MUTEX_WORD)
        fi
    od
}

inline unlock() {
    atomic { old = state; state = state - 1 }
    if
    :: old != 1 ->
        state = 0;
#ifndef FORGET_WAKE
        futex_wake_one(MUTEX_WORD)
#endif
    :: else -> skip
    fi
}

#ifdef MUTEX
active [N] proctype worker() {
    byte i, old, round = 0;
    bool got;
    do
    :: round < K ->
        lock();
        inside++;
        assert(inside == 1);
        inside--;
        unlock();
        round++
    :: else -> break
    od
}
#endif

#ifdef CONDVAR
byte sequence = 0;
byte waiters = 0;
byte turn = 0;

inline condvar_wait() {
    atomic { waiters++ }
#ifndef LATE_SEQUENCE
    seen = sequence;
    unlock();
#else
    unlock();
    seen = sequence;
#endif
    futex_wait(sequence, seen, CONDVAR_WORD);
    atomic { waiters-- }
    lock()
}

inline condvar_notify_one() {
    atomic { sequence++ }
    if
    :: waiters > 0 -> futex_wake_one(CONDVAR_WORD)
    :: else -> skip
    fi
}

active [2] proctype player() {
    byte i, old, seen;
    bool got;
    lock();
    do
    :: turn >= ROUNDS -> break
    :: turn < ROUNDS && turn % 2 != _pid -> condvar_wait()
    :: turn < ROUNDS && turn % 2 == _pid -> turn++; condvar_notify_one()
    od;
    unlock()
}
#endif
