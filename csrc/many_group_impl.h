/* many_group_impl.h -- networks in lanes: the groups of many_impl.h,
 * included by it once per group width with FNN_MANY_WIDEN (vectors of
 * LANE_N lanes per group vector), GSUF(name) (the width's names) and
 * FNN_MANY_TARGET (what group_fit is compiled for).
 *
 * NL networks in a group: FNN_MANY_WIDEN of the small-network step's
 * vectors side by side.  Two (8 doubles, 16 floats, on AVX-512) share the
 * per-step work outside the arithmetic (loop control, loads of the
 * layout, bookkeeping per step) among twice the networks, and their two
 * independent chains hide the latency of the activations' divisions.
 * Elementwise arithmetic is the same whatever the width. */

#define NL ((int64_t)(FNN_MANY_WIDEN * LANE_N))

typedef REAL GSUF(mvec)
    __attribute__((vector_size(FNN_MANY_WIDEN * FNN_LANE_BYTES)));
typedef LANE_INT GSUF(mmask)
    __attribute__((vector_size(FNN_MANY_WIDEN * FNN_LANE_BYTES)));

/* A group's state in its worker's scratch, in vectors (lane k: network k):
 * parameters P, the last step's gradient G, optimizer state V (velocity,
 * Adam's m) and S (Adam's v), one accumulator per parameter and block
 * position (acc[q * ML + t]); then per block position t: the inputs
 * (xt + t * n_in), the layers' outputs (unit j of layer l at act + t * acts
 * + ws_col + j), two delta buffers (d0/d1 + t * max_width); and per
 * network its output, target and output-delta block as lanes_body lays
 * them out ([j * ML + t], REALs).  Position-major, so that every call of
 * an elementwise kernel covers the same number of elements as
 * lanes_body's (a unit's ML lanes per unit): an element then takes the
 * same path through the kernel's vectorized loop (body or remainder). */
typedef struct {
    GSUF(mvec) *P, *G, *V, *S, *acc, *xt, *act, *d0, *d1;
    REAL *zb, *yb, *db;
    int64_t acts;
} GSUF(group_mem);

static int64_t GSUF(group_layout)(const fnn_net *net, char *base,
                                 GSUF(group_mem) *m)
{
    typedef GSUF(mvec) vec;
    const int64_t np = net->n_params, nin = net->layers[0].n_in;
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    const int64_t acts = net->ws_cols - 2 * net->max_width;
    const int64_t mw = net->max_width;
    vec *v = (vec *)base;
    if (m) {
        m->P = v;
        m->G = v + np;
        m->V = v + 2 * np;
        m->S = v + 3 * np;
        m->acc = v + 4 * np;
        m->xt = m->acc + np * ML;
        m->act = m->xt + nin * ML;
        m->d0 = m->act + acts * ML;
        m->d1 = m->d0 + mw * ML;
        m->zb = (REAL *)(m->d1 + mw * ML);
        m->yb = m->zb + nout * ML * NL;
        m->db = m->yb + nout * ML * NL;
        m->acts = acts;
    }
    return many_round((4 * np + (np + nin + acts + 2 * mw + 3 * nout) * ML)
                      * (int64_t)sizeof(vec));
}

/* *dst := a in the lanes where m is set (all bits), lane by lane. */
FNN_INLINE void GSUF(mblend)(GSUF(mvec) *dst, GSUF(mmask) m, const GSUF(mvec) *a)
{
    GSUF(mmask) ia, ib;
    memcpy(&ia, a, sizeof ia);
    memcpy(&ib, dst, sizeof ib);
    ia = (ia & m) | (ib & ~m);
    memcpy(dst, &ia, sizeof ia);
}

/* The sum of a parameter's per-position accumulators a[0..ML) in
 * lanes_sum's order: (a0 + a2) + (a1 + a3), or for 8 lanes
 * ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). */
FNN_INLINE void GSUF(msum)(const GSUF(mvec) *a, GSUF(mvec) *sum)
{
#if LANE_N == 8
    *sum = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
#else
    *sum = (a[0] + a[2]) + (a[1] + a[3]);
#endif
}


