/* many.c -- many networks of the same shape trained in one call
 * (fnn_fit_many): a set of worker threads started for the call, each
 * taking the next unit of work until none is left, while the calling
 * thread waits and polls (signals, progress) without holding any lock.
 *
 * A unit is one network's whole fit (fnn_fit on that thread), or a group
 * of LANE_N small networks trained together with the networks in the
 * vector lanes (many_impl.h), which reproduces the small-network step of
 * fnn_fit network by network.  The kernels' bodies are included inline
 * here, as train.c does, so that a group's step is one function per CPU
 * target. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "fastnn.h"
#include "inline.h"

/* How often, in ms, a worker's fit looks at the stop flag (a relaxed
 * atomic load: cheap), so that a stop is seen within a few ms. */
#define WORKER_POLL_MS 2.0
/* Most worker threads per call. */
#define MAX_THREADS 256

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

typedef struct many_run many_run;
typedef void (*many_unit_fn)(many_run *r, int64_t unit, char *scratch);

/* One call of fnn_fit_many: the units, who takes which, and the stop flag.
 * serial: no worker threads; the calling thread runs the units and calls
 * the caller's poll itself. */
struct many_run {
    fnn_many_job *jobs;
    int64_t n_jobs, n_units;
    many_unit_fn unit;
    char *scratch;
    int64_t scratch_bytes;
    atomic_int_fast64_t next;           /* next unit to take */
    atomic_int_fast64_t finished;       /* units done */
    atomic_int stop;
    int serial;
    fnn_poll_fn poll;
    void *poll_ctx;
    double poll_ms, last_poll;
    pthread_mutex_t mu;                 /* running, with cv */
    pthread_cond_t cv;
    int running;                        /* workers not yet exited */
};

/* The caller's poll, from the thread that called fnn_fit_many (serial
 * mode); nonzero sets the stop flag. */
static int many_call_poll(many_run *r)
{
    r->last_poll = now_ms();
    if (r->poll && r->poll(r->poll_ctx,
                           atomic_load(&r->finished), 0)) {
        atomic_store(&r->stop, 1);
    }
    return atomic_load(&r->stop);
}

/* The poll of a job's fnn_fit: the stop flag, and in serial mode the
 * caller's poll (fnn_fit calls this about every a->poll_ms). */
static int many_job_poll(void *ctx, int64_t epoch, int64_t step)
{
    many_run *r = ctx;
    (void)epoch;
    (void)step;
    if (r->serial) {
        return many_call_poll(r);
    }
    return atomic_load_explicit(&r->stop, memory_order_relaxed);
}

/* Between the steps of a group (many_impl.h): the stop flag, and in
 * serial mode the caller's poll every poll_ms, the clock read once in
 * `every` steps (adapted so that it is read about once per millisecond). */
typedef struct {
    int64_t every, count;
    double last_check;
} many_poller;

static void many_poller_init(many_poller *p)
{
    p->every = 1;
    p->count = 0;
    p->last_check = now_ms();
}

static __attribute__((noinline)) int many_poller_check(many_run *r,
                                                       many_poller *p)
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
    if (t - r->last_poll >= r->poll_ms) {
        return many_call_poll(r);
    }
    return atomic_load(&r->stop);
}

static inline int many_should_stop(many_run *r, many_poller *p)
{
    if (!r->serial) {
        return atomic_load_explicit(&r->stop, memory_order_relaxed);
    }
    return ++p->count >= p->every && many_poller_check(r, p);
}

/* Points a job's fit at this worker's gather buffers and at the run's stop
 * flag, with split steps off. */
static void many_prepare_job(many_run *r, fnn_many_job *job, void *xb,
                             void *yb, void *swb)
{
    fnn_fit_args *a = &job->a;
    a->xb = xb;
    a->yb = yb;
    a->swb = swb;
    memset(&a->split, 0, sizeof a->split);     /* min_rows 0: never split */
    a->split.backoff = -1;
    a->poll = many_job_poll;
    a->poll_ctx = r;
    a->poll_ms = r->serial ? r->poll_ms : WORKER_POLL_MS;
}

typedef struct {
    many_run *r;
    char *scratch;
} many_worker;

static void many_work(many_run *r, char *scratch)
{
    for (;;) {
        if (atomic_load(&r->stop)) {
            break;
        }
        int64_t u = atomic_fetch_add(&r->next, 1);
        if (u >= r->n_units) {
            break;
        }
        r->unit(r, u, scratch);
        atomic_fetch_add(&r->finished, 1);
        if (r->serial && now_ms() - r->last_poll >= r->poll_ms) {
            many_call_poll(r);
        }
    }
}

