/* net_impl.h -- body of net.c, included once per dtype (REAL, SUF).
 *
 * Workspace for a batch of m rows (REAL, m * net->ws_cols elements):
 *   per layer l, at m * ws_col: A_l (m, n_out) the layer's output, then
 *   for maxout Z_l (m, n_out*pieces) the pre-activation;
 *   at the end two delta buffers D0, D1 of (m, max_width) each.
 * int32 workspace (m * iws_cols): maxout argmax (m, n_out) per layer. */

static REAL *SUF(layer_out)(const fnn_net *net, int64_t l, int64_t m,
                            REAL *ws)
{
    return ws + m * net->layers[l].ws_col;
}

/* dst (cols, rows) := src (rows, cols)^T, in 16 x 16 tiles. */
static void SUF(transpose)(int64_t rows, int64_t cols, const REAL *src,
                           int64_t lds, REAL *dst, int64_t ldd)
{
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
        int64_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
        for (int64_t j0 = 0; j0 < cols; j0 += 16) {
            int64_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
            for (int64_t i = i0; i < i1; i++) {
                for (int64_t j = j0; j < j1; j++) {
                    dst[j * ldd + i] = src[i * lds + j];
                }
            }
        }
    }
}

/* The small-network step (fnn_net.lanes, lanes_impl.h) of
 * fnn_net_loss_grad: not inlined there (a rarely taken branch), cloned
 * for AVX2+FMA and baseline only (see FNN_LANES_CLONES). */
FNN_LANES_CLONES __attribute__((noinline))
static double SUF(lanes_step)(const fnn_net *net, int64_t m, const REAL *x,
                              int64_t ldx, const REAL *y, int64_t ldy,
                              double scale, REAL lr, REAL wd, REAL *params,
                              REAL *grads, REAL *snapshot, int check_x)
{
    return SUF(lanes_body)(net, m, x, ldx, y, ldy, NULL, scale, lr, wd,
                           params, grads, snapshot, check_x, 0);
}

/* Layer 0's product Z = X W (m, cols) into z: a CSR product when the input
 * is sparse (xs), else the GEMM. */
FNN_INLINE void KSUF(first_product)(const fnn_net *net, int64_t m,
                                    const REAL *x, int64_t ldx,
                                    const fnn_csr_rows *xs, const REAL *W,
                                    int64_t cols, REAL *z)
{
    if (xs) {
        SUF(fnn_csr_matmul)(xs->x, m, xs->row0, xs->rows, cols, W, cols, z,
                            cols);
    } else {
        KSUF(fnn_gemm)(net->blas, FNN_NOTRANS, FNN_NOTRANS, m, cols,
                      net->layers[0].n_in, 1, x, ldx, W, cols, 0, z, cols);
    }
}

/* Layer l's dropout in a step with drop (NULL: none): its rate, 0 if it
 * has none; *key its mask's key. */
FNN_INLINE double SUF(drop_rate)(const fnn_net *net, int64_t l,
                                 const fnn_drop *drop, uint64_t *key)
{
    const double rate = drop ? net->layers[l].dropout : 0.0;
    if (rate > 0) {
        *key = fnn_drop_key(drop->seed, drop->epoch, l);
    }
    return rate;
}

/* The forward pass; with check, NULL if the first layer's product x W is
 * not finite, which NaN or inf anywhere in x makes it (inf * w and NaN
 * propagate through every sum they enter; W is finite).  Checking that
 * (m, n_1) product instead of x (m, n_in) is cheaper for wide inputs.
 * xs (not NULL): the input is those rows of a CSR matrix, x is unused.
 * drop: the layers' dropout applied (training steps; NULL: none). */