/* The rows of one block into the scratch: position t holds row i0 + t of
 * the step for t < valid, row i0 in the spare positions, through each
 * lane's order (ord[k] NULL: rows in order); lane k's targets into its
 * block of yb. */
FNN_INLINE void GSUF(group_gather)(const fnn_net *net, const GSUF(group_mem) *m,
                                  const REAL *X, int64_t ldx, const REAL *Y,
                                  int64_t ldy, const int64_t *const *ord,
                                  int64_t i0, int64_t valid)
{
    const int64_t nin = net->layers[0].n_in;
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    const int64_t nb = nout * ML;
    for (int64_t t = 0; t < ML; t++) {
        const int64_t i = i0 + (t < valid ? t : 0);
        const REAL *xr[NL], *yr[NL];
        for (int64_t k = 0; k < NL; k++) {
            const int64_t r = ord[k] ? ord[k][i] : i;
            xr[k] = X + r * ldx;
            yr[k] = Y + r * ldy;
        }
        for (int64_t p = 0; p < nin; p++) {
            GSUF(mvec) v;
            for (int64_t k = 0; k < NL; k++) {
                v[k] = xr[k][p];
            }
            m->xt[t * nin + p] = v;
        }
        for (int64_t j = 0; j < nout; j++) {
            for (int64_t k = 0; k < NL; k++) {
                m->yb[k * nb + j * ML + t] = yr[k][j];
            }
        }
    }
}

/* Forward of the block in the scratch, lanes_body's forward per position:
 * z_j = sum_p w_pj in_p (p in order) + b_j, then the activation. */
FNN_INLINE void GSUF(group_forward)(const fnn_net *net, const GSUF(group_mem) *m,
                                   int oact)
{
    typedef GSUF(mvec) vec;
    const int64_t nl = net->n_layers, acts = m->acts;
    const int64_t nin = net->layers[0].n_in;
    for (int64_t l = 0; l < nl; l++) {
        const fnn_layer *L = &net->layers[l];
        const int64_t ni = L->n_in, no = L->n_out;
        const vec *W = m->P + L->w_off;
        const vec *b = L->b_off >= 0 ? m->P + L->b_off : NULL;
        int a = l == nl - 1 ? oact : L->act;
        const vec *in0 = l == 0 ? m->xt : m->act + net->layers[l - 1].ws_col;
        const int64_t ld_in = l == 0 ? nin : acts;
        vec *out0 = m->act + L->ws_col;
        FNN_MANY_N(ni,
            for (int64_t t = 0; t < ML; t++) {
                const vec *in = in0 + t * ld_in;
                vec *out = out0 + t * acts;
                for (int64_t j = 0; j < no; j++) {
                    vec s = W[j] * in[0];
                    for (int64_t p = 1; p < N; p++) {
                        s += W[p * no + j] * in[p];
                    }
                    out[j] = b ? s + b[j] : s;
                }
            })
        for (int64_t t = 0; t < ML; t++) {
            KSUF(fnn_bias_act_forward)(1, no * NL, a, (REAL)L->alpha, NULL,
                                       (REAL *)(out0 + t * acts), no * NL);
        }
    }
}

/* The loss of each network's block (laid out in zb and yb as lanes_body
 * lays it out) and its output delta into db: lanes_body's calls, one
 * network at a time.  The loss is a sum in the compiler's order, which
 * depends on the instruction set it vectorizes for; this function is
 * compiled for the small-network step's instruction sets (its clones),
 * not group_fit's, so that the sum is the one the network's own fit
 * makes, also where group_fit runs wider vectors. */
