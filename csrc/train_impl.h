/* train_impl.h -- body of train.c, included once per dtype (REAL, SUF). */

static void SUF(gather)(int64_t rows, int64_t cols, const int64_t *idx,
                        const REAL *src, int64_t lds, REAL *dst)
{
    for (int64_t i = 0; i < rows; i++) {
        memcpy(dst + i * cols, src + idx[i] * lds, (size_t)cols * sizeof(REAL));
    }
}

/* Ask for the rows the next minibatch will gather, so that their cache
 * misses (random rows of a large X) overlap this step's arithmetic. */
static void SUF(prefetch_rows)(int64_t rows, int64_t cols, const int64_t *idx,
                               const REAL *src, int64_t lds)
{
#if defined(__GNUC__)
    const int64_t line = 64 / (int64_t)sizeof(REAL);
    for (int64_t i = 0; i < rows; i++) {
        const REAL *r = src + idx[i] * lds;
        for (int64_t j = 0; j < cols; j += line) {
            __builtin_prefetch(r + j, 0, 3);
        }
    }
#else
    (void)rows; (void)cols; (void)idx; (void)src; (void)lds;
#endif
}

/* Rows [r0, r1) of the minibatch whose first row is i0 in this epoch's
 * order: with an order, gathered into a->xb/yb/swb at rows [r0, r1), else
 * views of x/y/sw.  Threads may fetch disjoint row ranges of one
 * minibatch. */
typedef struct {
    const REAL *x, *y, *sw;
    int64_t ldx, ldy;
} SUF(rows);

static SUF(rows) SUF(fetch_rows)(const fnn_fit_args *a, int64_t nin,
                                 int64_t nout, const int64_t *order,
                                 int64_t i0, int64_t r0, int64_t r1)
{
    const REAL *X = (const REAL *)a->x, *Y = (const REAL *)a->y;
    const REAL *SW = (const REAL *)a->sw;
    SUF(rows) r;
    if (!order) {
        r.x = X + (i0 + r0) * a->ldx;
        r.y = Y + (i0 + r0) * a->ldy;
        r.sw = SW ? SW + i0 + r0 : NULL;
        r.ldx = a->ldx;
        r.ldy = a->ldy;
        return r;
    }
    const int64_t *idx = order + i0 + r0, m = r1 - r0;
    REAL *xb = (REAL *)a->xb + r0 * nin, *yb = (REAL *)a->yb + r0 * nout;
    SUF(gather)(m, nin, idx, X, a->ldx, xb);
    SUF(gather)(m, nout, idx, Y, a->ldy, yb);
    r.sw = NULL;
    if (SW) {
        REAL *swb = (REAL *)a->swb + r0;
        for (int64_t i = 0; i < m; i++) {
            swb[i] = SW[idx[i]];
        }
        r.sw = swb;
    }
    r.x = xb;
    r.y = yb;
    r.ldx = nin;
    r.ldy = nout;
    return r;
}

/* The optimizer update of params[lo, hi): grads[lo, hi) first gains g2
 * (the other half's gradient) if g2 is set, and params[lo, hi) are copied to
 * snap if it is set; then the step of opt (plain SGD too, when sgd is set:
 * the unfused form).  Weights (below net->n_weights) decay by wd, biases
 * not.  Every optimizer is elementwise, so ranges can run on different
 * threads and give the same numbers as one call over everything. */
typedef struct {
    const fnn_net *net;
    const fnn_optim *opt;
    REAL lr, wd;
    int sgd;
    REAL *params, *grads, *snap;
    const REAL *g2;
    int64_t lo, hi;
} SUF(update_job);

static void SUF(update_piece)(const SUF(update_job) *u, int64_t lo,
                              int64_t hi, REAL wd)
{
    const fnn_optim *opt = u->opt;
    const int64_t n = hi - lo;
    REAL *w = u->params + lo, *g = u->grads + lo;
    if (n <= 0) {
        return;
    }
    if (u->g2) {
        const REAL *g2 = u->g2 + lo;
        for (int64_t i = 0; i < n; i++) {
            g[i] += g2[i];
        }
    }
    if (u->snap) {
        memcpy(u->snap + lo, w, (size_t)n * sizeof(REAL));
    }
    if (opt->kind == FNN_OPT_MOMENTUM || opt->kind == FNN_OPT_NESTEROV) {
        SUF(fnn_momentum_step)(n, u->lr, (REAL)opt->momentum, wd,
                               opt->kind == FNN_OPT_NESTEROV, g, w,
                               (REAL *)opt->vel + lo);
    } else if (opt->kind == FNN_OPT_ADAM) {
        SUF(fnn_adam_step)(n, u->lr, (REAL)opt->beta1, (REAL)opt->beta2,
                           (REAL)opt->eps, opt->t, wd, g, w,
                           (REAL *)opt->vel + lo, (REAL *)opt->sq + lo);
    } else if (u->sgd) {
        SUF(fnn_sgd_step)(n, u->lr, wd, g, w);
    }
}