FNN_INLINE REAL *KSUF(forward)(const fnn_net *net, int64_t m, const REAL *x,
                           int64_t ldx, const fnn_csr_rows *xs,
                           const REAL *params, int predict,
                           REAL *ws, int32_t *iws, int check,
                           const fnn_drop *drop)
{
    const REAL *in = x;
    int64_t ldin = ldx;
    REAL *out = NULL;
    for (int64_t l = 0; l < net->n_layers; l++) {
        const fnn_layer *L = &net->layers[l];
        const REAL *W = params + L->w_off;
        const REAL *b = L->b_off >= 0 ? params + L->b_off : NULL;
        int64_t cols = L->n_out * L->pieces;
        out = SUF(layer_out)(net, l, m, ws);
        if (L->act == FNN_MAXOUT) {
            REAL *zl = out + m * L->n_out;
            if (l == 0) {
                KSUF(first_product)(net, m, x, ldx, xs, W, cols, zl);
            } else {
                KSUF(fnn_gemm)(net->blas, FNN_NOTRANS, FNN_NOTRANS, m, cols,
                              L->n_in, 1, in, ldin, W, cols, 0, zl, cols);
            }
            if (check && l == 0 && !KSUF(fnn_all_finite)(m, cols, zl, cols)) {
                return NULL;
            }
            KSUF(fnn_maxout_forward)(m, L->n_out, L->pieces, b, zl, cols,
                                    out, L->n_out, iws + m * L->iws_col);
        } else {
            int act = l == net->n_layers - 1 ? fnn_out_act(net, predict)
                                             : L->act;
            if (l == 0 && xs) {
                KSUF(first_product)(net, m, x, ldx, xs, W, cols, out);
            } else if (L->fwd_t) {
                /* Z^T = W^T in^T into the (idle) delta buffers, then Z */
                REAL *zt = ws + m * (net->ws_cols - 2 * net->max_width);
                KSUF(fnn_gemm)(net->blas, FNN_TRANS, FNN_TRANS, cols, m,
                              L->n_in, 1, W, cols, in, ldin, 0, zt, m);
                SUF(transpose)(cols, m, zt, m, out, cols);
            } else {
                KSUF(fnn_gemm)(net->blas, FNN_NOTRANS, FNN_NOTRANS, m, cols,
                              L->n_in, 1, in, ldin, W, cols, 0, out, cols);
            }
            if (check && l == 0 && !KSUF(fnn_all_finite)(m, cols, out, cols)) {
                return NULL;
            }
            uint64_t key = 0;
            const double rate = SUF(drop_rate)(net, l, drop, &key);
            if (act == FNN_SOFTMAX) {
                KSUF(fnn_softmax_forward)(m, cols, b, out, cols);
            } else if (rate > 0) {
                KSUF(fnn_bias_act_dropout_forward)(m, cols, act,
                                                   (REAL)L->alpha, b, out,
                                                   cols, rate, key,
                                                   drop->row0);
            } else {
                KSUF(fnn_bias_act_forward)(m, cols, act, (REAL)L->alpha, b,
                                          out, cols);
            }
        }
        in = out;
        ldin = L->n_out;
    }
    return out;
}

/* The whole-network functions get AVX2+FMA and baseline clones only, as
 * the lanes step: on an AVX-512 CPU (AMD EPYC, OpenBLAS kernel SkylakeX)
 * the AVX-512 clone trained the 784 -> 256 -> 10 float32 network at
 * 500-770 steps/s from process to process, the AVX2 one at a steady
 * 770-810, and the 20 -> 32 -> 1 and lecture networks equally fast; one
 * clone fewer also cuts a fifth of the build's time. */
#ifndef FNN_STEP_CLONES
#if defined(FNN_CLONES_ON)
#define FNN_STEP_CLONES \
    __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FNN_STEP_CLONES
#endif
#endif

/* The one compiled copy of the inference forward pass per dtype and CPU
 * target, behind both entry points below (as loss_grad_any for the step:
 * inlining it into each would compile it three more times). */
FNN_STEP_CLONES __attribute__((noinline))
static REAL *SUF(forward_any)(const fnn_net *net, int64_t m, const REAL *x,
                              int64_t ldx, const fnn_csr_rows *xs,
                              const REAL *params, int predict, REAL *ws,
                              int32_t *iws)
{
    return KSUF(forward)(net, m, x, ldx, xs, params, predict, ws, iws, 0,
                         NULL);
}

REAL *SUF(fnn_net_forward)(const fnn_net *net, int64_t m, const REAL *x,
                           int64_t ldx, const REAL *params, int predict,
                           REAL *ws, int32_t *iws)
{
    return SUF(forward_any)(net, m, x, ldx, NULL, params, predict, ws, iws);
}

REAL *SUF(fnn_net_forward_csr)(const fnn_net *net, int64_t m,
                               const fnn_csr_rows *xs, const REAL *params,
                               int predict, REAL *ws, int32_t *iws)
{
    return SUF(forward_any)(net, m, NULL, 0, xs, params, predict, ws, iws);
}