FNN_LANES_CLONES __attribute__((noinline))
static void GSUF(group_block_loss)(const fnn_net *net, const GSUF(group_mem) *m,
                                  int64_t valid, double scale, double *loss)
{
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    const int64_t nb = nout * ML;
    for (int64_t k = 0; k < NL; k++) {
        const REAL *z = m->zb + k * nb, *y = m->yb + k * nb;
        REAL *d = m->db + k * nb;
        if (valid == ML) {
            loss[k] += KSUF(fnn_loss_grad)(1, nb, net->loss, net->loss_param,
                                           scale, z, nb, y, nb, NULL, d, nb,
                                           NULL);
        } else {
            for (int64_t j = 0; j < nout; j++) {
                loss[k] += KSUF(fnn_loss_grad)(1, valid, net->loss,
                                               net->loss_param, scale,
                                               z + j * ML, valid, y + j * ML,
                                               valid, NULL, d + j * ML, valid,
                                               NULL);
                for (int64_t t = valid; t < ML; t++) {
                    d[j * ML + t] = 0;
                }
            }
        }
    }
}

/* The loss of the block and the output delta (into d0), network by
 * network with lanes_body's calls on its own block; loss[k] gains lane
 * k's block loss. */
FNN_INLINE void GSUF(group_loss)(const fnn_net *net, const GSUF(group_mem) *m,
                                int64_t valid, double scale, int oact,
                                double *loss)
{
    typedef GSUF(mvec) vec;
    const fnn_layer *last = &net->layers[net->n_layers - 1];
    const int64_t nout = last->n_out, nb = nout * ML, mw = net->max_width;
    for (int64_t j = 0; j < nout; j++) {
        for (int64_t h = 0; h < FNN_MANY_WIDEN; h++) {
            SUF(lanevec) r[ML], c[ML];
            for (int64_t t = 0; t < ML; t++) {
                memcpy(&r[t], (const REAL *)&m->act[t * m->acts + last->ws_col + j]
                              + h * ML, sizeof r[t]);
            }
            SUF(mtranspose)(r, c);
            for (int64_t k = 0; k < ML; k++) {
                memcpy(m->zb + (h * ML + k) * nb + j * ML, &c[k], sizeof c[k]);
            }
        }
    }
    GSUF(group_block_loss)(net, m, valid, scale, loss);
    for (int64_t j = 0; j < nout; j++) {
        for (int64_t h = 0; h < FNN_MANY_WIDEN; h++) {
            SUF(lanevec) r[ML], c[ML];
            for (int64_t k = 0; k < ML; k++) {
                memcpy(&r[k], m->db + (h * ML + k) * nb + j * ML, sizeof r[k]);
            }
            SUF(mtranspose)(r, c);
            for (int64_t t = 0; t < ML; t++) {
                memcpy((REAL *)&m->d0[t * mw + j] + h * ML, &c[t], sizeof c[t]);
            }
        }
    }
    const int64_t nv = nout * NL;
    for (int64_t t = 0; t < ML; t++) {
        vec *D = m->d0 + t * mw;
        if (oact != FNN_IDENTITY) {
            const vec *out = m->act + t * m->acts + last->ws_col;
            KSUF(fnn_bias_act_backward)(1, nv, oact, (REAL)last->alpha,
                                        (const REAL *)out, nv,
                                        (const REAL *)D, nv, (REAL *)D, nv,
                                        NULL);
        }
    }
}

/* Backward of the block from the output delta in d0, lanes_body's per
 * position: dW_pj += in_p dZ_j, db_j += dZ_j (first: the step's first
 * block, accumulators start over), the layer below's dA_p = sum_j w_pj
 * dZ_j times its act'. */