/* update_piece over [lo, hi): weights with decay, biases without. */
static void SUF(update_span)(const SUF(update_job) *u, int64_t lo, int64_t hi)
{
    const int64_t nw = u->net->n_weights;
    SUF(update_piece)(u, lo, hi < nw ? hi : nw, u->wd);
    SUF(update_piece)(u, lo > nw ? lo : nw, hi, 0);
}

static void SUF(update_run)(void *arg)
{
    const SUF(update_job) *u = arg;
    SUF(update_span)(u, u->lo, u->hi);
}

/* The second half of a split minibatch, run by the pool's helper: it
 * gathers its own rows [h, mb) (and prefetches its share of the next
 * minibatch), so they arrive in its own core's cache. */
typedef struct {
    const fnn_net *net;
    const fnn_fit_args *a;
    const int64_t *order;
    int64_t i0, h, mb, pf0, pf1;        /* prefetch order[pf0, pf1) */
    double scale;
    const REAL *params;
    REAL *grads, *ws;
    int32_t *iws;
    double loss;                        /* out */
    const REAL *x;                      /* out: its rows (ldx) and their */
    int64_t ldx;                        /* layer-0 dZ */
    REAL *dz0;
} SUF(half_job);

static void SUF(half_run)(void *arg)
{
    SUF(half_job) *j = arg;
    const fnn_net *net = j->net;
    SUF(rows) r = SUF(fetch_rows)(j->a, net->layers[0].n_in,
                                  net->layers[net->n_layers - 1].n_out,
                                  j->order, j->i0, j->h, j->mb);
    if (j->order && j->pf1 > j->pf0) {
        SUF(prefetch_rows)(j->pf1 - j->pf0, net->layers[0].n_in,
                           j->order + j->pf0, (const REAL *)j->a->x,
                           j->a->ldx);
    }
    /* params are only read here, so both halves may share them */
    j->loss = SUF(fnn_net_loss_dz0)(net, j->mb - j->h, r.x, r.ldx, r.y,
                                    r.ldy, r.sw, j->scale, (REAL *)j->params,
                                    j->grads, j->ws, j->iws, &j->dz0);
    j->x = r.x;
    j->ldx = r.ldx;
}

/* After both halves: one thread's share of the step.  Rows [r0, r1) of
 * layer 0's W get their gradient from both halves, x_1^T dZ_1 + x_2^T dZ_2
 * (in that order), fused into W as the SGD step W := (1 - lr wd) W - lr
 * grad when `fused`, else into grads and then the optimizer; and u's
 * range [lo, hi) of the other parameters (counted as if W0 were cut out
 * of params) gets the gradient sum and the update.  Layer 0 is usually the
 * widest: computed by rows of W, its gradient needs no sum over halves,
 * and with SGD no pass over it besides the GEMM. */
typedef struct {
    SUF(update_job) u;
    const REAL *x[2], *dz[2];
    int64_t ldx[2], m[2];
    int64_t r0, r1;
    int fused;
} SUF(tail_job);

static void SUF(tail_run)(void *arg)
{
    const SUF(tail_job) *t = arg;
    const SUF(update_job) *u = &t->u;
    const fnn_net *net = u->net;
    const fnn_layer *L0 = &net->layers[0];
    const int64_t cols = L0->n_out * L0->pieces;
    const int64_t w0 = L0->w_off, size = L0->n_in * cols;
    const int64_t rows = t->r1 - t->r0;
    if (rows > 0) {
        const int64_t lo = w0 + t->r0 * cols, hi = w0 + t->r1 * cols;
        REAL *c = t->fused ? u->params + lo : u->grads + lo;
        if (t->fused && u->snap) {
            memcpy(u->snap + lo, c, (size_t)(hi - lo) * sizeof(REAL));
        }
        for (int k = 0; k < 2; k++) {
            REAL beta = k ? 1 : t->fused ? 1 - u->lr * u->wd : 0;
            KSUF(fnn_gemm)(net->blas, FNN_TRANS, FNN_NOTRANS, rows, cols,
                          t->m[k], t->fused ? -u->lr : 1, t->x[k] + t->r0,
                          t->ldx[k], t->dz[k], cols, beta, c, cols);
        }
        if (!t->fused) {
            SUF(update_job) v = *u;
            v.g2 = NULL;                /* the whole gradient already */
            SUF(update_piece)(&v, lo, hi, u->wd);
        }
    }
    /* [lo, hi) without W0: below it as is, from it on shifted past it */
    if (u->lo < w0) {
        SUF(update_span)(u, u->lo, u->hi < w0 ? u->hi : w0);
    }
    if (u->hi > w0) {
        SUF(update_span)(u, (u->lo > w0 ? u->lo : w0) + size, u->hi + size);
    }
}