/* The loss and backward pass; with dz0 set, layer 0's weight gradient is
 * left undone and *dz0 pointed at its dZ in ws.  xs: a CSR input (then dz0
 * must be set: x is never read).  drop: see forward. */
FNN_INLINE double KSUF(loss_grad)(const fnn_net *net, int64_t m, const REAL *x,
                                  int64_t ldx, const fnn_csr_rows *xs,
                                  const REAL *y, int64_t ldy,
                                  const REAL *sw, double scale, REAL lr,
                                  REAL wd, REAL *params, REAL *grads,
                                  REAL *snapshot, REAL *ws, int32_t *iws,
                                  int check_x, REAL **dz0,
                                  const fnn_drop *drop)
{
    if (drop && !net->dropout) {
        drop = NULL;                    /* no layer drops anything */
    }
    if (net->lanes && net->lanes_ws && !sw && !dz0 && !drop && m > 0) {
        return SUF(lanes_step)(net, m, x, ldx, y, ldy, scale, lr, wd, params,
                               grads, snapshot, check_x);
    }
    int64_t nl = net->n_layers;
    const fnn_layer *last = &net->layers[nl - 1];
    REAL *out = KSUF(forward)(net, m, x, ldx, xs, params, 0, ws, iws,
                              check_x, drop);
    if (!out) {
        return NAN;                     /* x not finite: touch nothing */
    }
    REAL *D = ws + m * net->ws_cols - 2 * m * net->max_width;
    REAL *E = D + m * net->max_width;
    REAL *dblast = last->b_off >= 0 ? grads + last->b_off : NULL;

    /* Output delta.  Identity (or fused) outputs get db from the loss pass;
     * other activations through their backward kernel. */
    int oact = fnn_out_act(net, 0);
    int direct = oact == FNN_IDENTITY && last->act != FNN_MAXOUT;
    double loss = KSUF(fnn_loss_grad)(m, last->n_out, net->loss,
                                      net->loss_param, scale, out,
                                      last->n_out, y, ldy, sw, D, last->n_out,
                                      NULL);
    if (!(loss - loss == 0)) {
        return loss;                    /* NaN or inf: touch nothing */
    }
    if (snapshot) {
        memcpy(snapshot, params, (size_t)net->n_params * sizeof(REAL));
    }
    if (direct && dblast) {
        /* identity backward in place: only the column sums */
        KSUF(fnn_bias_act_backward)(m, last->n_out, FNN_IDENTITY, 0, out,
                                   last->n_out, D, last->n_out, D,
                                   last->n_out, dblast);
    }
    if (last->act == FNN_MAXOUT) {
        KSUF(fnn_maxout_backward)(m, last->n_out, last->pieces,
                                 iws + m * last->iws_col, D, last->n_out, E,
                                 last->n_out * last->pieces, dblast);
        REAL *t = D; D = E; E = t;
    } else if (!direct) {
        KSUF(fnn_bias_act_backward)(m, last->n_out, oact, (REAL)last->alpha,
                                   out, last->n_out, D, last->n_out, D,
                                   last->n_out, dblast);
    }

    /* D holds dZ of layer l, (m, cols_l). */
    for (int64_t l = nl - 1; l >= 0; l--) {
        const fnn_layer *L = &net->layers[l];
        int64_t cols = L->n_out * L->pieces;
        REAL *W = params + L->w_off;
        const REAL *in = l > 0 ? SUF(layer_out)(net, l - 1, m, ws) : x;
        int64_t ldin = l > 0 ? L->n_in : ldx;
        /* dA of the layer below, with W before its update */
        if (l > 0) {
            KSUF(fnn_gemm)(net->blas, FNN_NOTRANS, FNN_TRANS, m, L->n_in, cols,
                          1, D, cols, W, cols, 0, E, L->n_in);
        }
        if (l == 0 && dz0) {
            *dz0 = D;
        } else if (lr != 0) {
            /* fused SGD: W := (1 - lr wd) W - lr in^T dZ */
            KSUF(fnn_gemm)(net->blas, FNN_TRANS, FNN_NOTRANS, L->n_in, cols, m,
                          -lr, in, ldin, D, cols, 1 - lr * wd, W, cols);
            if (L->b_off >= 0) {
                KSUF(fnn_sgd_step)(cols, lr, 0, grads + L->b_off,
                                  params + L->b_off);
            }
        } else {
            KSUF(fnn_gemm)(net->blas, FNN_TRANS, FNN_NOTRANS, L->n_in, cols, m,
                          1, in, ldin, D, cols, 0, grads + L->w_off, cols);
        }
        if (l == 0) {
            break;
        }
        /* dZ of the layer below from its dA (in E) */
        const fnn_layer *P = &net->layers[l - 1];
        REAL *db = P->b_off >= 0 ? grads + P->b_off : NULL;
        if (P->act == FNN_MAXOUT) {
            KSUF(fnn_maxout_backward)(m, P->n_out, P->pieces,
                                     iws + m * P->iws_col, E, P->n_out, D,
                                     P->n_out * P->pieces, db);
        } else {
            uint64_t key = 0;
            const double rate = SUF(drop_rate)(net, l - 1, drop, &key);
            if (rate > 0) {
                KSUF(fnn_bias_act_dropout_backward)(m, P->n_out, P->act,
                                                    (REAL)P->alpha, in,
                                                    P->n_out, E, P->n_out, E,
                                                    P->n_out, db, rate, key,
                                                    drop->row0);
            } else {
                KSUF(fnn_bias_act_backward)(m, P->n_out, P->act,
                                           (REAL)P->alpha, in, P->n_out, E,
                                           P->n_out, E, P->n_out, db);
            }
            REAL *t = D; D = E; E = t;
        }
    }
    return loss;
}

