/* tiny_impl.h -- the network step for tiny networks, with the batch in the
 * vector lanes.  Included by net.c once per dtype (REAL, SUF, KSUF) after the
 * kernel bodies.
 *
 * For a 2 -> 4 -> 1 network on 4 rows every matrix is a few elements wide:
 * row-major loops over them are mostly loop overhead.  Here each unit's
 * values for all rows of the batch sit in one 64-byte array of FNN_TVL lanes
 * (rows beyond m are padding, zero in the input and in every delta), so a
 * layer is n_in * n_out full-vector multiply-adds, an activation is a few
 * full vectors, and a weight gradient is a sum across lanes.  The same math
 * as net_impl.h in another summation order (results agree to rounding). */

#define FNN_TVL ((int)(64 / sizeof(REAL)))   /* lanes: 8 doubles, 16 floats */
#define FNN_TMAXW 16                          /* widest layer */
#define FNN_TMAXL 8                           /* most layers */

/* Whether the tiny step applies: m rows fit the lanes, every layer is dense
 * (maxout keeps its argmax path) and at most FNN_TMAXW wide. */
FNN_INLINE int KSUF(tiny_ok)(const fnn_net *net, int64_t m)
{
    if (m < 1 || m > FNN_TVL || net->n_layers > FNN_TMAXL) {
        return 0;
    }
    for (int64_t l = 0; l < net->n_layers; l++) {
        const fnn_layer *L = &net->layers[l];
        if (L->act == FNN_MAXOUT || L->n_in > FNN_TMAXW
            || L->n_out > FNN_TMAXW) {
            return 0;
        }
    }
    return 1;
}

typedef KSUF(fnn_vec) KSUF(lanes);             /* one unit, all rows */

/* sum over the lanes of a * b */
FNN_INLINE REAL KSUF(lanes_dot)(KSUF(lanes) a, KSUF(lanes) b)
{
    const KSUF(lanes) p = a * b;
    REAL s = 0;
    for (int t = 0; t < FNN_TVL; t++) {
        s += p[t];
    }
    return s;
}

/* The contract of fnn_net_loss_grad (grads, fused SGD, snapshot, check_x,
 * NaN with nothing changed), for networks tiny_ok accepts. */
