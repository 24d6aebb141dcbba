/* split.h -- when the fit loop splits a minibatch across two threads, and
 * when it stops doing so for a while.  Included by train.c (the step
 * itself is split_impl.h; the helper thread pool.c).
 *
 * A split step hands the second half of the minibatch to pool.c's helper
 * thread.  That pays only while the helper has a core to itself.  When the
 * other core is busy (another process, or OpenBLAS's own pool spinning
 * after the caller's threaded numpy work), the helper's half arrives late
 * and the split step takes longer than the whole minibatch would on one
 * thread.  The controller here watches every split step:
 *
 *   splitting --(FNN_SPLIT_STARVED_RUN starved split steps in a row)--> held
 *   held      --(the hold's time has passed)--> splitting
 *
 * While held, steps run unsplit on the calling thread (their GEMMs in
 * pieces the BLAS runs on that thread, see train_impl.h).  The hold is a
 * time, not a step count, so that whatever occupies the other core can go
 * idle meanwhile (OpenBLAS's pool falls asleep after ~0.1 s without work).
 * Its length (fnn_split.backoff) starts at FNN_SPLIT_FIRST_HOLD_MS and
 * doubles each time the helper is starved again after a hold, up to
 * FNN_SPLIT_MAX_HOLD_MS; FNN_SPLIT_GOOD_RUN unstarved split steps within
 * one fit reset it.  hold and backoff live in fnn_split, kept by the
 * caller from one fit to the next; the run counters live in one fit. */
#ifndef FASTNN_SPLIT_H
#define FASTNN_SPLIT_H

#include <time.h>
#include "fastnn.h"

/* Starved split steps in a row that start a hold: one late step is often
 * a passing preemption, several in a row mean the core is taken. */
#define FNN_SPLIT_STARVED_RUN 4
/* Unstarved split steps (within one fit) after which the next hold starts
 * from FNN_SPLIT_FIRST_HOLD_MS again. */
#define FNN_SPLIT_GOOD_RUN 256
/* The first hold, in ms: long enough that OpenBLAS's pool, whose idle
 * threads spin for 2^28 clock ticks (0.1 s at 2.6 GHz) after a threaded
 * call, is asleep after one or two holds; short enough that a fit is not
 * held long for a passing stall. */
#define FNN_SPLIT_FIRST_HOLD_MS 64
/* The longest hold, in ms (32 first holds): against a core that stays busy
 * the fit retries about every 2 s, losing at most FNN_SPLIT_STARVED_RUN
 * slow steps each time, and splits again soon after the core is free. */
#define FNN_SPLIT_MAX_HOLD_MS 2048

/* Milliseconds on CLOCK_MONOTONIC: the clock of fnn_split.hold. */
static inline double fnn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* The split steps of one fit: s (the caller's hold state, in/out) and the
 * counters of this fit. */
typedef struct {
    fnn_split *s;
    int n_starved;          /* starved split steps in a row */
    int n_good;             /* unstarved split steps since the last hold */
} fnn_split_ctl;

static inline void fnn_split_ctl_init(fnn_split_ctl *c, fnn_split *s)
{
    c->s = s;
    c->n_starved = 0;
    c->n_good = 0;
}

/* 1 while the fit is held; ends a hold whose time is up (the clock is
 * read only during a hold). */
static inline int fnn_split_held(fnn_split_ctl *c)
{
    if (c->s->hold != 0 && fnn_now_ms() >= c->s->hold) {
        c->s->hold = 0;
    }
    return c->s->hold != 0;
}

/* Whether a split step was starved, from its times (ms): t0 when the
 * helper's half was handed over, t1 when the caller's own half was done,
 * t2 when the helper's was.  Starved: the caller waited longer for the
 * helper than it took for its own half, i.e. the helper took over twice
 * as long as the caller.  The two halves are the same work, so the step
 * then took longer than the whole minibatch on the calling thread. */
static inline int fnn_split_starved(double t0, double t1, double t2)
{
    return t2 - t1 > t1 - t0;
}

/* After a split step: counts it, and starts a hold, from now, after
 * FNN_SPLIT_STARVED_RUN starved ones in a row (unless backoff < 0). */
static inline void fnn_split_record(fnn_split_ctl *c, int starved)
{
    fnn_split *s = c->s;
    if (!starved) {
        c->n_starved = 0;
        if (++c->n_good >= FNN_SPLIT_GOOD_RUN && s->backoff > 0) {
            s->backoff = 0;
        }
        return;
    }
    if (s->backoff < 0 || ++c->n_starved < FNN_SPLIT_STARVED_RUN) {
        return;
    }
    c->n_starved = 0;
    c->n_good = 0;
    if (s->backoff == 0) {
        s->backoff = FNN_SPLIT_FIRST_HOLD_MS;
    } else if (s->backoff < FNN_SPLIT_MAX_HOLD_MS) {
        s->backoff *= 2;
    }
    s->hold = fnn_now_ms() + s->backoff;
}

#endif /* FASTNN_SPLIT_H */