/* One step over the mb rows from i0 split in two halves, the second on
 * the helper: the loss (NaN or inf: nothing else done), then each thread's
 * tail_job, half of layer 0's W rows and half of the other parameters.
 * next: rows of the next minibatch (0 if none).  net: the fit's network
 * with its GEMMs in pieces (fnn_fit_args.chunk_mnk), so that both threads
 * run their BLAS calls themselves. */
static double SUF(split_step)(const fnn_net *net, fnn_optim *opt,
                              const fnn_fit_args *a, const int64_t *order,
                              int64_t i0, int64_t mb, int64_t next,
                              double scale, REAL lr, REAL wd, REAL *params,
                              REAL *grads, REAL *snap, REAL *ws, int32_t *iws,
                              int *starved)
{
    const int64_t h = (mb + 1) / 2, hn = (next + 1) / 2;
    REAL *g2 = (REAL *)a->grads2;
    /* each thread prefetches its half of the next minibatch */
    SUF(half_job) job = {net, a, order, i0, h, mb, i0 + mb + hn,
                         i0 + mb + next, scale, params, g2, (REAL *)a->ws2,
                         a->iws2, 0.0, NULL, 0, NULL};
    const double t0 = now_ms();
    fnn_pool_submit(SUF(half_run), &job);
    SUF(rows) r = SUF(fetch_rows)(a, net->layers[0].n_in,
                                  net->layers[net->n_layers - 1].n_out,
                                  order, i0, 0, h);
    if (order && hn > 0) {
        SUF(prefetch_rows)(hn, net->layers[0].n_in, order + i0 + mb,
                           (const REAL *)a->x, a->ldx);
    }
    REAL *dz0 = NULL;
    double loss = SUF(fnn_net_loss_dz0)(net, h, r.x, r.ldx, r.y, r.ldy, r.sw,
                                        scale, params, grads, ws, iws, &dz0);
    const double t1 = now_ms();
    fnn_pool_wait();
    /* the helper took over twice as long as this thread: its core is busy
     * with something else (another process, a spinning BLAS pool) */
    *starved = now_ms() - t1 > t1 - t0;
    loss += job.loss;
    if (!(loss - loss == 0)) {
        return loss;                    /* NaN or inf: touch nothing */
    }
    if (opt->kind == FNN_OPT_ADAM) {
        opt->t += 1;
    }
    const fnn_layer *L0 = &net->layers[0];
    const int64_t rest = net->n_params - L0->n_in * L0->n_out * L0->pieces;
    /* split at a multiple of 16 elements: no cache line shared */
    const int64_t cut = (rest / 2) & ~(int64_t)15;
    SUF(tail_job) mine = {{net, opt, lr, wd, lr != 0, params, grads, snap,
                           g2, 0, cut},
                          {r.x, job.x}, {dz0, job.dz0}, {r.ldx, job.ldx},
                          {h, mb - h}, 0, L0->n_in / 2,
                          opt->kind == FNN_OPT_SGD && lr != 0};
    SUF(tail_job) theirs = mine;
    theirs.u.lo = cut;
    theirs.u.hi = rest;
    theirs.r0 = mine.r1;
    theirs.r1 = L0->n_in;
    fnn_pool_submit(SUF(tail_run), &theirs);
    SUF(tail_run)(&mine);
    fnn_pool_wait();
    return loss;
}

/* The optimizer step after a step's gradient is in grads, unless SGD was
 * fused into the step (opt->kind FNN_OPT_SGD). */
