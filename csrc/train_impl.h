/* train_impl.h -- the fit loops of train.c, included once per dtype (REAL,
 * SUF, KSUF) after batch_impl.h and split_impl.h.  fit_loop is the general
 * loop; fit_lean the one for networks on the small-network step.  Both
 * keep their epochs with train.c's fnn_epochs. */

/* A step on the calling thread alone: the rows (gathered if shuffled), the
 * next minibatch's rows prefetched, forward, loss and backward (plain SGD
 * fused into it), then the optimizer.  net: the fit's network, or c->pieces
 * while the split is held.  Returns the loss; if it is not finite nothing
 * was changed. */
static double SUF(plain_step)(const SUF(fit_ctx) *c, const fnn_net *net,
                              const SUF(step) *st)
{
    const fnn_fit_args *a = c->a;
    const int64_t nin = net->layers[0].n_in;
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    const int fused = c->opt->kind == FNN_OPT_SGD;
    SUF(rows) r = SUF(fetch_rows)(a, nin, nout, st->order, st->i0, 0, st->mb);
    if (st->order && st->next > 0) {
        SUF(prefetch_rows)(st->next, nin, st->order + st->i0 + st->mb,
                           (const REAL *)a->x, a->ldx);
    }
    double loss = SUF(fnn_net_loss_grad)(net, st->mb, r.x, r.ldx, r.y, r.ldy,
                                         r.sw, st->scale, fused ? st->lr : 0,
                                         fused ? st->wd : 0, c->params,
                                         c->grads, st->snap, c->ws, c->iws, 0,
                                         st->drop);
    if (loss - loss == 0) {
        SUF(apply_optim)(c->net, c->opt, st->lr, st->wd, c->params, c->grads);
    }
    return loss;
}

/* A step whose input is sparse (a->xs), on the calling thread: targets
 * gathered (x is read in place through the order), forward, loss and
 * backward down to layer 0's dZ, then layer 0's W updated by
 * fnn_csr_update (its gradient X_b^T dZ formed row by row of W inside the
 * optimizer's one pass over W and its state) and the other parameters by
 * the optimizer (plain SGD unfused).  *l2term: the step's L2 term (see
 * l2_term), with layer 0's |W|^2 summed in that same pass.  Returns the
 * loss; if it is not finite nothing was changed. */
static double SUF(sparse_step)(const SUF(fit_ctx) *c, const SUF(step) *st,
                               double *l2term)
{
    const fnn_fit_args *a = c->a;
    const fnn_net *net = c->net;
    fnn_optim *opt = c->opt;
    const fnn_layer *L0 = &net->layers[0];
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    const int64_t cols = L0->n_out * L0->pieces;
    const int64_t w0 = L0->w_off, w1 = L0->w_off + L0->n_in * cols;
    const int64_t nw = net->n_weights;
    REAL *params = c->params;
    SUF(rows) r = SUF(fetch_rows)(a, L0->n_in, nout, st->order, st->i0, 0,
                                  st->mb);
    const fnn_csr_rows xs = {a->xs, st->order ? 0 : st->i0,
                             st->order ? st->order + st->i0 : NULL};
    REAL *dz0 = NULL;
    *l2term = 0.0;
    double loss = SUF(fnn_net_loss_dz0_csr)(net, st->mb, &xs, r.y, r.ldy,
                                            r.sw, st->scale, params, c->grads,
                                            c->ws, c->iws, &dz0, st->drop);
    if (!(loss - loss == 0)) {
        return loss;                    /* NaN or inf: touch nothing */
    }
    if (SUF(fnn_csr_batch)(a->xs, st->mb, xs.row0, xs.rows, a->xsb) < 0) {
        return NAN;                     /* xsb too small: the caller's bug */
    }
    if (st->snap) {
        memcpy(st->snap, params, (size_t)net->n_params * sizeof(REAL));
    }
    if (opt->kind == FNN_OPT_ADAM) {
        opt->t += 1;
    }
    const int want = a->loss_l2 && st->wd != 0;
    double ss = 0.0, ss0 = 0.0;
    if (want) {                         /* the other weights, before the step */
        ss = KSUF(fnn_sum_squares)(w0 < nw ? w0 : nw, params)
           + (w1 < nw ? KSUF(fnn_sum_squares)(nw - w1, params + w1) : 0.0);
    }
    REAL *vel = (REAL *)opt->vel, *sq = (REAL *)opt->sq;
    SUF(fnn_csr_update)(a->xsb, 0, L0->n_in, cols, dz0, cols, opt, st->lr,
                        st->wd, params + w0, vel ? vel + w0 : NULL,
                        sq ? sq + w0 : NULL, want ? &ss0 : NULL);
    SUF(update_job) u = {net, opt, st->lr, st->wd, 1, params, c->grads, NULL,
                         NULL, 0, 0};
    SUF(update_span)(&u, 0, w0);
    SUF(update_span)(&u, w1, net->n_params);
    if (want) {
        *l2term = 0.5 * (double)st->wd * (ss + ss0);
    }
    return loss;
}

