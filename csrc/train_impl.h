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

int SUF(fnn_fit)(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                 REAL *params, REAL *grads, REAL *ws, int32_t *iws)
{
    const fnn_layer *first = &net->layers[0];
    const fnn_layer *last = &net->layers[net->n_layers - 1];
    const int64_t n = a->n, nin = first->n_in, nout = last->n_out;
    const int64_t B = a->batch < 1 ? 1 : (a->batch > n ? n : a->batch);
    const int64_t steps = n > 0 ? (n + B - 1) / B : 0;
    const REAL *X = (const REAL *)a->x, *Y = (const REAL *)a->y;
    const REAL *SW = (const REAL *)a->sw;
    const int sse = net->loss == FNN_SSE;
    const int fused = opt->kind == FNN_OPT_SGD;
    const int64_t nw = net->n_weights, nb = net->n_params - net->n_weights;
    const int64_t every = a->snapshot_every < 1 ? 1 : a->snapshot_every;
    /* epochs until the next snapshot epoch (no division per step) */
    int64_t to_snap = (every - (a->epoch0 % every)) % every;
    fnn_poller poller;
    fnn_poller_init(&poller, a->poll_ms);
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
            const REAL *xb, *yb, *swb = NULL;
            int64_t ldx = a->ldx, ldy = a->ldy;
            if (order) {
                SUF(gather)(mb, nin, order + i0, X, a->ldx, (REAL *)a->xb);
                SUF(gather)(mb, nout, order + i0, Y, a->ldy, (REAL *)a->yb);
                if (i0 + mb < n) {          /* the next batch of this epoch */
                    const int64_t nb2 = B < n - i0 - mb ? B : n - i0 - mb;
                    SUF(prefetch_rows)(nb2, nin, order + i0 + mb, X, a->ldx);
                }
                if (SW) {
                    REAL *dst = (REAL *)a->swb;
                    for (int64_t i = 0; i < mb; i++) {
                        dst[i] = SW[order[i0 + i]];
                    }
                    swb = dst;
                }
                xb = (const REAL *)a->xb;
                yb = (const REAL *)a->yb;
                ldx = nin;
                ldy = nout;
            } else {
                xb = X + i0 * a->ldx;
                yb = Y + i0 * a->ldy;
                swb = SW ? SW + i0 : NULL;
            }
            double wtot = (double)mb;
            if (swb) {
                wtot = 0.0;
                for (int64_t i = 0; i < mb; i++) {
                    wtot += (double)swb[i];
                }
            }
            const double scale = sse ? 1.0 : 1.0 / wtot;
            const REAL wd = (REAL)(opt->l2_per_row ? opt->l2 / wtot : opt->l2);
            REAL *snap = (a->snapshot && s == 0 && to_snap == 0)
                             ? (REAL *)a->snapshot : NULL;
            const double l2term = a->loss_l2 && wd != 0
                ? 0.5 * (double)wd * KSUF(fnn_sum_squares)(nw, params) : 0.0;
            double loss = SUF(fnn_net_loss_grad)(
                net, mb, xb, ldx, yb, ldy, swb, scale, fused ? lr : 0,
                fused ? wd : 0, params, grads, snap, ws, iws, 0);
            if (!(loss - loss == 0)) {
                a->bad_epoch = e;
                a->bad_step = s;
                return FNN_ERR_NONFINITE;
            }
            if (snap) {
                a->snapshot_epoch = e;
            }
            if (fused && lr == 0) {
                /* lr 0 took the unfused path: nothing to apply */
            } else if (opt->kind == FNN_OPT_MOMENTUM
                       || opt->kind == FNN_OPT_NESTEROV) {
                int nest = opt->kind == FNN_OPT_NESTEROV;
                REAL *v = (REAL *)opt->vel;
                REAL mu = (REAL)opt->momentum;
                SUF(fnn_momentum_step)(nw, lr, mu, wd, nest, grads, params, v);
                SUF(fnn_momentum_step)(nb, lr, mu, 0, nest, grads + nw,
                                       params + nw, v + nw);
            } else if (opt->kind == FNN_OPT_ADAM) {
                REAL *m1 = (REAL *)opt->vel, *m2 = (REAL *)opt->sq;
                REAL b1 = (REAL)opt->beta1, b2 = (REAL)opt->beta2;
                REAL eps = (REAL)opt->eps;
                opt->t += 1;
                SUF(fnn_adam_step)(nw, lr, b1, b2, eps, opt->t, wd, grads,
                                   params, m1, m2);
                SUF(fnn_adam_step)(nb, lr, b1, b2, eps, opt->t, 0, grads + nw,
                                   params + nw, m1 + nw, m2 + nw);
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
