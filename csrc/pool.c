/* pool.c -- the one helper thread of the training loop.
 *
 * fnn_fit can split a minibatch in two: the calling thread runs the forward
 * and backward pass of the first half while this helper runs the second
 * half (see split_impl.h).  At the sizes where that pays (steps of tens to
 * hundreds of microseconds, GEMMs too small for the BLAS to thread well)
 * the hand-off must cost far less than a microsecond, so while a fit holds
 * the helper it spins between tasks; it falls asleep on a condition
 * variable after SPIN_LIMIT idle polls (a few milliseconds), and within
 * LINGER polls once no fit holds it, so an idle fastnn never competes with
 * the BLAS threads.
 *
 * One fit at a time holds the helper (fnn_pool_acquire is a try-lock); a
 * fit that finds it taken runs single-threaded.  After fork() the child
 * starts without a helper and makes a new one when first asked. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include "pool.h"

/* Idle polls before the helper sleeps while a fit holds it: a few
 * milliseconds, far longer than the gap between two tasks of a fit. */
#define SPIN_LIMIT (1L << 16)
/* Idle polls before it sleeps once no fit holds it (about 0.1 ms): a
 * caller that runs one fit per epoch (fastnn.sklearn) finds the helper
 * awake instead of paying a futex wake-up at every epoch. */
#define LINGER (1L << 12)
/* Polls fnn_pool_wait spins before it yields its core: the helper's task
 * normally ends within them; past them the helper has lost its core. */
#define WAIT_SPINS 4096
/* While spinning, the helper yields its core every this many polls (a power
 * of two), so that a thread waiting for that core is not shut out. */
#define YIELD_EVERY 256

static pthread_mutex_t owner = PTHREAD_MUTEX_INITIALIZER; /* held by a fit */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;    /* for sleeping */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int started;                     /* under owner */
static atomic_int active;               /* a fit holds the helper: spin */
static atomic_uint_fast64_t posted, done;
static atomic_int delay_us;             /* fnn_pool_set_task_delay */
static fnn_task_fn task_fn;             /* published by posted (release) */
static void *task_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint_fast64_t start_seq;         /* posted when the helper started */

static void *helper_main(void *unused)
{
    (void)unused;
    /* not posted's value now: a task may already have been posted */
    uint_fast64_t seen = start_seq;
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "fastnn-helper");
#endif
    for (;;) {
        long spins = 0;
        while (atomic_load_explicit(&posted, memory_order_acquire) == seen) {
            long limit = atomic_load_explicit(&active, memory_order_relaxed)
                ? SPIN_LIMIT : LINGER;
            if (spins++ < limit) {
                cpu_relax();
                if ((spins & (YIELD_EVERY - 1)) == 0) {
                    sched_yield();
                }
                continue;
            }
            pthread_mutex_lock(&mu);
            while (atomic_load_explicit(&posted, memory_order_acquire) == seen) {
                pthread_cond_wait(&cv, &mu);
            }
            pthread_mutex_unlock(&mu);
        }
        seen += 1;
        int delay = atomic_load_explicit(&delay_us, memory_order_relaxed);
        if (delay > 0) {                /* a helper whose core is busy */
            struct timespec ts = {delay / 1000000, (delay % 1000000) * 1000L};
            nanosleep(&ts, NULL);
        }
        task_fn(task_arg);
        atomic_store_explicit(&done, seen, memory_order_release);
    }
    return NULL;
}

/* In a forked child the helper thread does not exist (and a lock may have
 * been held by a parent thread): start over. */
static void after_fork_child(void)
{
    pthread_mutex_init(&owner, NULL);
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&cv, NULL);
    started = 0;
    atomic_store(&active, 0);
    atomic_store(&posted, 0);
    atomic_store(&done, 0);
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

int fnn_pool_acquire(void)
{
    pthread_once(&once, register_fork_handler);
    if (pthread_mutex_trylock(&owner) != 0) {
        return 0;
    }
    if (!started) {
        pthread_t t;
        pthread_attr_t attr;
        int ok = pthread_attr_init(&attr) == 0;
        ok = ok && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
        /* the passes need little stack: kernels keep no large locals */
        ok = ok && pthread_attr_setstacksize(&attr, 1 << 20) == 0;
        start_seq = atomic_load(&posted);
        ok = ok && pthread_create(&t, &attr, helper_main, NULL) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            pthread_mutex_unlock(&owner);
            return 0;
        }
        started = 1;
    }
    atomic_store_explicit(&active, 1, memory_order_relaxed);
    return 1;
}

void fnn_pool_release(void)
{
    atomic_store_explicit(&active, 0, memory_order_relaxed);
    pthread_mutex_unlock(&owner);
}

void fnn_pool_submit(fnn_task_fn fn, void *arg)
{
    task_fn = fn;
    task_arg = arg;
    atomic_fetch_add_explicit(&posted, 1, memory_order_release);
    pthread_mutex_lock(&mu);            /* wake it if it sleeps */
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

void fnn_pool_wait(void)
{
    uint_fast64_t want = atomic_load_explicit(&posted, memory_order_relaxed);
    long spins = 0;
    while (atomic_load_explicit(&done, memory_order_acquire) != want) {
        if (++spins < WAIT_SPINS) {
            cpu_relax();
        } else {
            sched_yield();              /* the helper lost its core */
        }
    }
}

void fnn_pool_set_task_delay(int us)
{
    atomic_store(&delay_us, us > 0 ? us : 0);
}
