/* lanes_impl.h -- the small-network step, included once per dtype (REAL,
 * SUF, KSUF; LANE_N, REALs in a vector, and LANE_INT, the integer of
 * REAL's width) after the inline kernel bodies (inline.h): by net.c
 * for fnn_net_loss_grad, and by train.c, whose fit loop inlines it.
 *
 * For a network whose layers are all a few units wide (2 -> 4 -> 1), a
 * GEMM per layer and the elementwise passes around it cost more in set-up
 * than in arithmetic: a row of 4 doubles does not fill a vector.  This
 * step turns the batch on its side instead: LANES rows of the minibatch at
 * a time (one 32-byte vector: 4 doubles, 8 floats) are transposed so that
 * each unit's value over those rows is one vector, and every layer is a
 * short run of full-vector multiply-adds, w * vector, whatever the widths.
 * The blocks' weight and bias gradients accumulate per lane in the
 * caller's scratch (net->lanes_ws, not the stack: a thread's stack may be
 * small) and are summed across lanes at the end; the update (fused SGD,
 * or the gradient into grads) runs only then, so every block sees the
 * weights from before the step, as the GEMM path does.
 *
 * Same contract as fnn_net_loss_grad; the activation, loss and SGD
 * arithmetic are the same inlined kernels run over the transposed block,
 * so the numbers match the GEMM path except for the order of the sums
 * (rounding).  A last partial block repeats its first row in the spare
 * lanes (anything non-finite there is non-finite in a real lane too) and
 * gives them zero loss and gradient.  Used when fnn_net_init sets
 * net->lanes (dense layers, no maxout or softmax, an elementwise loss, the
 * scratch within FNN_LANES_BYTES), lanes_ws is set, and there are no
 * sample weights and no dropout in the step. */

#define LANES ((int64_t)LANE_N)
_Static_assert(LANE_N * sizeof(REAL) == FNN_LANE_BYTES
               && sizeof(LANE_INT) == sizeof(REAL), "LANE_N, LANE_INT");

/* AVX2+FMA and baseline clones only: on AVX-512 CPUs the AVX2 one runs,
 * measured faster there (Zen 4: 92 against 107 ns for a 2 -> 4 -> 1 step;
 * the 16-element activation passes vectorize worse in 64-byte vectors). */
#ifndef FNN_LANES_CLONES
#if defined(FNN_CLONES_ON)
#define FNN_LANES_CLONES \
    __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FNN_LANES_CLONES
#endif
#endif

typedef REAL SUF(lanevec) __attribute__((vector_size(FNN_LANE_BYTES)));

/* dst[j][t] := rows[t][j] for j < n: the rows built into vectors in
 * registers (scalar stores read back as a vector would stall on store
 * forwarding). */
FNN_INLINE void SUF(lanes_load)(int64_t n, const REAL *const *rows,
                                SUF(lanevec) *dst)
{
    for (int64_t j = 0; j < n; j++) {
        SUF(lanevec) v;
        for (int64_t t = 0; t < LANES; t++) {
            v[t] = rows[t][j];
        }
        dst[j] = v;
    }
}

/* Where the scratch's y block starts (see lanes_body), after the x block
 * and the layers' outputs. */
FNN_INLINE SUF(lanevec) *SUF(lanes_yt)(const fnn_net *net)
{
    return (SUF(lanevec) *)net->lanes_ws + net->layers[0].n_in
           + net->ws_cols - 2 * net->max_width;
}

/* Rows i0 + t of x and y for t < valid (the first of them again in the
 * spare lanes), or rows order[i0 + t], transposed into the scratch's x
 * and y blocks (lanes_body's xt and yt). */
FNN_INLINE void SUF(lanes_block)(const fnn_net *net, int64_t i0,
                                 int64_t valid, const REAL *x, int64_t ldx,
                                 const REAL *y, int64_t ldy,
                                 const int64_t *order)
{
    SUF(lanevec) *xt = (SUF(lanevec) *)net->lanes_ws;
    SUF(lanevec) *yt = SUF(lanes_yt)(net);
    const REAL *xr[LANES], *yr[LANES];
    for (int64_t t = 0; t < LANES; t++) {
        int64_t i = i0 + (t < valid ? t : 0);
        i = order ? order[i] : i;
        xr[t] = x + i * ldx;
        yr[t] = y + i * ldy;
    }
    SUF(lanes_load)(net->layers[0].n_in, xr, xt);
    SUF(lanes_load)(net->layers[net->n_layers - 1].n_out, yr, yt);
}

/* The sum of v's lanes, by halves: (v0 + v2) + (v1 + v3) for 4 lanes. */
FNN_INLINE REAL SUF(lanes_sum)(SUF(lanevec) v)
{
    typedef LANE_INT mask __attribute__((vector_size(FNN_LANE_BYTES)));
#if LANE_N == 8
    v += __builtin_shuffle(v, (mask){4, 5, 6, 7, 0, 1, 2, 3});
    v += __builtin_shuffle(v, (mask){2, 3, 0, 1, 6, 7, 4, 5});
    v += __builtin_shuffle(v, (mask){1, 0, 3, 2, 5, 4, 7, 6});
#else
    v += __builtin_shuffle(v, (mask){2, 3, 0, 1});
    v += __builtin_shuffle(v, (mask){1, 0, 3, 2});
#endif
    return v[0];
}

