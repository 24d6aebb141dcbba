/* split_impl.h -- the split step: one minibatch across two threads.  Part
 * of train.c, included once per dtype after batch_impl.h; when to split is
 * split.h's, the helper thread pool.c's.
 *
 * The minibatch's rows are cut in two halves.  The helper thread gathers
 * and runs the second half (forward, loss, backward down to layer 0's dZ)
 * while the calling thread does the same for the first; each prefetches
 * its half of the next minibatch, so rows arrive in the cache of the core
 * that uses them.  Then each thread finishes half of the step (tail_run):
 * layer 0's weight gradient by rows of W, from both halves' dZ, and the
 * optimizer over half of the other parameters, their two gradients summed
 * first.  Layer 0 is usually the widest: computed by rows of W its
 * gradient needs no sum over halves, and with plain SGD no pass besides
 * its GEMM (the update is fused into it).  Sums always run in the same
 * order, so results are reproducible run to run and differ from the
 * one-thread step by rounding only. */

/* The second half of a split minibatch, run by the helper: its rows
 * [h, mb) gathered and its share of the next minibatch prefetched on the
 * helper's own core. */
typedef struct {
    const fnn_net *net;
    const fnn_fit_args *a;
    const int64_t *order;
    int64_t i0, h, mb, pf0, pf1;        /* prefetch order[pf0, pf1) */
    double scale;
    const fnn_drop *drop;               /* its rows' dropout, or NULL */
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
                                    j->grads, j->ws, j->iws, &j->dz0, j->drop);
    j->x = r.x;
    j->ldx = r.ldx;
}

/* After both halves: one thread's share of the step.  Rows [r0, r1) of
 * layer 0's W get their gradient from both halves, x_1^T dZ_1 + x_2^T dZ_2
 * (in that order), fused into W as the SGD step W := (1 - lr wd) W - lr
 * grad when `fused`, else into grads and then the optimizer; and u's
 * range [lo, hi) of the other parameters (counted as if W0 were cut out
 * of params) gets the gradient sum and the update. */
typedef struct {
    SUF(update_job) u;
    const REAL *x[2], *dz[2];
    int64_t ldx[2], m[2];
    int64_t r0, r1;
    int fused;
} SUF(tail_job);

/* tail_run's layer-0 part: W0's rows [r0, r1). */
static void SUF(tail_w0)(const SUF(tail_job) *t)
{
    const SUF(update_job) *u = &t->u;
    const fnn_net *net = u->net;
    const fnn_layer *L0 = &net->layers[0];
    const int64_t cols = L0->n_out * L0->pieces;
    const int64_t rows = t->r1 - t->r0;
    if (rows <= 0) {
        return;
    }
    const int64_t lo = L0->w_off + t->r0 * cols;
    const int64_t hi = L0->w_off + t->r1 * cols;
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
        v.g2 = NULL;                    /* the whole gradient already */
        SUF(update_piece)(&v, lo, hi, u->wd);
    }
}

static void SUF(tail_run)(void *arg)
{
    const SUF(tail_job) *t = arg;
    const SUF(update_job) *u = &t->u;
    const fnn_layer *L0 = &u->net->layers[0];
    const int64_t w0 = L0->w_off, size = L0->n_in * L0->n_out * L0->pieces;
    SUF(tail_w0)(t);
    /* [lo, hi) without W0: below it as is, from it on shifted past it */
    if (u->lo < w0) {
        SUF(update_span)(u, u->lo, u->hi < w0 ? u->hi : w0);
    }
    if (u->hi > w0) {
        SUF(update_span)(u, (u->lo > w0 ? u->lo : w0) + size, u->hi + size);
    }
}

/* The step of st's minibatch split in two halves, the second on the
 * helper (held by this fit), with c->pieces as the network: the loss (not
 * finite: nothing else done), then each thread's tail_run.  *starved: the
 * helper's half took over twice as long as the caller's (split.h).
 * Returns the loss. */
static double SUF(split_step)(const SUF(fit_ctx) *c, const SUF(step) *st,
                              int *starved)
{
    const fnn_net *net = c->pieces;
    const fnn_fit_args *a = c->a;
    fnn_optim *opt = c->opt;
    const int64_t i0 = st->i0, mb = st->mb;
    const int64_t h = (mb + 1) / 2, hn = (st->next + 1) / 2;
    REAL *g2 = (REAL *)a->split.grads2;
    /* the helper's rows start h positions further into the epoch */
    fnn_drop drop2 = {0, 0, 0};
    if (st->drop) {
        drop2 = *st->drop;
        drop2.row0 += h;
    }
    /* each thread prefetches its half of the next minibatch */
    SUF(half_job) job = {net, a, st->order, i0, h, mb, i0 + mb + hn,
                         i0 + mb + st->next, st->scale,
                         st->drop ? &drop2 : NULL, c->params, g2,
                         (REAL *)a->split.ws2, a->split.iws2, 0.0, NULL, 0,
                         NULL};
    const double t0 = fnn_now_ms();
    fnn_pool_submit(SUF(half_run), &job);
    SUF(rows) r = SUF(fetch_rows)(a, net->layers[0].n_in,
                                  net->layers[net->n_layers - 1].n_out,
                                  st->order, i0, 0, h);
    if (st->order && hn > 0) {
        SUF(prefetch_rows)(hn, net->layers[0].n_in, st->order + i0 + mb,
                           (const REAL *)a->x, a->ldx);
    }
    REAL *dz0 = NULL;
    double loss = SUF(fnn_net_loss_dz0)(net, h, r.x, r.ldx, r.y, r.ldy, r.sw,
                                        st->scale, c->params, c->grads, c->ws,
                                        c->iws, &dz0, st->drop);
    const double t1 = fnn_now_ms();
    fnn_pool_wait();
    *starved = fnn_split_starved(t0, t1, fnn_now_ms());
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
    const REAL lr = st->lr, wd = st->wd;
    SUF(tail_job) mine = {{net, opt, lr, wd, lr != 0, c->params, c->grads,
                           st->snap, g2, 0, cut},
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
