/* train.c -- the native epoch/minibatch loop: gathers shuffled minibatches,
 * runs the fused network step (split across two threads when it pays,
 * split.h), applies the optimizer, records per-epoch losses, and polls a
 * callback every few tens of milliseconds (signals, progress) without the
 * caller holding any lock.  Built from net.c and optim.c, except that for
 * networks on the small-network step the loop has its own instance with
 * that step inlined (lanes_impl.h); no allocation.
 *
 * Per dtype: batch_impl.h (a minibatch's rows, the optimizer update),
 * split_impl.h (the two-thread step), train_impl.h (the loops). */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include "fastnn.h"
#include "inline.h"
#include "pool.h"
#include "split.h"

/* Reading the clock costs about as much as a whole step of a tiny network:
 * look at it only every `every` steps, adapting `every` so the clock is
 * read about once per millisecond. */
typedef struct {
    double period_ms, last_poll, last_check;
    int64_t every, count;
} fnn_poller;

static void fnn_poller_init(fnn_poller *p, double period_ms)
{
    p->period_ms = period_ms > 0 ? period_ms : 50.0;
    p->last_poll = p->last_check = fnn_now_ms();
    p->every = 1;
    p->count = 0;
}

/* The clock read behind fnn_poller_due, out of line: a call on the fit
 * loop's path would clobber its vector registers at every step. */
static __attribute__((noinline)) int fnn_poller_check(fnn_poller *p)
{
    p->count = 0;
    double t = fnn_now_ms();
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

/* The epoch bookkeeping both fit loops (train_impl.h) share: minibatch
 * sizes, the snapshot schedule, each epoch's loss, and how far the fit
 * went (written to a->out when the fit ends and before each poll). */
typedef struct {
    int64_t batch, steps;       /* rows per minibatch (clamped to [1, n]),
                                   minibatches per epoch */
    int64_t every, to_snap;     /* snapshot every `every` epochs; epochs
                                   until the next snapshot epoch (no
                                   division per step) */
    int sse;                    /* epoch loss: a sum, not a mean */
    double esum, wsum;          /* this epoch's loss so far, its weight */
    int64_t steps_done, snap_epoch;
} fnn_epochs;

FNN_INLINE void fnn_epochs_init(fnn_epochs *ep, fnn_fit_args *a, int sse)
{
    const int64_t n = a->n;
    ep->batch = a->batch < 1 ? 1 : (a->batch > n ? n : a->batch);
    ep->steps = n > 0 ? (n + ep->batch - 1) / ep->batch : 0;
    ep->every = a->snapshot_every < 1 ? 1 : a->snapshot_every;
    ep->to_snap = (ep->every - (a->epoch0 % ep->every)) % ep->every;
    ep->sse = sse;
    ep->esum = ep->wsum = 0.0;
    ep->steps_done = 0;
    ep->snap_epoch = -1;
    a->out.bad_epoch = -1;
    a->out.bad_step = -1;
}

/* Step s of this epoch takes a snapshot (if the fit keeps them). */
FNN_INLINE int fnn_epochs_snap_due(const fnn_epochs *ep, int64_t s)
{
    return s == 0 && ep->to_snap == 0;
}

/* A finished step: its reported loss, weighted by wgt in the epoch's mean
 * (summed for sse). */
FNN_INLINE void fnn_epochs_add(fnn_epochs *ep, double loss, double wgt)
{
    ep->esum += ep->sse ? loss : loss * wgt;
    ep->wsum += wgt;
    ep->steps_done += 1;
}

/* The end of epoch e: its loss into a->epoch_loss[e]. */
FNN_INLINE void fnn_epochs_end(fnn_epochs *ep, fnn_fit_args *a, int64_t e)
{
    a->epoch_loss[e] = ep->sse ? ep->esum
                     : (ep->wsum > 0 ? ep->esum / ep->wsum : 0.0);
    ep->esum = ep->wsum = 0.0;
    ep->to_snap = ep->to_snap == 0 ? ep->every - 1 : ep->to_snap - 1;
}

/* The fit ends during epoch e (e = n_epochs: after the last) with status:
 * a->out filled in; returns status. */
FNN_INLINE int fnn_epochs_finish(const fnn_epochs *ep, fnn_fit_args *a,
                                 int64_t e, int status)
{
    a->out.epochs_done = e;
    a->out.steps_done = ep->steps_done;
    if (ep->snap_epoch >= 0) {
        a->out.snapshot_epoch = ep->snap_epoch;
    }
    return status;
}

/* Step s of epoch e had a loss that is not finite (nothing applied). */
FNN_INLINE int fnn_epochs_diverged(const fnn_epochs *ep, fnn_fit_args *a,
                                   int64_t e, int64_t s)
{
    a->out.bad_epoch = e;
    a->out.bad_step = s;
    return fnn_epochs_finish(ep, a, e, FNN_ERR_NONFINITE);
}

/* After step s of epoch e: calls a->poll when it is due, a->out current;
 * 1 if it asks to stop (epoch e's loss is then NaN: not finished). */
FNN_INLINE int fnn_epochs_poll(const fnn_epochs *ep, fnn_poller *poller,
                               fnn_fit_args *a, int64_t e, int64_t s)
{
    if (!a->poll || !fnn_poller_due(poller)) {
        return 0;
    }
    a->out.epochs_done = e;
    a->out.steps_done = ep->steps_done;
    a->out.epoch_steps = s + 1;
    a->out.epoch_loss = ep->sse ? ep->esum
                      : (ep->wsum > 0 ? ep->esum / ep->wsum : NAN);
    if (!a->poll(a->poll_ctx, e, s)) {
        return 0;
    }
    a->epoch_loss[e] = NAN;
    return 1;
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
#include "batch_impl.h"
#include "split_impl.h"
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
#include "batch_impl.h"
#include "split_impl.h"
#include "train_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT
#undef LANE_INT
#undef LANE_N
