/* batch_impl.h -- what every step of the fit loop needs, on one thread or
 * split across two: a minibatch's rows (gathered when shuffled), the next
 * minibatch's prefetched, the optimizer update over a range of the
 * parameters, and the L2 term of the reported loss.  Part of train.c,
 * included once per dtype (REAL, SUF, KSUF) before split_impl.h and
 * train_impl.h. */

/* What the steps of one fit share. */
typedef struct {
    const fnn_net *net;         /* the network as given */
    const fnn_net *pieces;      /* the same with its GEMMs sent to the BLAS
                                   in pieces (fnn_split.chunk_mnk) that the
                                   BLAS runs on the calling thread: split
                                   steps and held steps use it */
    fnn_optim *opt;
    const fnn_fit_args *a;
    REAL *params, *grads, *ws;
    int32_t *iws;
} SUF(fit_ctx);

/* One minibatch: rows [i0, i0 + mb) of the epoch's order (NULL: in order);
 * next: rows of the following minibatch (0: none), prefetched during this
 * step; the step's loss scale, learning rate and weight decay; snap: where
 * to copy params before the update (NULL: no snapshot); drop: the step's
 * dropout (row0 = i0; NULL: none). */
typedef struct {
    const int64_t *order;
    int64_t i0, mb, next;
    double scale;
    REAL lr, wd;
    REAL *snap;
    const fnn_drop *drop;
} SUF(step);

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
 * minibatch.  A CSR input (a->xs) is not fetched: r.x is NULL or unused. */
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
        r.x = X ? X + (i0 + r0) * a->ldx : NULL;    /* NULL: CSR input */
        r.y = Y + (i0 + r0) * a->ldy;
        r.sw = SW ? SW + i0 + r0 : NULL;
        r.ldx = a->ldx;
        r.ldy = a->ldy;
        return r;
    }
    const int64_t *idx = order + i0 + r0, m = r1 - r0;
    REAL *xb = NULL, *yb = (REAL *)a->yb + r0 * nout;
    if (!a->xs) {                       /* a CSR x is read in place */
        xb = (REAL *)a->xb + r0 * nin;
        SUF(gather)(m, nin, idx, X, a->ldx, xb);
    }
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

/* The sum of a minibatch's sample weights (its row count without them). */
static double SUF(batch_weight)(const fnn_fit_args *a, const SUF(step) *st)
{
    const REAL *SW = (const REAL *)a->sw;
    if (!SW) {
        return (double)st->mb;
    }
    double w = 0.0;
    for (int64_t i = 0; i < st->mb; i++) {
        w += (double)SW[st->order ? st->order[st->i0 + i] : st->i0 + i];
    }
    return w;
}

/* The L2 term a step adds to its reported loss (fnn_fit_args.loss_l2):
 * 1/2 wd |W|^2 over the weights before the step. */
FNN_INLINE double SUF(l2_term)(const fnn_net *net, const fnn_fit_args *a,
                               REAL wd, const REAL *params)
{
    return a->loss_l2 && wd != 0
        ? 0.5 * (double)wd * KSUF(fnn_sum_squares)(net->n_weights, params)
        : 0.0;
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
    SUF(update_span)(&u, u.lo, u.hi);
}
