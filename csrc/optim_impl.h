/* optim_impl.h -- body of optim.c, included once per dtype (REAL, SUF).
 * Each optimizer is one loop over flat buffers; scalars that do not depend
 * on the element (Adam's bias correction) are computed before it. */

FNN_VEC void KSUF(fnn_sgd_step)(int64_t n, REAL lr, REAL wd, const REAL *g, REAL *w)
{
    if (wd == 0) {
        FNN_SIMD for (int64_t i = 0; i < n; i++) {
            w[i] -= lr * g[i];
        }
    } else {
        FNN_SIMD for (int64_t i = 0; i < n; i++) {
            w[i] -= lr * (g[i] + wd * w[i]);
        }
    }
}

FNN_VEC void KSUF(fnn_momentum_step)(int64_t n, REAL lr, REAL mu, REAL wd,
                            int nesterov, const REAL *g, REAL *w, REAL *v)
{
    if (nesterov) {
        FNN_SIMD for (int64_t i = 0; i < n; i++) {
            REAL gi = g[i] + wd * w[i];
            REAL vi = mu * v[i] - lr * gi;
            v[i] = vi;
            w[i] += mu * vi - lr * gi;
        }
    } else {
        FNN_SIMD for (int64_t i = 0; i < n; i++) {
            REAL gi = g[i] + wd * w[i];
            REAL vi = mu * v[i] - lr * gi;
            v[i] = vi;
            w[i] += vi;
        }
    }
}

FNN_VEC void KSUF(fnn_adam_step)(int64_t n, REAL lr, REAL b1, REAL b2, REAL eps,
                        int64_t t, REAL wd, const REAL *g, REAL *w, REAL *m,
                        REAL *v)
{
    /* lr_t in double: b^t underflows gracefully and 1 - b^t keeps digits */
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    REAL lr_t = (REAL)((double)lr * sqrt(bc2) / bc1);
    REAL c1 = 1 - b1, c2 = 1 - b2;
    FNN_SIMD for (int64_t i = 0; i < n; i++) {
        REAL gi = g[i] + wd * w[i];
        REAL mi = b1 * m[i] + c1 * gi;
        REAL vi = b2 * v[i] + c2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr_t * mi / (SQRT(vi) + eps);
    }
}

FNN_VEC double KSUF(fnn_sum_squares)(int64_t n, const REAL *x)
{
    double s = 0.0;
    FNN_SIMD_SUM(s) for (int64_t i = 0; i < n; i++) {
        s += (double)x[i] * (double)x[i];
    }
    return s;
}

FNN_VEC int KSUF(fnn_all_finite)(int64_t m, int64_t n, const REAL *x, int64_t ldx)
{
    if (ldx == n) {
        n *= m;
        m = m > 0 ? 1 : 0;
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *xi = x + i * ldx;
        /* x - x is 0 for finite x and NaN for inf/NaN; NaN poisons acc */
        REAL acc = 0;
        FNN_SIMD_SUM(acc) for (int64_t j = 0; j < n; j++) {
            acc += xi[j] - xi[j];
        }
        if (acc != 0) {
            return 0;
        }
    }
    return 1;
}