FNN_INLINE void GSUF(group_backward)(const fnn_net *net,
                                    const GSUF(group_mem) *m, int first)
{
    typedef GSUF(mvec) vec;
    const int64_t acts = m->acts, mw = net->max_width;
    const int64_t nin = net->layers[0].n_in;
    vec *D0 = m->d0, *E0 = m->d1;
    for (int64_t l = net->n_layers - 1; l >= 0; l--) {
        const fnn_layer *L = &net->layers[l];
        const int64_t ni = L->n_in, no = L->n_out;
        const vec *W = m->P + L->w_off;
        vec *gw = m->acc + L->w_off * ML;
        const vec *in0 = l > 0 ? m->act + net->layers[l - 1].ws_col : m->xt;
        const int64_t ld_in = l > 0 ? acts : nin;
        if (first) {
            FNN_MANY_N(no,
                for (int64_t t = 0; t < ML; t++) {
                    const vec *inl = in0 + t * ld_in, *D = D0 + t * mw;
                    for (int64_t p = 0; p < ni; p++) {
                        for (int64_t j = 0; j < N; j++) {
                            gw[(p * N + j) * ML + t] = inl[p] * D[j];
                        }
                    }
                })
        } else {
            FNN_MANY_N(no,
                for (int64_t t = 0; t < ML; t++) {
                    const vec *inl = in0 + t * ld_in, *D = D0 + t * mw;
                    for (int64_t p = 0; p < ni; p++) {
                        for (int64_t j = 0; j < N; j++) {
                            gw[(p * N + j) * ML + t] += inl[p] * D[j];
                        }
                    }
                })
        }
        if (L->b_off >= 0) {
            vec *gb = m->acc + L->b_off * ML;
            for (int64_t j = 0; j < no; j++) {
                for (int64_t t = 0; t < ML; t++) {
                    const vec d = D0[t * mw + j];
                    gb[j * ML + t] = first ? d : gb[j * ML + t] + d;
                }
            }
        }
        if (l == 0) {
            break;
        }
        FNN_MANY_N(no,
            for (int64_t t = 0; t < ML; t++) {
                const vec *D = D0 + t * mw;
                vec *E = E0 + t * mw;
                for (int64_t p = 0; p < ni; p++) {
                    const vec *Wp = W + p * N;
                    vec s = Wp[0] * D[0];
                    for (int64_t j = 1; j < N; j++) {
                        s += Wp[j] * D[j];
                    }
                    E[p] = s;
                }
            })
        const fnn_layer *P = &net->layers[l - 1];
        for (int64_t t = 0; t < ML; t++) {
            KSUF(fnn_bias_act_backward)(1, ni * NL, P->act, (REAL)P->alpha,
                                        (const REAL *)(in0 + t * ld_in),
                                        ni * NL,
                                        (const REAL *)(E0 + t * mw), ni * NL,
                                        (REAL *)(E0 + t * mw), ni * NL, NULL);
        }
        vec *tmp = D0;
        D0 = E0;
        E0 = tmp;
    }
}

/* Per-lane scalars of a group's optimizer for one step.  Lanes may differ
 * in kind: kinds has bit 1 << kind set for each kind present, and each
 * kind's mask selects its lanes. */
typedef struct {
    int kinds;
    GSUF(mvec) lr, wd, zero, mu, b1, b2, eps, lr_t, c1, c2;
    GSUF(mmask) fused;       /* SGD with lr != 0: fused into the sums */
    GSUF(mmask) active;
    GSUF(mmask) is[4];       /* lanes of each fnn_opt_kind */
    int plain;               /* every lane active, fused SGD (the masks
                                would select every lane: no blends) */
} GSUF(group_opt);

/* o->plain from the masks: after the learning rates or the active lanes
 * change. */
FNN_INLINE void GSUF(group_plain)(GSUF(group_opt) *o)
{
    int all = o->kinds == KIND_BIT(FNN_OPT_SGD);
    for (int64_t k = 0; k < NL && all; k++) {
        all = o->fused[k] != 0 && o->active[k] != 0;
    }
    o->plain = all;
}


/* One parameter's gradient g into place, as lanes_body and apply_optim
 * make it: fused SGD (lanes whose lr is not 0) updates the weight w :=
 * -lr g + (1 - lr wd) w (bias: b := b - lr g, wd 0) and leaves G (a bias
 * gradient is written all the same); otherwise G := g and the optimizer's
 * step (optim_impl.h's expressions; a bias without decay).  Each kind's
 * result is computed from the same w and kept in its own lanes; lanes not
 * active are left alone. */