FNN_INLINE void SUF(apply_optim)(const fnn_net *net, fnn_optim *opt, REAL lr,
                                 REAL wd, REAL *params, REAL *grads)
{
    if (opt->kind == FNN_OPT_SGD) {
        return;
    }
    if (opt->kind == FNN_OPT_ADAM) {
        opt->t += 1;
    }
    SUF(update_job) u = {net, opt, lr, wd, 0, params, grads, NULL, NULL, 0,
                         net->n_params};
    SUF(update_run)(&u);
}

/* The fit (the general loop; fit_lean below is the small-network one).
 * par: steps of at least a->par_rows rows are split across two threads. */
static int SUF(fit_loop)(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                         REAL *params, REAL *grads, REAL *ws, int32_t *iws,
                         int par)
{
    const fnn_layer *first = &net->layers[0];
    const fnn_layer *last = &net->layers[net->n_layers - 1];
    const int64_t n = a->n, nin = first->n_in, nout = last->n_out;
    const int64_t B = a->batch < 1 ? 1 : (a->batch > n ? n : a->batch);
    const int64_t steps = n > 0 ? (n + B - 1) / B : 0;
    const REAL *X = (const REAL *)a->x;
    const REAL *SW = (const REAL *)a->sw;
    const int sse = net->loss == FNN_SSE;
    const int fused = opt->kind == FNN_OPT_SGD;
    const int64_t nw = net->n_weights;
    const int64_t every = a->snapshot_every < 1 ? 1 : a->snapshot_every;
    /* epochs until the next snapshot epoch (no division per step) */
    int64_t to_snap = (every - (a->epoch0 % every)) % every;
    fnn_poller poller;
    fnn_poller_init(&poller, a->poll_ms);
    /* split-step back-off state, carried between calls in a (times in
     * ms on now_ms's clock) */
    double *hold = &a->split_hold, *backoff = &a->split_backoff;
    int n_starved = 0, n_good = 0;
    /* net with its GEMMs sent to the BLAS in pieces (fnn_blas.chunk_mnk)
     * that the BLAS runs on the calling thread: the split step's halves
     * (two threads in all, none borrowed from the BLAS's pool) and the
     * steps held unsplit.  Held steps never hand whole GEMMs to the BLAS's
     * threads: if the helper was starved by another process, the BLAS's
     * second thread would wait for that core too (seen: 25 ms a seed step
     * instead of 0.5 ms); if by the BLAS's own pool, spinning after the
     * caller's numpy work, whole GEMMs would be fast but keep that pool
     * awake, so that no later split step could get the core back (seen:
     * 0.45 ms a seed step for the rest of the fit instead of 0.33 after a
     * hold in pieces). */
    fnn_blas chunked_blas;
    fnn_net chunked_net = *net;
    if (par && net->blas && a->chunk_mnk > 0) {
        chunked_blas = *net->blas;
        chunked_blas.chunk_mnk = a->chunk_mnk;
        chunked_net.blas = &chunked_blas;
    }
    a->epochs_done = 0;
    a->steps_done = 0;
    a->bad_epoch = -1;
    a->bad_step = -1;

    for (int64_t e = 0; e < a->n_epochs; e++) {
        const REAL lr = (REAL)a->lr[e];
        const int64_t *order = a->order ? a->order + e * n : NULL;
        double esum = 0.0, wsum = 0.0;
        for (int64_t s = 0; s < steps; s++) {
            const int64_t i0 = s * B;
            const int64_t mb = B < n - i0 ? B : n - i0;
            const int64_t next = i0 + mb < n
                ? (B < n - i0 - mb ? B : n - i0 - mb) : 0;
            if (par && *hold != 0 && now_ms() >= *hold) {
                *hold = 0;              /* the hold is over */
            }
            const int held = par && *hold != 0;
            const int split = par && mb >= a->par_rows && !held;
            double wtot = (double)mb;
            if (SW) {
                wtot = 0.0;
                for (int64_t i = 0; i < mb; i++) {
                    wtot += (double)SW[order ? order[i0 + i] : i0 + i];
                }
            }
            const double scale = sse ? 1.0 : 1.0 / wtot;
            const REAL wd = (REAL)(opt->l2_per_row ? opt->l2 / wtot : opt->l2);
            REAL *snap = (a->snapshot && s == 0 && to_snap == 0)
                             ? (REAL *)a->snapshot : NULL;
            const double l2term = a->loss_l2 && wd != 0
                ? 0.5 * (double)wd * KSUF(fnn_sum_squares)(nw, params) : 0.0;
            double loss;
            if (split) {
                int starved = 0;
                loss = SUF(split_step)(&chunked_net, opt, a, order, i0, mb,
                                       next, scale, lr, wd, params, grads,
                                       snap, ws, iws, &starved);
                /* A starved helper makes split steps slower than one thread
                 * (seen: 2.3x slower with the other core compiling, 2.5x
                 * beside OpenBLAS's spinning pool).  After 4 such steps in
                 * a row run unsplit for FNN_HOLD_MS, doubling each time it
                 * recurs up to 64 times that, reset by 256 good steps. */
                if (!starved) {
                    n_starved = 0;
                    if (++n_good >= 256 && *backoff > 0) {
                        *backoff = 0;
                    }
                } else if (*backoff >= 0 && ++n_starved >= 4) {
                    n_starved = n_good = 0;
                    *backoff = *backoff == 0 ? FNN_HOLD_MS
                             : *backoff < 32 * FNN_HOLD_MS ? 2 * *backoff
                             : *backoff;
                    *hold = now_ms() + *backoff;
                }
            } else {
                SUF(rows) r = SUF(fetch_rows)(a, nin, nout, order, i0, 0, mb);
                if (order && next > 0) {
                    SUF(prefetch_rows)(next, nin, order + i0 + mb, X, a->ldx);
                }
                loss = SUF(fnn_net_loss_grad)(held ? &chunked_net : net, mb, r.x,
                                              r.ldx, r.y, r.ldy,
                                              r.sw, scale, fused ? lr : 0,
                                              fused ? wd : 0, params, grads,
                                              snap, ws, iws, 0);
            }
            if (!(loss - loss == 0)) {
                a->bad_epoch = e;
                a->bad_step = s;
                return FNN_ERR_NONFINITE;
            }
            if (snap) {
                a->snapshot_epoch = e;
            }
            if (!split) {               /* split_step applied it */
                SUF(apply_optim)(net, opt, lr, wd, params, grads);
            }
            loss = loss * a->loss_scale + l2term;
            {
                const double wgt = a->mean_by_rows ? (double)mb : wtot;
                esum += sse ? loss : loss * wgt;
                wsum += wgt;
            }
            a->steps_done += 1;
            if (a->poll && fnn_poller_due(&poller)
                && a->poll(a->poll_ctx, e, s)) {
                a->epoch_loss[e] = NAN;     /* epoch not finished */
                return FNN_STOPPED;
            }
        }
        a->epoch_loss[e] = sse ? esum : (wsum > 0 ? esum / wsum : 0.0);
        a->epochs_done = e + 1;
        to_snap = to_snap == 0 ? every - 1 : to_snap - 1;
    }
    return FNN_OK;
}

