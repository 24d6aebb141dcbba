/* train.c -- the native epoch/minibatch loop: gathers shuffled minibatches,
 * runs the fused network step, applies the optimizer, records per-epoch
 * losses, and polls a callback every few tens of milliseconds (signals,
 * progress) without the caller holding any lock.  Built from net.c and
 * optim.c, except that for networks on the small-network step the loop has
 * its own instance with that step inlined (lanes_impl.h); no allocation. */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include "fastnn.h"
#include "inline.h"

/* Reading the clock costs ~20 ns, a tiny step ~100 ns: look at it only
 * every `every` steps, adapting `every` so the clock is read about once
 * per millisecond. */
typedef struct {
    double period_ms, last_poll, last_check;
    int64_t every, count;
} fnn_poller;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void fnn_poller_init(fnn_poller *p, double period_ms)
{
    p->period_ms = period_ms > 0 ? period_ms : 50.0;
    p->last_poll = p->last_check = now_ms();
    p->every = 1;
    p->count = 0;
}

/* The clock read behind fnn_poller_due, out of line: kept off the fit
 * loop's path, whose vector registers a call would clobber every step
 * (a 2 -> 4 -> 1 step: 3% faster so). */
static __attribute__((noinline)) int fnn_poller_check(fnn_poller *p)
{
    p->count = 0;
    double t = now_ms();
    double dt = t - p->last_check;
    p->last_check = t;
    if (dt < 0.5 && p->every < (1 << 20)) {
        p->every *= 2;
    } else if (dt > 2.0 && p->every > 1) {
        p->every /= 2;
    }
    if (t - p->last_poll >= p->period_ms) {
        p->last_poll = t;
        return 1;
    }
    return 0;
}

/* Nonzero when the poll is due.  The clock is read once in p->every
 * calls; p->every doubles while the reads come less than 0.5 ms apart and
 * halves when they come more than 2 ms apart. */
static inline __attribute__((always_inline)) int fnn_poller_due(fnn_poller *p)
{
    return ++p->count >= p->every && fnn_poller_check(p);
}

#define REAL double
#define SUF(name) name##_f64
#define KSUF(name) name##_f64_in
#define SQRT sqrt
#define LANE_INT int64_t
#define LANE_N 4
#include "act_impl.h"
#include "loss_impl.h"
#include "optim_impl.h"
#include "lanes_impl.h"
#undef KSUF
#define KSUF SUF
#include "train_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT
#undef LANE_INT
#undef LANE_N

#define REAL float
#define SUF(name) name##_f32
#define KSUF(name) name##_f32_in
#define SQRT sqrtf
#define LANE_INT int32_t
#define LANE_N 8
#include "act_impl.h"
#include "loss_impl.h"
#include "optim_impl.h"
#include "lanes_impl.h"
#undef KSUF
#define KSUF SUF
#include "train_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT
#undef LANE_INT
#undef LANE_N