/* The statements with N a compile-time constant equal to n for n <= 4, so
 * that loops over N unroll (narrow layers: the loop control would cost
 * more than the multiply-adds), else N = n. */
#define FNN_LANES_N(n, ...)                                                 \
    switch (n) {                                                            \
    case 1: { const int64_t N = 1; __VA_ARGS__ } break;                     \
    case 2: { const int64_t N = 2; __VA_ARGS__ } break;                     \
    case 3: { const int64_t N = 3; __VA_ARGS__ } break;                     \
    case 4: { const int64_t N = 4; __VA_ARGS__ } break;                     \
    default: { const int64_t N = n; __VA_ARGS__ } break;                    \
    }

/* The step over rows i of x and y for i < m, or rows order[i] if order
 * is not NULL (a shuffled minibatch read in place, not gathered).
 * preloaded (a constant at each use): m <= LANES, and lanes_block has
 * already put the one block's x and y in the scratch (fit's full-batch
 * epochs over a few rows: transposed once per fit, not per step). */
FNN_INLINE double SUF(lanes_body)(const fnn_net *net, int64_t m,
                                  const REAL *x, int64_t ldx, const REAL *y,
                                  int64_t ldy, const int64_t *order,
                                  double scale, REAL lr, REAL wd,
                                  REAL *params, REAL *grads, REAL *snapshot,
                                  int check_x, const int preloaded)
{
    typedef SUF(lanevec) vec;
    /* scratch, in vectors: x block (n_in), each layer's output (n_out),
     * y block, two delta buffers (max_width), then one accumulator per
     * parameter at the parameter's own index */
    vec *buf = (vec *)net->lanes_ws;
    const int64_t nl = net->n_layers;
    const fnn_layer *L0 = &net->layers[0], *last = &net->layers[nl - 1];
    vec *xt = buf;
    vec *act = xt + L0->n_in;           /* layer l's output at act + ws_col */
    vec *yt = SUF(lanes_yt)(net);       /* = act + ws_cols - 2 max_width */
    vec *D0 = yt + last->n_out, *D1 = D0 + net->max_width;
    vec *acc = D1 + net->max_width;
    const int oact = fnn_out_act(net, 0);
    const int64_t nout = last->n_out;
    double loss = 0.0;
    vec chk = {0};

    for (int64_t i0 = 0; i0 < m; i0 += LANES) {
        const int64_t valid = m - i0 < LANES ? m - i0 : LANES;
        const int first = i0 == 0;
        if (!preloaded) {
            SUF(lanes_block)(net, i0, valid, x, ldx, y, ldy, order);
        }

        /* forward: z_j = sum_p w_pj in_p (p in order) + b_j, then act */
        const vec *in = xt;
        vec *out = act;
        for (int64_t l = 0; l < nl; l++) {
            const fnn_layer *L = &net->layers[l];
            const int64_t ni = L->n_in, no = L->n_out;
            const REAL *W = params + L->w_off;
            const REAL *b = L->b_off >= 0 ? params + L->b_off : NULL;
            out = act + L->ws_col;
            FNN_LANES_N(ni,
                for (int64_t j = 0; j < no; j++) {
                    vec s = W[j] * in[0];
                    for (int64_t p = 1; p < N; p++) {
                        s += W[p * no + j] * in[p];
                    }
                    if (l == 0) {
                        chk += s - s;   /* NaN from any inf or NaN in x */
                    }
                    out[j] = b ? s + b[j] : s;
                })
            int a = l == nl - 1 ? oact : L->act;
            KSUF(fnn_bias_act_forward)(1, no * LANES, a, (REAL)L->alpha, NULL,
                                       (REAL *)out, no * LANES);
            in = out;
        }

        /* loss and output delta over the real lanes */
        vec *D = D0, *E = D1;
        if (valid == LANES) {
            loss += KSUF(fnn_loss_grad)(1, nout * LANES, net->loss,
                                        net->loss_param, scale,
                                        (const REAL *)out, nout * LANES,
                                        (const REAL *)yt, nout * LANES, NULL,
                                        (REAL *)D, nout * LANES, NULL);
        } else {
            for (int64_t j = 0; j < nout; j++) {
                loss += KSUF(fnn_loss_grad)(1, valid, net->loss,
                                            net->loss_param, scale,
                                            (const REAL *)(out + j), valid,
                                            (const REAL *)(yt + j), valid,
                                            NULL, (REAL *)(D + j), valid,
                                            NULL);
                for (int64_t t = valid; t < LANES; t++) {
                    D[j][t] = 0;
                }
            }
        }
        if (oact != FNN_IDENTITY) {
            KSUF(fnn_bias_act_backward)(1, nout * LANES, oact,
                                        (REAL)last->alpha, (const REAL *)out,
                                        nout * LANES, (const REAL *)D,
                                        nout * LANES, (REAL *)D,
                                        nout * LANES, NULL);
        }

        /* backward: per lane, dW_pj += in_p dZ_j, db_j += dZ_j, and the
         * layer below's dA_p = sum_j w_pj dZ_j times its act' */
        for (int64_t l = nl - 1; l >= 0; l--) {
            const fnn_layer *L = &net->layers[l];
            const int64_t ni = L->n_in, no = L->n_out;
            const REAL *W = params + L->w_off;
            const vec *inl = l > 0 ? act + net->layers[l - 1].ws_col : xt;
            vec *gw = acc + L->w_off;
            if (first) {
                FNN_LANES_N(no,
                    for (int64_t p = 0; p < ni; p++) {
                        for (int64_t j = 0; j < N; j++) {
                            gw[p * N + j] = inl[p] * D[j];
                        }
                    })
            } else {
                FNN_LANES_N(no,
                    for (int64_t p = 0; p < ni; p++) {
                        for (int64_t j = 0; j < N; j++) {
                            gw[p * N + j] += inl[p] * D[j];
                        }
                    })
            }
            if (L->b_off >= 0) {
                vec *gb = acc + L->b_off;
                for (int64_t j = 0; j < no; j++) {
                    gb[j] = first ? D[j] : gb[j] + D[j];
                }
            }
            if (l == 0) {
                break;
            }
            FNN_LANES_N(no,
                for (int64_t p = 0; p < ni; p++) {
                    const REAL *Wp = W + p * N;
                    vec s = Wp[0] * D[0];
                    for (int64_t j = 1; j < N; j++) {
                        s += Wp[j] * D[j];
                    }
                    E[p] = s;
                })
            const fnn_layer *P = &net->layers[l - 1];
            KSUF(fnn_bias_act_backward)(1, ni * LANES, P->act, (REAL)P->alpha,
                                        (const REAL *)inl, ni * LANES,
                                        (const REAL *)E, ni * LANES,
                                        (REAL *)E, ni * LANES, NULL);
            vec *t = D; D = E; E = t;
        }
    }
    if (check_x) {
        for (int64_t t = 0; t < LANES; t++) {
            if (chk[t] != 0) {
                return NAN;             /* x not finite: touch nothing */
            }
        }
    }
    if (!(loss - loss == 0)) {
        return loss;                    /* NaN or inf: touch nothing */
    }
    if (snapshot) {
        memcpy(snapshot, params, (size_t)net->n_params * sizeof(REAL));
    }
    /* sum the lanes; the update as the GEMM path makes it */
    for (int64_t l = 0; l < nl; l++) {
        const fnn_layer *L = &net->layers[l];
        const int64_t nw = L->n_in * L->n_out;
        const vec *gw = acc + L->w_off;
        REAL *W = params + L->w_off, *G = grads + L->w_off;
        int64_t q = 0;
#if LANE_N == 4
        /* four accumulators at a time, transposed as they are summed:
         * (a0 + a1) + (a2 + a3) for each */
        typedef LANE_INT mask __attribute__((vector_size(FNN_LANE_BYTES)));
        const mask even = {0, 4, 2, 6}, odd = {1, 5, 3, 7};
        const mask lo = {0, 1, 4, 5}, hi = {2, 3, 6, 7};
        for (; q + 4 <= nw; q += 4) {
            const vec *a = gw + q;
            vec ab = __builtin_shuffle(a[0], a[1], even)
                     + __builtin_shuffle(a[0], a[1], odd);
            vec cd = __builtin_shuffle(a[2], a[3], even)
                     + __builtin_shuffle(a[2], a[3], odd);
            vec g = __builtin_shuffle(ab, cd, lo)
                    + __builtin_shuffle(ab, cd, hi);
            if (lr != 0) {
                vec w;
                memcpy(&w, W + q, sizeof w);
                w = -lr * g + (1 - lr * wd) * w;
                memcpy(W + q, &w, sizeof w);
            } else {
                memcpy(G + q, &g, sizeof g);
            }
        }
#endif
        for (; q < nw; q++) {
            const REAL g = SUF(lanes_sum)(gw[q]);
            if (lr != 0) {
                W[q] = -lr * g + (1 - lr * wd) * W[q];
            } else {
                G[q] = g;
            }
        }
        if (L->b_off >= 0) {
            const vec *gb = acc + L->b_off;
            REAL *db = grads + L->b_off;
            for (int64_t j = 0; j < L->n_out; j++) {
                db[j] = SUF(lanes_sum)(gb[j]);
            }
            if (lr != 0) {
                KSUF(fnn_sgd_step)(L->n_out, lr, 0, db, params + L->b_off);
            }
        }
    }
    return loss;
}

#undef LANES
#undef FNN_LANES_N