/* The fit of a network on the small-network step (net->lanes, lanes_ws
 * set) without sample weights or split steps: fit_loop's loop with each
 * step the lanes step inlined, reading shuffled rows through the order in
 * place, what cannot occur here left out, and what is fixed for the fit
 * worked out once (per step it cost a tenth of a 2 -> 4 -> 1 step).
 * one_block (a constant at each use): every epoch is one full-batch step
 * over the n <= LANE_N rows in order, their x and y blocks transposed
 * into the scratch once for the whole fit.  Same results, counters and
 * exits as fit_loop. */
FNN_INLINE int SUF(fit_lean)(const fnn_net *net, fnn_optim *opt,
                             fnn_fit_args *a, REAL *params, REAL *grads,
                             const int one_block)
{
    const int64_t n = a->n, n_epochs = a->n_epochs;
    const int64_t B = one_block ? n
                    : a->batch < 1 ? 1 : (a->batch > n ? n : a->batch);
    const int64_t steps = one_block ? 1 : n > 0 ? (n + B - 1) / B : 0;
    const int64_t B_last = n - (steps - 1) * B;     /* the last step's rows */
    const REAL *X = (const REAL *)a->x, *Y = (const REAL *)a->y;
    const int64_t ldx = a->ldx, ldy = a->ldy;
    const int64_t *const orders = one_block ? NULL : a->order;
    const int sse = net->loss == FNN_SSE;
    const int fused = opt->kind == FNN_OPT_SGD;
    /* loss scale and weight decay of a step of B rows, and of the last */
    const double scale_B = sse ? 1.0 : 1.0 / (double)B;
    const double scale_last = sse ? 1.0 : 1.0 / (double)B_last;
    const REAL wd_B = (REAL)(opt->l2_per_row ? opt->l2 / (double)B : opt->l2);
    const REAL wd_last = (REAL)(opt->l2_per_row ? opt->l2 / (double)B_last
                                                : opt->l2);
    const int64_t every = a->snapshot_every < 1 ? 1 : a->snapshot_every;
    int64_t to_snap = (every - (a->epoch0 % every)) % every;
    fnn_poller poller;
    fnn_poller_init(&poller, a->poll_ms);
    int64_t e = 0, steps_done = 0, snap_epoch = -1;
    int status = FNN_OK;
    a->bad_epoch = -1;
    a->bad_step = -1;
    if (one_block) {
        SUF(lanes_block)(net, 0, n, X, ldx, Y, ldy, NULL);
    }
    for (; e < n_epochs; e++) {
        const REAL lr = (REAL)a->lr[e];
        const int64_t *order = orders ? orders + e * n : NULL;
        double esum = 0.0, wsum = 0.0;
        for (int64_t s = 0; s < steps; s++) {
            const int64_t i0 = s * B;
            const int last = one_block || s == steps - 1;
            const int64_t mb = last ? B_last : B;
            const double scale = last ? scale_last : scale_B;
            const REAL wd = last ? wd_last : wd_B;
            REAL *snap = s == 0 && to_snap == 0 ? (REAL *)a->snapshot : NULL;
            const double l2term = a->loss_l2 && wd != 0
                ? 0.5 * (double)wd * KSUF(fnn_sum_squares)(net->n_weights,
                                                           params) : 0.0;
            double loss = SUF(lanes_body)(net, mb, order ? X : X + i0 * ldx,
                                          ldx, order ? Y : Y + i0 * ldy, ldy,
                                          order ? order + i0 : NULL, scale,
                                          fused ? lr : 0, fused ? wd : 0,
                                          params, grads, snap, 0, one_block);
            if (!(loss - loss == 0)) {
                a->bad_epoch = e;
                a->bad_step = s;
                status = FNN_ERR_NONFINITE;
                goto out;
            }
            if (snap) {
                snap_epoch = e;
            }
            SUF(apply_optim)(net, opt, lr, wd, params, grads);
            loss = loss * a->loss_scale + l2term;
            esum += sse ? loss : loss * (double)mb;
            wsum += (double)mb;
            steps_done += 1;
            if (a->poll && fnn_poller_due(&poller)) {
                a->epochs_done = e;
                a->steps_done = steps_done;
                if (a->poll(a->poll_ctx, e, s)) {
                    a->epoch_loss[e] = NAN;     /* epoch not finished */
                    status = FNN_STOPPED;
                    goto out;
                }
            }
        }
        a->epoch_loss[e] = sse ? esum : (wsum > 0 ? esum / wsum : 0.0);
        to_snap = to_snap == 0 ? every - 1 : to_snap - 1;
    }
out:
    a->epochs_done = e;
    a->steps_done = steps_done;
    if (snap_epoch >= 0) {
        a->snapshot_epoch = snap_epoch;
    }
    return status;
}

