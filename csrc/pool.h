/* pool.h -- the one helper thread of the training loop (pool.c), used by
 * the split step (split_impl.h).  Not part of the kernel API (fastnn.h):
 * the helper is process-wide state, owned by one fit at a time. */
#ifndef FASTNN_POOL_H
#define FASTNN_POOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*fnn_task_fn)(void *arg);

/* Take the helper for this thread (starting it on first use): 1, or 0 if
 * another fit holds it or it cannot be started.  While held it spins
 * between tasks; fnn_pool_release lets it sleep. */
int fnn_pool_acquire(void);
void fnn_pool_release(void);

/* Run fn(arg) on the helper (held by the caller, no task in flight);
 * fnn_pool_wait returns once it has finished, its writes visible. */
void fnn_pool_submit(fnn_task_fn fn, void *arg);
void fnn_pool_wait(void);

/* The helper sleeps us microseconds before each task (0, the default:
 * never).  A diagnostic: it reproduces a helper whose core is busy
 * elsewhere, the condition the split step's back-off (split.h) reacts to,
 * so that the back-off can be exercised on an idle machine.  Process-wide;
 * safe to call at any time from any thread. */
void fnn_pool_set_task_delay(int us);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_POOL_H */