FNN_INLINE void GSUF(group_apply)(const GSUF(group_opt) *o, const GSUF(mvec) *gp,
                                 GSUF(mvec) *W, GSUF(mvec) *G, GSUF(mvec) *V,
                                 GSUF(mvec) *S, int bias)
{
    typedef GSUF(mvec) vec;
    typedef GSUF(mmask) mask;
    const vec g = *gp, w = *W;
    const vec lr = o->lr, wd = bias ? o->zero : o->wd;
    const mask act = o->active;
    if (o->plain) {
        /* what the blends below select when every lane is fused SGD */
        if (bias) {
            vec wn = w;
            wn -= lr * g;
            *G = g;
            *W = wn;
        } else {
            *W = -lr * g + (1 - lr * wd) * w;
        }
        return;
    }
    if (o->kinds & KIND_BIT(FNN_OPT_SGD)) {
        const mask sgd = o->is[FNN_OPT_SGD] & act;
        vec wn;
        if (bias) {
            wn = w;
            wn -= lr * g;
        } else {
            wn = -lr * g + (1 - lr * wd) * w;
        }
        GSUF(mblend)(G, bias ? sgd : sgd & ~o->fused, &g);
        GSUF(mblend)(W, sgd & o->fused, &wn);
    }
    if (o->kinds & ~KIND_BIT(FNN_OPT_SGD)) {
        GSUF(mblend)(G, act & ~o->is[FNN_OPT_SGD], &g);
    }
    if (o->kinds & KIND_BIT(FNN_OPT_ADAM)) {
        const mask m = o->is[FNN_OPT_ADAM] & act;
        const vec b1 = o->b1, b2 = o->b2, c1 = o->c1, c2 = o->c2;
        vec gi = g + wd * w;
        vec mi = b1 * *V + c1 * gi;
        vec vi = b2 * *S + c2 * (gi * gi);
        vec r;
        for (int64_t k = 0; k < NL; k++) {
            r[k] = SQRT(vi[k]);
        }
        vec wn = w;
        wn -= o->lr_t * mi / (r + o->eps);
        GSUF(mblend)(V, m, &mi);
        GSUF(mblend)(S, m, &vi);
        GSUF(mblend)(W, m, &wn);
    }
    if (o->kinds & (KIND_BIT(FNN_OPT_MOMENTUM) | KIND_BIT(FNN_OPT_NESTEROV))) {
        const vec mu = o->mu;
        vec gi = g + wd * w;
        vec vi = mu * *V - lr * gi;
        if (o->kinds & KIND_BIT(FNN_OPT_NESTEROV)) {
            const mask m = o->is[FNN_OPT_NESTEROV] & act;
            vec wn = w;
            wn += mu * vi - lr * gi;
            GSUF(mblend)(W, m, &wn);
        }
        if (o->kinds & KIND_BIT(FNN_OPT_MOMENTUM)) {
            const mask m = o->is[FNN_OPT_MOMENTUM] & act;
            vec wn = w;
            wn += vi;
            GSUF(mblend)(W, m, &wn);
        }
        GSUF(mblend)(V, (o->is[FNN_OPT_MOMENTUM] | o->is[FNN_OPT_NESTEROV]) & act,
                    &vi);
    }
}

/* After the blocks of a step: each parameter's accumulators summed across
 * positions in lanes_body's order (for double, a layer's weights in
 * fours: (a0 + a1) + (a2 + a3), the rest and the biases as lanes_sum)
 * and put in place by group_apply. */
FNN_INLINE void GSUF(group_update)(const fnn_net *net, const GSUF(group_mem) *m,
                                  const GSUF(group_opt) *o)
{
    typedef GSUF(mvec) vec;
    for (int64_t l = 0; l < net->n_layers; l++) {
        const fnn_layer *L = &net->layers[l];
        const int64_t nw = L->n_in * L->n_out, w0 = L->w_off;
        int64_t q = 0;
#if LANE_N == 4
        /* lanes_body sums whole fours of a layer's weights so */
        for (const int64_t q4 = nw & ~(int64_t)3; q < q4; q++) {
            const vec *a = m->acc + (w0 + q) * ML;
            vec g = (a[0] + a[1]) + (a[2] + a[3]);
            GSUF(group_apply)(o, &g, m->P + w0 + q, m->G + w0 + q,
                             m->V + w0 + q, m->S + w0 + q, 0);
        }
#endif
        for (; q < nw; q++) {
            vec g;
            GSUF(msum)(m->acc + (w0 + q) * ML, &g);
            GSUF(group_apply)(o, &g, m->P + w0 + q, m->G + w0 + q,
                             m->V + w0 + q, m->S + w0 + q, 0);
        }
        if (L->b_off >= 0) {
            const int64_t b0 = L->b_off;
            for (int64_t j = 0; j < L->n_out; j++) {
                vec g;
                GSUF(msum)(m->acc + (b0 + j) * ML, &g);
                GSUF(group_apply)(o, &g, m->P + b0 + j, m->G + b0 + j,
                                 m->V + b0 + j, m->S + b0 + j, 1);
            }
        }
    }
}