/* Cloned as the lanes step is (FNN_LANES_CLONES): AVX2+FMA and baseline. */
FNN_LANES_CLONES __attribute__((noinline))
static int SUF(fit_loop_lanes)(const fnn_net *net, fnn_optim *opt,
                               fnn_fit_args *a, REAL *params, REAL *grads)
{
    if (a->n >= 1 && a->n <= LANE_N && a->batch >= a->n && !a->order) {
        return SUF(fit_lean)(net, opt, a, params, grads, 1);
    }
    return SUF(fit_lean)(net, opt, a, params, grads, 0);
}

int SUF(fnn_fit)(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                 REAL *params, REAL *grads, REAL *ws, int32_t *iws)
{
    /* a minibatch splits when it has at least par_rows rows */
    const int64_t B = a->batch < 1 ? 1 : (a->batch > a->n ? a->n : a->batch);
    if (net->lanes && net->lanes_ws && !a->sw
        && (a->par_rows < 2 || B < a->par_rows)) {
        return SUF(fit_loop_lanes)(net, opt, a, params, grads);
    }
    int par = a->par_rows >= 2 && a->ws2 && a->grads2
              && (a->iws2 || net->iws_cols == 0) && fnn_pool_acquire();
    int status = SUF(fit_loop)(net, opt, a, params, grads, ws, iws, par);
    if (par) {
        fnn_pool_release();
    }
    return status;
}