FNN_INLINE double KSUF(tiny_step)(const fnn_net *net, int64_t m,
                                  const REAL *x, int64_t ldx, const REAL *y,
                                  int64_t ldy, const REAL *sw, double scale,
                                  REAL lr, REAL wd, REAL *params, REAL *grads,
                                  REAL *snapshot, int check_x)
{
    enum { V = FNN_TVL, W = FNN_TMAXW };
    typedef KSUF(lanes) vec;
    /* a[l][unit] (lanes = rows): a[0] the input, a[l+1] layer l's output */
    vec a[FNN_TMAXL + 1][W];
    vec dz[W], da[W];
    double wl[V];                               /* row weight; 0 = padding */
    const int64_t nl = net->n_layers;
    const fnn_layer *last = &net->layers[nl - 1];

    for (int p = 0; p < net->layers[0].n_in; p++) {
        for (int t = 0; t < V; t++) {
            a[0][p][t] = t < m ? x[t * ldx + p] : 0;
        }
    }
    if (check_x && !KSUF(fnn_all_finite)(m, net->layers[0].n_in, x, ldx)) {
        return NAN;
    }
    for (int t = 0; t < V; t++) {
        wl[t] = t < m ? (sw ? (double)sw[t] : 1.0) : 0.0;
    }

    /* forward: z_j = sum_p in_p W[p,j], then + b_j, then the activation */
    for (int64_t l = 0; l < nl; l++) {
        const fnn_layer *L = &net->layers[l];
        const int nin = (int)L->n_in, nout = (int)L->n_out;
        const REAL *Wl = params + L->w_off;
        const REAL *b = L->b_off >= 0 ? params + L->b_off : NULL;
        for (int j = 0; j < nout; j++) {
            vec s = {0};
            for (int p = 0; p < nin; p++) {
                s += a[l][p] * Wl[p * nout + j];
            }
            a[l + 1][j] = b ? s + b[j] : s;
        }
        int act = l == nl - 1 ? SUF(out_act)(net, 0) : L->act;
        if (act == FNN_SOFTMAX) {
            act = FNN_IDENTITY;        /* softmax only with softmax_ce: fused */
        }
        KSUF(fnn_bias_act_forward)(nout, V, act, (REAL)L->alpha, NULL,
                                   (REAL *)a[l + 1], V);
    }

    /* loss and output delta, per lane, in double */
    const int nout = (int)last->n_out;
    const vec *out = a[nl];
    double li[V];
    for (int t = 0; t < V; t++) {
        li[t] = 0.0;
    }
    switch (net->loss) {
    case FNN_SSE:
    case FNN_MSE: {
        const double c = net->loss == FNN_SSE ? 1.0 : 0.5;
        const double gd = net->loss == FNN_SSE ? 2.0 : 1.0;
        for (int j = 0; j < nout; j++) {
            for (int t = 0; t < V; t++) {
                const double yv = t < m ? (double)y[t * ldy + j] : 0.0;
                const double d = (double)out[j][t] - yv;
                li[t] += c * d * d;
                dz[j][t] = (REAL)(scale * wl[t] * gd * d);
            }
        }
        break;
    }
    case FNN_BCE:
        for (int j = 0; j < nout; j++) {
            for (int t = 0; t < V; t++) {
                const double v = (double)out[j][t];
                const double yv = t < m ? (double)y[t * ldy + j] : 0.0;
                const double e = fnn_exp_f64(v < 0 ? v : -v);
                const double r = 1.0 / (1.0 + e), er = e * r;
                const double p = v < 0 ? er : r;
                li[t] += (v > 0 ? v : 0.0) - yv * v + fnn_log1p01_f64(e);
                dz[j][t] = (REAL)(scale * wl[t] * (p - yv));
            }
        }
        break;
    default: { /* FNN_SOFTMAX_CE */
        double mx[V], s[V], ys[V], yz[V];
        for (int t = 0; t < V; t++) {
            mx[t] = (double)out[0][t];
            s[t] = ys[t] = yz[t] = 0.0;
        }
        for (int j = 1; j < nout; j++) {
            for (int t = 0; t < V; t++) {
                const double v = (double)out[j][t];
                mx[t] = v > mx[t] ? v : mx[t];
            }
        }
        for (int j = 0; j < nout; j++) {
            for (int t = 0; t < V; t++) {
                const double v = (double)out[j][t];
                const double yv = t < m ? (double)y[t * ldy + j] : 0.0;
                s[t] += fnn_exp_f64(v - mx[t]);
                ys[t] += yv;
                yz[t] += yv * v;
            }
        }
        double lse[V];
        for (int t = 0; t < V; t++) {
            lse[t] = mx[t] + fnn_log_f64(s[t]);
            li[t] = lse[t] * ys[t] - yz[t];
        }
        for (int j = 0; j < nout; j++) {
            for (int t = 0; t < V; t++) {
                const double yv = t < m ? (double)y[t * ldy + j] : 0.0;
                const double p = fnn_exp_f64((double)out[j][t] - lse[t]);
                dz[j][t] = (REAL)(scale * wl[t] * (p * ys[t] - yv));
            }
        }
        break;
    }
    }
    double total = 0.0;
    for (int t = 0; t < m; t++) {
        total += wl[t] * li[t];
    }
    total *= scale;
    if (!(total - total == 0)) {
        return total;                   /* NaN or inf: touch nothing */
    }
    if (snapshot) {
        memcpy(snapshot, params, (size_t)net->n_params * sizeof(REAL));
    }
    {
        const int oact = SUF(out_act)(net, 0);
        if (oact != FNN_IDENTITY && oact != FNN_SOFTMAX) {
            KSUF(fnn_bias_act_backward)(nout, V, oact, (REAL)last->alpha,
                                        (const REAL *)out, V, (REAL *)dz, V,
                                        (REAL *)dz, V, NULL);
        }
    }

    /* backward: dz holds dZ of layer l, (n_out_l lanes-rows) */
    for (int64_t l = nl - 1; l >= 0; l--) {
        const fnn_layer *L = &net->layers[l];
        const int nin = (int)L->n_in, lout = (int)L->n_out;
        REAL *Wl = params + L->w_off;
        if (l > 0) {                    /* dA of the layer below, old W */
            for (int p = 0; p < nin; p++) {
                vec s = {0};
                for (int j = 0; j < lout; j++) {
                    s += dz[j] * Wl[p * lout + j];
                }
                da[p] = s;
            }
        }
        if (L->b_off >= 0) {
            REAL *db = grads + L->b_off;
            for (int j = 0; j < lout; j++) {
                REAL s = 0;
                for (int t = 0; t < V; t++) {
                    s += dz[j][t];
                }
                db[j] = s;
                if (lr != 0) {
                    params[L->b_off + j] -= lr * s;
                }
            }
        }
        const REAL keep = 1 - lr * wd;
        for (int p = 0; p < nin; p++) {
            for (int j = 0; j < lout; j++) {
                const REAL g = KSUF(lanes_dot)(a[l][p], dz[j]);
                if (lr != 0) {
                    Wl[p * lout + j] = -lr * g + keep * Wl[p * lout + j];
                } else {
                    grads[L->w_off + p * lout + j] = g;
                }
            }
        }
        if (l > 0) {                    /* dZ below = dA * f'(its output) */
            const fnn_layer *P = &net->layers[l - 1];
            KSUF(fnn_bias_act_backward)(nin, V, P->act, (REAL)P->alpha,
                                        (const REAL *)a[l], V, (const REAL *)da,
                                        V, (REAL *)dz, V, NULL);
        }
    }
    return total;
}

#undef FNN_TVL
#undef FNN_TMAXW
#undef FNN_TMAXL
