/* sparse_impl.h -- body of sparse.c per dtype (REAL, SUF, SQRT): the public
 * entry points (index width picked at run time) and the weight gradient
 * and update from a minibatch regrouped by column (fnn_csr_batch). */

int SUF(fnn_csr_check)(const fnn_csr *x, int64_t nnz, int64_t *where)
{
    *where = -1;
    return x->idx64 ? SUF(csr_check_i64)(x, nnz, where)
                    : SUF(csr_check_i32)(x, nnz, where);
}

void SUF(fnn_csr_matmul)(const fnn_csr *x, int64_t m, int64_t row0,
                         const int64_t *rows, int64_t n, const REAL *w,
                         int64_t ldw, REAL *z, int64_t ldz)
{
    if (x->idx64) {
        SUF(csr_matmul_i64)(x, m, row0, rows, n, w, ldw, z, ldz);
    } else {
        SUF(csr_matmul_i32)(x, m, row0, rows, n, w, ldw, z, ldz);
    }
}

int64_t SUF(fnn_csr_batch)(const fnn_csr *x, int64_t m, int64_t row0,
                           const int64_t *rows, fnn_csr_batch *b)
{
    return x->idx64 ? SUF(csr_batch_i64)(x, m, row0, rows, b)
                    : SUF(csr_batch_i32)(x, m, row0, rows, b);
}

/* Columns of W (or G) are worked in chunks of this many elements: one
 * chunk of a row's gradient is summed in a stack buffer, then applied. */
#ifndef FNN_SP_CHUNK
#define FNN_SP_CHUNK 128
#endif

/* g[0, nc) := sum over k in [k0, k1), in order, of val[k] *
 * dz[pos[k], c0 + c]; starting from zeros (so fnn_csr_grad and the fused
 * update form the same sums). */
FNN_ALWAYS_INLINE void SUF(sp_col_grad)(int64_t k0, int64_t k1, int64_t c0,
                                        int64_t nc, const int32_t *pos,
                                        const REAL *val, const REAL *dz,
                                        int64_t lddz, REAL *restrict g)
{
    FNN_SIMD for (int64_t c = 0; c < nc; c++) {
        g[c] = 0;
    }
    for (int64_t k = k0; k < k1; k++) {
        const REAL v = val[k];
        const REAL *restrict dr = dz + (int64_t)pos[k] * lddz + c0;
        FNN_SIMD for (int64_t c = 0; c < nc; c++) {
            g[c] += v * dr[c];
        }
    }
}

FNN_CLONES
void SUF(fnn_csr_grad)(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                       int64_t n, const REAL *dz, int64_t lddz, REAL *g,
                       int64_t ldg)
{
    const int64_t *colptr = b->colptr;
    const REAL *val = (const REAL *)b->val;
    for (int64_t j = j0; j < j1; j++) {
        for (int64_t c0 = 0; c0 < n; c0 += FNN_SP_CHUNK) {
            const int64_t nc = n - c0 < FNN_SP_CHUNK ? n - c0 : FNN_SP_CHUNK;
            SUF(sp_col_grad)(colptr[j], colptr[j + 1], c0, nc, b->pos, val,
                             dz, lddz, g + j * ldg + c0);
        }
    }
}

/* The optimizer's constants for one step. */
typedef struct {
    int kind;
    REAL lr, wd, mu, b1, b2, c1, c2, eps, lr_t;
} SUF(sp_opt);

/* One optimizer step over len elements of w (and its state v1, v2) with
 * gradient G = g[i] (zero: (REAL)0, g unread) plus the decay wd w[i], in
 * exactly the expressions of optim_impl.h, so that a row without entries
 * gets what the flat optimizer gives it with a zero gradient.  want_ss:
 * returns sum of w^2 before the step.  zero and want_ss are constants at
 * every call (the loops are compiled for each). */