/* Lane k's state into (to_lanes) or out of the group's vectors: params,
 * the gradient buffer, and the optimizer's state its kind uses. */
static void GSUF(group_transfer)(const GSUF(group_mem) *m, int64_t np,
                                fnn_many_job *job, int64_t k, int to_lanes)
{
    REAL *p = (REAL *)job->params, *g = (REAL *)job->grads;
    REAL *v = (REAL *)job->opt.vel, *s = (REAL *)job->opt.sq;
    const int kind = job->opt.kind;
    const int has_v = kind != FNN_OPT_SGD, has_s = kind == FNN_OPT_ADAM;
    if (to_lanes) {
        for (int64_t q = 0; q < np; q++) {
            m->P[q][k] = p[q];
            m->G[q][k] = g[q];
            m->V[q][k] = has_v ? v[q] : 0;
            m->S[q][k] = has_s ? s[q] : 0;
        }
        return;
    }
    for (int64_t q = 0; q < np; q++) {
        p[q] = m->P[q][k];
        g[q] = m->G[q][k];
    }
    if (has_v) {
        for (int64_t q = 0; q < np; q++) {
            v[q] = m->V[q][k];
        }
    }
    if (has_s) {
        for (int64_t q = 0; q < np; q++) {
            s[q] = m->S[q][k];
        }
    }
}

/* Lane k of the group out of play: its vectors zeroed (a zero network
 * computes finite numbers), its mask lanes cleared. */
static void GSUF(group_retire)(const GSUF(group_mem) *m, int64_t np,
                              GSUF(group_opt) *o, int64_t k)
{
    for (int64_t q = 0; q < np; q++) {
        m->P[q][k] = 0;
        m->V[q][k] = 0;
        m->S[q][k] = 0;
    }
    o->active[k] = 0;
}


/* Per-lane bookkeeping of a group (fit_lean's locals, one per lane). */
typedef struct {
    REAL wd_B[NL], wd_last[NL];
    int64_t to_snap[NL], every[NL], snap_epoch[NL], t[NL];
    double loss[NL], esum[NL], wsum[NL], loss_scale[NL];
    int active[NL];
} GSUF(group_lanes);

/* A group's fit: jobs[0, count) in lanes 0 .. count-1 (spare lanes are
 * zero networks on job 0's rows, never written back).  fit_lean's loop
 * with every lane's step computed at once (see the top of this file);
 * the same results, counters and exits per lane as fnn_fit. */