/* The one compiled copy of the loss and backward pass per dtype and CPU
 * target, behind both entry points below (each inlining it would compile
 * the whole step twice more for one branch of difference). */
FNN_STEP_CLONES __attribute__((noinline))
static double SUF(loss_grad_any)(const fnn_net *net, int64_t m, const REAL *x,
                                 int64_t ldx, const fnn_csr_rows *xs,
                                 const REAL *y, int64_t ldy,
                                 const REAL *sw, double scale, REAL lr,
                                 REAL wd, REAL *params, REAL *grads,
                                 REAL *snapshot, REAL *ws, int32_t *iws,
                                 int check_x, REAL **dz0,
                                 const fnn_drop *drop)
{
    return KSUF(loss_grad)(net, m, x, ldx, xs, y, ldy, sw, scale, lr, wd,
                           params, grads, snapshot, ws, iws, check_x, dz0,
                           drop);
}

double SUF(fnn_net_loss_grad)(const fnn_net *net, int64_t m, const REAL *x,
                              int64_t ldx, const REAL *y, int64_t ldy,
                              const REAL *sw, double scale, REAL lr, REAL wd,
                              REAL *params, REAL *grads, REAL *snapshot,
                              REAL *ws, int32_t *iws, int check_x,
                              const fnn_drop *drop)
{
    return SUF(loss_grad_any)(net, m, x, ldx, NULL, y, ldy, sw, scale, lr, wd,
                              params, grads, snapshot, ws, iws, check_x, NULL,
                              drop);
}

double SUF(fnn_net_loss_dz0)(const fnn_net *net, int64_t m, const REAL *x,
                             int64_t ldx, const REAL *y, int64_t ldy,
                             const REAL *sw, double scale, REAL *params,
                             REAL *grads, REAL *ws, int32_t *iws, REAL **dz0,
                             const fnn_drop *drop)
{
    *dz0 = NULL;
    return SUF(loss_grad_any)(net, m, x, ldx, NULL, y, ldy, sw, scale, 0, 0,
                              params, grads, NULL, ws, iws, 0, dz0, drop);
}

double SUF(fnn_net_loss_dz0_csr)(const fnn_net *net, int64_t m,
                                 const fnn_csr_rows *xs, const REAL *y,
                                 int64_t ldy, const REAL *sw, double scale,
                                 REAL *params, REAL *grads, REAL *ws,
                                 int32_t *iws, REAL **dz0,
                                 const fnn_drop *drop)
{
    *dz0 = NULL;
    return SUF(loss_grad_any)(net, m, NULL, 0, xs, y, ldy, sw, scale, 0, 0,
                              params, grads, NULL, ws, iws, 0, dz0, drop);
}
