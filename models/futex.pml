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
 *   -DQUEUE    the bounded queue (capacity 1, its not_empty and not_full
 *              condvars): two producers and two consumers move ITEMS items
 *              each (check.sh: 1, already 12 million states); every item
 *              arrives, and nobody sleeps for ever.
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
#ifndef ITEMS
#define ITEMS 2
#endif

/* The mutex word: 0 unlocked, 1 locked, 2 locked and maybe waiters. */
byte state = 0;
/* Who sleeps in FUTEX_WAIT on which word: asleep[word * N + thread]; word
 * 0 is the mutex's, word 1 + c condvar c's sequence. */
#define MUTEX_WORD 0
bool asleep[3 * N];
/* Threads inside the critical section. */
byte inside = 0;

/* FUTEX_WAIT(word, expected): atomically, sleep only if the word still
 * holds the expected value (else EAGAIN); return when woken. */
inline futex_wait(word, expected, which) {
    atomic {
        if
        :: word == expected -> asleep[(which) * N + _pid] = true
        :: else -> skip
        fi
    }
#ifdef SPURIOUS
    if
    :: asleep[(which) * N + _pid] == false -> skip
    :: asleep[(which) * N + _pid] = false
    fi
#else
    asleep[(which) * N + _pid] == false
#endif
}

/* FUTEX_WAKE(word, 1): wake one sleeper, if any. */
inline futex_wake_one(which) {
    atomic {
        i = 0;
        do
        :: i < N && asleep[(which) * N + i] -> asleep[(which) * N + i] = false; break
        :: i < N && !asleep[(which) * N + i] -> i++
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

#if defined(CONDVAR) || defined(QUEUE)
/* Condition variables: their sequence counters and waiter counts. */
byte sequence[2];
byte waiters[2];

inline condvar_wait(c) {
    atomic { waiters[c]++ }
#ifndef LATE_SEQUENCE
    seen = sequence[c];
    unlock();
#else
    unlock();
    seen = sequence[c];
#endif
    futex_wait(sequence[c], seen, 1 + c);
    atomic { waiters[c]-- }
    lock()
}

inline condvar_notify_one(c) {
    atomic { sequence[c]++ }
    if
    :: waiters[c] > 0 -> futex_wake_one(1 + c)
    :: else -> skip
    fi
}
#endif

#ifdef CONDVAR
byte turn = 0;

active [2] proctype player() {
    byte i, old, seen;
    bool got;
    lock();
    do
    :: turn >= ROUNDS -> break
    :: turn < ROUNDS && turn % 2 != _pid -> condvar_wait(0)
    :: turn < ROUNDS && turn % 2 == _pid -> turn++; condvar_notify_one(0)
    od;
    unlock()
}
#endif

#ifdef QUEUE
#define NOT_EMPTY 0
#define NOT_FULL 1
byte queued = 0;
byte delivered = 0;

/* Threads 0 and 1 produce, 2 and 3 consume (build with -DN=4). Every
 * thread ending means every item was delivered; one left asleep is an
 * invalid end state. */
active [4] proctype queue_user() {
    byte i, old, seen, moved = 0;
    bool got;
    do
    :: moved == ITEMS -> break
    :: moved < ITEMS && _pid < 2 ->
        lock();
        do
        :: queued == 1 -> condvar_wait(NOT_FULL)
        :: else -> break
        od;
        queued++;
        assert(queued <= 1);
        condvar_notify_one(NOT_EMPTY);
        unlock();
        moved++
    :: moved < ITEMS && _pid >= 2 ->
        lock();
        do
        :: queued == 0 -> condvar_wait(NOT_EMPTY)
        :: else -> break
        od;
        assert(queued == 1);
        queued--;
        delivered++;
        condvar_notify_one(NOT_FULL);
        unlock();
        moved++
    od
}

#endif