FNN_MANY_TARGET __attribute__((noinline))
static void GSUF(group_fit)(many_run *r, fnn_many_job *jobs, int64_t count,
                           char *scratch)
{
    const fnn_net *net = jobs[0].net;
    const fnn_fit_args *a0 = &jobs[0].a;
    GSUF(group_mem) m;
    GSUF(group_layout)(net, scratch, &m);
    fnn_many_job *job[NL];
    for (int64_t k = 0; k < NL; k++) {
        job[k] = &jobs[k < count ? k : 0];
    }
    const int64_t n = a0->n, n_epochs = a0->n_epochs, np = net->n_params;
    const int one_block = n >= 1 && n <= ML && a0->batch >= n && !a0->order;
    const int64_t B = one_block ? n
                    : a0->batch < 1 ? 1 : (a0->batch > n ? n : a0->batch);
    const int64_t steps = one_block ? 1 : n > 0 ? (n + B - 1) / B : 0;
    const int64_t B_last = n - (steps - 1) * B;
    const REAL *X = (const REAL *)a0->x, *Y = (const REAL *)a0->y;
    const int64_t ldx = a0->ldx, ldy = a0->ldy;
    const int sse = net->loss == FNN_SSE;
    const double scale_B = sse ? 1.0 : 1.0 / (double)B;
    const double scale_last = sse ? 1.0 : 1.0 / (double)B_last;
    const int oact = fnn_out_act(net, 0);
    GSUF(group_lanes) g;
    GSUF(group_opt) o;
    memset(&o, 0, sizeof o);
    for (int64_t k = 0; k < NL; k++) {
        const fnn_optim *opt = &job[k]->opt;
        o.kinds |= KIND_BIT(opt->kind);
        o.is[opt->kind][k] = -1;
        const fnn_fit_args *a = &job[k]->a;
        g.wd_B[k] = (REAL)(opt->l2_per_row ? opt->l2 / (double)B : opt->l2);
        g.wd_last[k] = (REAL)(opt->l2_per_row ? opt->l2 / (double)B_last
                                              : opt->l2);
        g.every[k] = a->snapshot_every < 1 ? 1 : a->snapshot_every;
        g.loss_scale[k] = a->loss_scale;
        g.to_snap[k] = (g.every[k] - (a->epoch0 % g.every[k])) % g.every[k];
        g.snap_epoch[k] = -1;
        g.t[k] = opt->t;
        g.active[k] = k < count;
        o.active[k] = k < count ? -1 : 0;
        o.mu[k] = (REAL)opt->momentum;
        o.b1[k] = (REAL)opt->beta1;
        o.b2[k] = (REAL)opt->beta2;
        o.eps[k] = (REAL)opt->eps;
        o.c1[k] = 1 - o.b1[k];
        o.c2[k] = 1 - o.b2[k];
    }
    for (int64_t k = 0; k < NL; k++) {
        if (k < count) {
            GSUF(group_transfer)(&m, np, job[k], k, 1);
            job[k]->a.out.bad_epoch = -1;
            job[k]->a.out.bad_step = -1;
        } else {
            GSUF(group_retire)(&m, np, &o, k);
            for (int64_t q = 0; q < np; q++) {
                m.G[q][k] = 0;
            }
        }
    }
    const int64_t *none[NL] = {NULL};
    if (one_block) {
        GSUF(group_gather)(net, &m, X, ldx, Y, ldy, none, 0, n);
    }
    many_poller pl;
    many_poller_init(&pl);
    int64_t e = 0, steps_done = 0;
    int stopped = 0, live = (int)count;
    for (; e < n_epochs; e++) {
        const int64_t *ord[NL];
        for (int64_t k = 0; k < NL; k++) {
            const fnn_fit_args *a = &job[k]->a;
            o.lr[k] = (REAL)a->lr[a->lr_const ? 0 : e];
            o.fused[k] = job[k]->opt.kind == FNN_OPT_SGD && o.lr[k] != 0
                         ? -1 : 0;
            ord[k] = a->order && !one_block ? a->order + e * n : NULL;
            g.esum[k] = 0.0;
            g.wsum[k] = 0.0;
        }
        GSUF(group_plain)(&o);
        for (int64_t s = 0; s < steps; s++) {
            const int64_t i0 = s * B;
            const int last = one_block || s == steps - 1;
            const int64_t mb = last ? B_last : B;
            const double scale = last ? scale_last : scale_B;
            const int64_t *so[NL];
            for (int64_t k = 0; k < NL; k++) {
                o.wd[k] = last ? g.wd_last[k] : g.wd_B[k];
                so[k] = ord[k] ? ord[k] + i0 : NULL;
                g.loss[k] = 0.0;
            }
            const REAL *xs = ord[0] ? X : X + i0 * ldx;
            const REAL *ys = ord[0] ? Y : Y + i0 * ldy;
            for (int64_t ib = 0; ib < mb; ib += ML) {
                const int64_t valid = mb - ib < ML ? mb - ib : ML;
                if (!one_block) {
                    GSUF(group_gather)(net, &m, xs, ldx, ys, ldy, so, ib,
                                      valid);
                }
                GSUF(group_forward)(net, &m, oact);
                GSUF(group_loss)(net, &m, valid, scale, oact, g.loss);
                GSUF(group_backward)(net, &m, ib == 0);
            }
            /* a lane whose loss is not finite stops before this step, as
             * its fit would */
            for (int64_t k = 0; k < count; k++) {
                if (g.active[k] && !(g.loss[k] - g.loss[k] == 0)) {
                    fnn_fit_args *a = &job[k]->a;
                    a->out.bad_epoch = e;
                    a->out.bad_step = s;
                    a->out.epochs_done = e;
                    a->out.steps_done = steps_done;
                    if (g.snap_epoch[k] >= 0) {
                        a->out.snapshot_epoch = g.snap_epoch[k];
                    }
                    job[k]->opt.t = g.t[k];
                    job[k]->status = FNN_ERR_NONFINITE;
                    GSUF(group_transfer)(&m, np, job[k], k, 0);
                    GSUF(group_retire)(&m, np, &o, k);
                    GSUF(group_plain)(&o);
                    g.active[k] = 0;
                    live -= 1;
                }
            }
            if (live == 0) {
                goto out;
            }
            for (int64_t k = 0; k < count && s == 0; k++) {
                REAL *snap = (REAL *)job[k]->a.snapshot;
                if (g.active[k] && g.to_snap[k] == 0 && snap) {
                    for (int64_t q = 0; q < np; q++) {
                        snap[q] = m.P[q][k];
                    }
                    g.snap_epoch[k] = e;
                }
            }
            if (o.kinds & KIND_BIT(FNN_OPT_ADAM)) {
                for (int64_t k = 0; k < NL; k++) {
                    g.t[k] += g.active[k] && job[k]->opt.kind == FNN_OPT_ADAM;
                    o.lr_t[k] = SUF(adam_lr_t)(o.lr[k], o.b1[k], o.b2[k],
                                               g.t[k] > 0 ? g.t[k] : 1);
                }
            }
            GSUF(group_update)(net, &m, &o);
            for (int64_t k = 0; k < count; k++) {
                if (g.active[k]) {
                    const double l2term = 0.0;
                    double loss = g.loss[k];
                    loss = loss * g.loss_scale[k] + l2term;
                    /* fit_lean's sum is a multiply and an add, never an
                     * FMA (its select sits between them) */
                    double lm = loss * (double)mb;
                    FNN_OPAQUE(lm);
                    g.esum[k] += sse ? loss : lm;
                    g.wsum[k] += (double)mb;
                }
            }
            steps_done += 1;
            if (many_should_stop(r, &pl)) {
                for (int64_t k = 0; k < count; k++) {
                    if (g.active[k]) {
                        job[k]->a.epoch_loss[e] = NAN;
                    }
                }
                stopped = 1;
                goto out;
            }
        }
        for (int64_t k = 0; k < count; k++) {
            if (g.active[k]) {
                job[k]->a.epoch_loss[e] = sse ? g.esum[k]
                    : (g.wsum[k] > 0 ? g.esum[k] / g.wsum[k] : 0.0);
            }
            g.to_snap[k] = g.to_snap[k] == 0 ? g.every[k] - 1
                                             : g.to_snap[k] - 1;
        }
    }
out:
    for (int64_t k = 0; k < count; k++) {
        if (!g.active[k]) {
            continue;
        }
        fnn_fit_args *a = &job[k]->a;
        GSUF(group_transfer)(&m, np, job[k], k, 0);
        a->out.epochs_done = e;
        a->out.steps_done = steps_done;
        if (g.snap_epoch[k] >= 0) {
            a->out.snapshot_epoch = g.snap_epoch[k];
        }
        job[k]->opt.t = g.t[k];
        job[k]->status = stopped ? FNN_STOPPED : FNN_OK;
    }
}

static void GSUF(group_unit)(many_run *r, int64_t u, char *scratch)
{
    const int64_t k0 = u * NL;
    const int64_t count = r->n_jobs - k0 < NL ? r->n_jobs - k0 : NL;
    GSUF(group_fit)(r, r->jobs + k0, count, scratch);
}

#undef NL