static void *many_worker_main(void *arg)
{
    many_worker *w = arg;
    many_run *r = w->r;
    many_work(r, w->scratch);
    pthread_mutex_lock(&r->mu);
    r->running -= 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Runs every unit of r on up to n_threads workers (serially on this
 * thread if there is one thread or none can be started), polling. */
static int many_run_all(many_run *r, int n_threads)
{
    pthread_t tid[MAX_THREADS];
    many_worker wk[MAX_THREADS];
    int started = 0;
    atomic_init(&r->next, 0);
    atomic_init(&r->finished, 0);
    atomic_init(&r->stop, 0);
    r->last_poll = now_ms();
    if (n_threads > MAX_THREADS) {
        n_threads = MAX_THREADS;
    }
    if (n_threads > r->n_units) {
        n_threads = (int)r->n_units;
    }
    r->serial = n_threads <= 1;
    if (!r->serial) {
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        r->running = 0;
        for (int i = 0; i < n_threads; i++) {
            wk[i].r = r;
            wk[i].scratch = r->scratch + (int64_t)i * r->scratch_bytes;
            pthread_mutex_lock(&r->mu);
            r->running += 1;
            pthread_mutex_unlock(&r->mu);
            if (pthread_create(&tid[i], NULL, many_worker_main, &wk[i]) != 0) {
                pthread_mutex_lock(&r->mu);
                r->running -= 1;
                pthread_mutex_unlock(&r->mu);
                break;
            }
            started += 1;
        }
        if (started == 0) {
            pthread_cond_destroy(&r->cv);
            pthread_mutex_destroy(&r->mu);
            r->serial = 1;
        }
    }
    if (r->serial) {
        many_work(r, r->scratch);
        return atomic_load(&r->stop) ? FNN_STOPPED : FNN_OK;
    }
    /* wait, waking every poll_ms to call the caller's poll (not holding
     * mu: it may take the GIL) */
    pthread_mutex_lock(&r->mu);
    while (r->running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double ms = r->poll_ms > 0 ? r->poll_ms : 50.0;
        long long ns = (long long)ts.tv_nsec + (long long)(ms * 1e6);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->running == 0) {
            break;
        }
        pthread_mutex_unlock(&r->mu);
        if (!atomic_load(&r->stop) && r->poll
            && r->poll(r->poll_ctx, atomic_load(&r->finished), 0)) {
            atomic_store(&r->stop, 1);
        }
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    return atomic_load(&r->stop) ? FNN_STOPPED : FNN_OK;
}

/* x as the compiler must take it: the value of an (empty) asm, which it
 * cannot fuse with the operation that consumes it (no multiply-add
 * contracted across it). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FNN_OPAQUE(x) __asm__("" : "+x"(x))
#elif defined(__GNUC__) && defined(__aarch64__)
#define FNN_OPAQUE(x) __asm__("" : "+w"(x))
#else
#define FNN_OPAQUE(x)                                                       \
    do {                                                                    \
        volatile double fnn_opaque_ = (x);                                  \
        (x) = fnn_opaque_;                                                  \
    } while (0)
#endif

/* The same for a vector (through memory: the baseline CPU target has no
 * register for a 32-byte vector). */
#if defined(__GNUC__)
#define FNN_VOPAQUE(v) __asm__("" : "+m"(v))
#else
#define FNN_VOPAQUE(v) FNN_OPAQUE(v)
#endif

/* Bytes rounded up to whole 64-byte lines. */
static int64_t many_round(int64_t bytes)
{
    return (bytes + 63) & ~(int64_t)63;
}

/* The rows a job's fit uses per step (fnn_fit's clamp of a.batch). */
static int64_t many_batch(const fnn_many_job *job)
{
    const int64_t n = job->a.n, b = job->a.batch;
    return b < 1 ? 1 : (b > n ? (n > 0 ? n : 1) : b);
}

/* Groups one vector wide even where the CPU has AVX-512 (the tests run
 * both widths on one machine). */
static int many_narrow;

void fnn_many_set_narrow(int on)
{
    many_narrow = on != 0;
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
#include "many_impl.h"
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
#include "many_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT
#undef LANE_INT
#undef LANE_N