FNN_ALWAYS_INLINE double SUF(sp_step)(const SUF(sp_opt) *o, int64_t len,
                                      const REAL *restrict g, const int zero,
                                      const int want_ss, REAL *restrict w,
                                      REAL *restrict v1, REAL *restrict v2)
{
    const REAL lr = o->lr, wd = o->wd;
    double ss = 0.0;
#define FNN_SP_G (zero ? (REAL)0 : g[i])
#define FNN_SP_SS(wi) if (want_ss) { ss += (double)(wi) * (double)(wi); }
    if (o->kind == FNN_OPT_ADAM) {
        const REAL b1 = o->b1, b2 = o->b2, c1 = o->c1, c2 = o->c2;
        const REAL eps = o->eps, lr_t = o->lr_t;
        FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
            const REAL wi = w[i];
            FNN_SP_SS(wi)
            REAL gi = FNN_SP_G + wd * wi;
            REAL mi = b1 * v1[i] + c1 * gi;
            REAL vi = b2 * v2[i] + c2 * (gi * gi);
            v1[i] = mi;
            v2[i] = vi;
            w[i] = wi - lr_t * mi / (SQRT(vi) + eps);
        }
    } else if (o->kind == FNN_OPT_NESTEROV) {
        const REAL mu = o->mu;
        FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
            const REAL wi = w[i];
            FNN_SP_SS(wi)
            REAL gi = FNN_SP_G + wd * wi;
            REAL vi = mu * v1[i] - lr * gi;
            v1[i] = vi;
            w[i] = wi + (mu * vi - lr * gi);
        }
    } else if (o->kind == FNN_OPT_MOMENTUM) {
        const REAL mu = o->mu;
        FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
            const REAL wi = w[i];
            FNN_SP_SS(wi)
            REAL gi = FNN_SP_G + wd * wi;
            REAL vi = mu * v1[i] - lr * gi;
            v1[i] = vi;
            w[i] = wi + vi;
        }
    } else if (wd == 0) {
        /* fnn_sgd_step without decay: w -= lr g; w - lr * 0 is w */
        if (zero) {
            if (want_ss) {
                FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
                    ss += (double)w[i] * (double)w[i];
                }
            }
        } else {
            FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
                const REAL wi = w[i];
                FNN_SP_SS(wi)
                w[i] = wi - lr * FNN_SP_G;
            }
        }
    } else {
        FNN_SIMD_SUM(ss) for (int64_t i = 0; i < len; i++) {
            const REAL wi = w[i];
            FNN_SP_SS(wi)
            w[i] = wi - lr * (FNN_SP_G + wd * wi);
        }
    }
#undef FNN_SP_G
#undef FNN_SP_SS
    return ss;
}

/* sp_step with g NULL for a zero gradient, want_ss from a flag: each of the
 * four variants compiled once. */
static double SUF(sp_apply)(const SUF(sp_opt) *o, int64_t len, const REAL *g,
                            int want_ss, REAL *w, REAL *v1, REAL *v2)
{
    if (g) {
        return want_ss ? SUF(sp_step)(o, len, g, 0, 1, w, v1, v2)
                       : SUF(sp_step)(o, len, g, 0, 0, w, v1, v2);
    }
    return want_ss ? SUF(sp_step)(o, len, NULL, 1, 1, w, v1, v2)
                   : SUF(sp_step)(o, len, NULL, 1, 0, w, v1, v2);
}

/* Rows [j0, j1) of W: each run of consecutive rows without entries is one
 * flat span of the zero-gradient step; a row with entries is worked in
 * chunks, its gradient summed (sp_col_grad) and applied at once. */
FNN_CLONES
void SUF(fnn_csr_update)(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                         int64_t n, const REAL *dz, int64_t lddz,
                         const fnn_optim *opt, REAL lr, REAL wd, REAL *w,
                         REAL *vel, REAL *sq, double *sumsq)
{
    const int64_t *colptr = b->colptr;
    const REAL *val = (const REAL *)b->val;
    const int want = sumsq != NULL;
    SUF(sp_opt) o;
    o.kind = opt->kind;
    o.lr = lr;
    o.wd = wd;
    o.mu = (REAL)opt->momentum;
    o.b1 = (REAL)opt->beta1;
    o.b2 = (REAL)opt->beta2;
    o.c1 = 1 - o.b1;
    o.c2 = 1 - o.b2;
    o.eps = (REAL)opt->eps;
    o.lr_t = 0;
    if (o.kind == FNN_OPT_ADAM) {
        /* as fnn_adam_step: the bias corrections in double */
        double bc1 = 1.0 - pow((double)o.b1, (double)opt->t);
        double bc2 = 1.0 - pow((double)o.b2, (double)opt->t);
        o.lr_t = (REAL)((double)lr * sqrt(bc2) / bc1);
    }
    const int has_v1 = o.kind != FNN_OPT_SGD, has_v2 = o.kind == FNN_OPT_ADAM;
    double ss = 0.0;
    int64_t j = j0;
    while (j < j1) {
        int64_t e = j;
        while (e < j1 && colptr[e] == colptr[e + 1]) {
            e++;
        }
        if (e > j) {
            const int64_t off = j * n;
            ss += SUF(sp_apply)(&o, (e - j) * n, NULL, want, w + off,
                                has_v1 ? vel + off : NULL,
                                has_v2 ? sq + off : NULL);
            j = e;
            continue;
        }
        for (int64_t c0 = 0; c0 < n; c0 += FNN_SP_CHUNK) {
            const int64_t nc = n - c0 < FNN_SP_CHUNK ? n - c0 : FNN_SP_CHUNK;
            const int64_t off = j * n + c0;
            REAL g[FNN_SP_CHUNK];
            SUF(sp_col_grad)(colptr[j], colptr[j + 1], c0, nc, b->pos, val,
                             dz, lddz, g);
            ss += SUF(sp_apply)(&o, nc, g, want, w + off,
                                has_v1 ? vel + off : NULL,
                                has_v2 ? sq + off : NULL);
        }
        j++;
    }
    if (sumsq) {
        *sumsq = ss;
    }
}