/* Minibatch s of an epoch over n rows in batches of B (the last partial). */
FNN_INLINE void SUF(step_rows)(SUF(step) *st, int64_t s, int64_t B,
                               int64_t n)
{
    st->i0 = s * B;
    st->mb = B < n - st->i0 ? B : n - st->i0;
    const int64_t rest = n - st->i0 - st->mb;
    st->next = rest > 0 ? (B < rest ? B : rest) : 0;
}

/* The general fit.  par: this fit holds pool.c's helper, and steps of at
 * least a->split.min_rows rows are split across two threads while split.h
 * does not hold them back. */
static int SUF(fit_loop)(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                         REAL *params, REAL *grads, REAL *ws, int32_t *iws,
                         int par)
{
    const int64_t n = a->n, n_epochs = a->n_epochs;
    fnn_epochs ep;
    fnn_epochs_init(&ep, a, net->loss == FNN_SSE);
    fnn_split_ctl split;
    fnn_split_ctl_init(&split, &a->split);
    /* Split steps and held steps send their GEMMs to the BLAS in pieces
     * that it runs on the calling thread: two threads in all, none taken
     * from the BLAS's pool.  A held step must not hand whole GEMMs to the
     * BLAS's threads either: if another process starved the helper, the
     * BLAS's own second thread would wait for that core too; if the BLAS's
     * pool itself did (spinning after the caller's numpy work), whole
     * GEMMs would keep it awake, and no later split step would get the
     * core back. */
    fnn_blas pieces_blas;
    fnn_net pieces = *net;
    if (par && net->blas && a->split.chunk_mnk > 0) {
        pieces_blas = *net->blas;
        pieces_blas.chunk_mnk = a->split.chunk_mnk;
        pieces.blas = &pieces_blas;
    }
    const SUF(fit_ctx) c = {net, &pieces, opt, a, params, grads, ws, iws};
    fnn_poller poller;
    fnn_poller_init(&poller, a->poll_ms);
    fnn_drop drop = {a->drop_seed, 0, 0};
    const int dropout = a->dropout && net->dropout;
    for (int64_t e = 0; e < n_epochs; e++) {
        SUF(step) st;
        st.order = a->order ? a->order + e * n : NULL;
        st.lr = (REAL)a->lr[a->lr_const ? 0 : e];
        st.drop = dropout ? &drop : NULL;
        drop.epoch = a->epoch0 + e;
        for (int64_t s = 0; s < ep.steps; s++) {
            SUF(step_rows)(&st, s, ep.batch, n);
            drop.row0 = st.i0;
            const int held = par && fnn_split_held(&split);
            const double wtot = SUF(batch_weight)(a, &st);
            st.scale = ep.sse ? 1.0 : 1.0 / wtot;
            st.wd = (REAL)(opt->l2_per_row ? opt->l2 / wtot : opt->l2);
            st.snap = a->snapshot && fnn_epochs_snap_due(&ep, s)
                    ? (REAL *)a->snapshot : NULL;
            double l2term = a->xs ? 0.0 : SUF(l2_term)(net, a, st.wd, params);
            double loss;
            if (a->xs) {
                loss = SUF(sparse_step)(&c, &st, &l2term);
            } else if (par && !held && st.mb >= a->split.min_rows) {
                int starved = 0;
                loss = SUF(split_step)(&c, &st, &starved);
                fnn_split_record(&split, starved);
            } else {
                loss = SUF(plain_step)(&c, held ? &pieces : net, &st);
            }
            if (!(loss - loss == 0)) {
                return fnn_epochs_diverged(&ep, a, e, s);
            }
            if (st.snap) {
                ep.snap_epoch = e;
            }
            fnn_epochs_add(&ep, loss * a->loss_scale + l2term,
                           a->mean_by_rows ? (double)st.mb : wtot);
            if (fnn_epochs_poll(&ep, &poller, a, e, s)) {
                return fnn_epochs_finish(&ep, a, e, FNN_STOPPED);
            }
        }
        fnn_epochs_end(&ep, a, e);
    }
    return fnn_epochs_finish(&ep, a, n_epochs, FNN_OK);
}

/* The fit of a network on the small-network step (net->lanes, lanes_ws
 * set) without sample weights or split steps: fit_loop's loop with each
 * step the lanes step inlined, reading shuffled rows through the order in
 * place, what cannot occur here left out, and what is fixed for the fit
 * (each step size's loss scale and weight decay) worked out once: at this
 * size the per-step bookkeeping is a sizeable part of a step.
 * one_block (a constant at each use): every epoch is one full-batch step
 * over the n <= LANE_N rows in order, their x and y blocks transposed
 * into the scratch once for the whole fit.  Same results, counters and
 * exits as fit_loop. */
FNN_INLINE int SUF(fit_lean)(const fnn_net *net, fnn_optim *opt,
                             fnn_fit_args *a, REAL *params, REAL *grads,
                             const int one_block)
{
    /* everything read from a before the poller's clock call, which the
     * compiler must assume could change *a: the bounds fit_loop_lanes
     * checked (n <= LANE_N) then still hold here, and the one-block step
     * is compiled for a single block */
    const int64_t n = a->n, n_epochs = a->n_epochs;
    fnn_epochs ep;
    fnn_epochs_init(&ep, a, net->loss == FNN_SSE);
    const int64_t B = one_block ? n : ep.batch;
    const int64_t steps = one_block ? 1 : ep.steps;
    const int64_t B_last = n - (steps - 1) * B;     /* the last step's rows */
    const REAL *X = (const REAL *)a->x, *Y = (const REAL *)a->y;
    const int64_t ldx = a->ldx, ldy = a->ldy;
    const int64_t *const orders = one_block ? NULL : a->order;
    const int fused = opt->kind == FNN_OPT_SGD;
    /* loss scale and weight decay of a step of B rows, and of the last */
    const double scale_B = ep.sse ? 1.0 : 1.0 / (double)B;
    const double scale_last = ep.sse ? 1.0 : 1.0 / (double)B_last;
    const REAL wd_B = (REAL)(opt->l2_per_row ? opt->l2 / (double)B : opt->l2);
    const REAL wd_last = (REAL)(opt->l2_per_row ? opt->l2 / (double)B_last
                                                : opt->l2);
    fnn_poller poller;
    fnn_poller_init(&poller, a->poll_ms);
    if (one_block) {
        SUF(lanes_block)(net, 0, n, X, ldx, Y, ldy, NULL);
    }
    for (int64_t e = 0; e < n_epochs; e++) {
        const REAL lr = (REAL)a->lr[a->lr_const ? 0 : e];
        const int64_t *order = orders ? orders + e * n : NULL;
        for (int64_t s = 0; s < steps; s++) {
            const int64_t i0 = s * B;
            const int last = one_block || s == steps - 1;
            const int64_t mb = last ? B_last : B;
            const double scale = last ? scale_last : scale_B;
            const REAL wd = last ? wd_last : wd_B;
            REAL *snap = fnn_epochs_snap_due(&ep, s) ? (REAL *)a->snapshot
                                                     : NULL;
            const double l2term = SUF(l2_term)(net, a, wd, params);
            double loss = SUF(lanes_body)(net, mb, order ? X : X + i0 * ldx,
                                          ldx, order ? Y : Y + i0 * ldy, ldy,
                                          order ? order + i0 : NULL, scale,
                                          fused ? lr : 0, fused ? wd : 0,
                                          params, grads, snap, 0, one_block);
            if (!(loss - loss == 0)) {
                return fnn_epochs_diverged(&ep, a, e, s);
            }
            if (snap) {
                ep.snap_epoch = e;
            }
            SUF(apply_optim)(net, opt, lr, wd, params, grads);
            fnn_epochs_add(&ep, loss * a->loss_scale + l2term, (double)mb);
            if (fnn_epochs_poll(&ep, &poller, a, e, s)) {
                return fnn_epochs_finish(&ep, a, e, FNN_STOPPED);
            }
        }
        fnn_epochs_end(&ep, a, e);
    }
    return fnn_epochs_finish(&ep, a, n_epochs, FNN_OK);
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

/* The split step can run: the helper's buffers are there and a minibatch
 * can reach min_rows (>= 2) rows. */
FNN_INLINE int SUF(split_possible)(const fnn_net *net, const fnn_fit_args *a)
{
    const fnn_split *sp = &a->split;
    return sp->min_rows >= 2 && sp->ws2 && sp->grads2
           && (sp->iws2 || net->iws_cols == 0);
}

int SUF(fnn_fit)(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                 REAL *params, REAL *grads, REAL *ws, int32_t *iws)
{
    const int64_t B = a->batch < 1 ? 1 : (a->batch > a->n ? a->n : a->batch);
    const int64_t min_rows = a->split.min_rows;
    if (net->lanes && net->lanes_ws && !a->sw && !a->xs
        && !(a->dropout && net->dropout)
        && (min_rows < 2 || B < min_rows)) {
        return SUF(fit_loop_lanes)(net, opt, a, params, grads);
    }
    /* sparse steps stay on one thread: their cost is the pass over layer
     * 0's W and its optimizer state, bound by memory bandwidth, which one
     * core already takes */
    const int par = !a->xs && SUF(split_possible)(net, a)
                    && fnn_pool_acquire();
    const int status = SUF(fit_loop)(net, opt, a, params, grads, ws, iws, par);
    if (par) {
        fnn_pool_release();
    }
    return status;
}
