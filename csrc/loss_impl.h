/* loss_impl.h -- body of loss.c, included once per dtype (REAL, SUF).
 * All loss arithmetic is double: the output layer is narrow, so the cost
 * is small, and the loss value and p - y keep full precision. */

FNN_VEC double KSUF(fnn_loss_grad)(int64_t m, int64_t n, int loss, double scale,
                          const REAL *z, int64_t ldz, const REAL *y,
                          int64_t ldy, const REAL *sw, REAL *dz,
                          int64_t lddz, REAL *db)
{
    double total = 0.0;
    if (dz && db) {
        for (int64_t j = 0; j < n; j++) {
            db[j] = 0;
        }
    }
    /* Elementwise losses over contiguous arrays without weights: one flat
     * pass over all m*n elements (no per-row loop set-up; tiny networks
     * have one output per row). */
    if (loss != FNN_SOFTMAX_CE && !sw && ldz == n && ldy == n
        && (!dz || lddz == n)) {
        const int64_t N = m * n;
        if (loss == FNN_BCE) {
#define FNN_BCE_LOOP(STORE)                                                 \
            FNN_SIMD_SUM(total) for (int64_t i = 0; i < N; i++) {           \
                double v = (double)z[i], t = (double)y[i];                  \
                double e = fnn_exp_f64(v < 0 ? v : -v);      /* e^-|v| */   \
                total += (v > 0 ? v : 0.0) - t * v + fnn_log1p01_f64(e);    \
                STORE;                                                      \
            }
            if (dz) {
                FNN_BCE_LOOP(double r = 1.0 / (1.0 + e);
                             dz[i] = (REAL)(scale * ((v < 0 ? e * r : r) - t)))
            } else {
                FNN_BCE_LOOP((void)0)
            }
#undef FNN_BCE_LOOP
        } else {
            const double c = loss == FNN_SSE ? 1.0 : 0.5;
            const double gd = loss == FNN_SSE ? 2.0 * scale : scale;
            if (dz) {
                FNN_SIMD_SUM(total) for (int64_t i = 0; i < N; i++) {
                    double d = (double)z[i] - (double)y[i];
                    total += c * d * d;
                    dz[i] = (REAL)(gd * d);
                }
            } else {
                FNN_SIMD_SUM(total) for (int64_t i = 0; i < N; i++) {
                    double d = (double)z[i] - (double)y[i];
                    total += c * d * d;
                }
            }
        }
        if (dz && db) {
            for (int64_t i = 0; i < m; i++) {
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    db[j] += dz[i * n + j];
                }
            }
        }
        return scale * total;
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *zi = z + i * ldz;
        const REAL *yi = y + i * ldy;
        REAL *dzi = dz ? dz + i * lddz : NULL;
        double w = sw ? (double)sw[i] : 1.0;
        double g = scale * w;       /* gradient factor of this row */
        double li = 0.0;
        switch (loss) {
        case FNN_SSE:
        case FNN_MSE: {
            double c = loss == FNN_SSE ? 1.0 : 0.5;
            double gd = loss == FNN_SSE ? 2.0 * g : g;
            FNN_SIMD_SUM(li) for (int64_t j = 0; j < n; j++) {
                double d = (double)zi[j] - (double)yi[j];
                li += c * d * d;
                if (dzi) {
                    dzi[j] = (REAL)(gd * d);
                }
            }
            break;
        }
        case FNN_BCE: {
            /* softplus(z) - y z = max(z, 0) - y z + log1p(e^-|z|), and
             * sigmoid(z) from the same e^-|z|; dz written after z is read */
            FNN_SIMD_SUM(li) for (int64_t j = 0; j < n; j++) {
                double v = (double)zi[j], t = (double)yi[j];
                double e = fnn_exp_f64(v < 0 ? v : -v);
                li += (v > 0 ? v : 0.0) - t * v + fnn_log1p01_f64(e);
                if (dzi) {
                    double r = 1.0 / (1.0 + e);
                    dzi[j] = (REAL)(g * ((v < 0 ? e * r : r) - t));
                }
            }
            break;
        }
        case FNN_SOFTMAX_CE: {
            double mx = (double)zi[0];
            for (int64_t j = 1; j < n; j++) {
                double v = (double)zi[j];
                mx = v > mx ? v : mx;
            }
            double s = 0.0, ys = 0.0, yz = 0.0;
            /* double dz apart from z: keep e^(z - max) there and scale it
             * (one exp per element); otherwise (float dz, whose rounding
             * would spoil p - y near 1, or dz == z) recompute p in double */
            const int keep = sizeof(REAL) == sizeof(double) && dzi && dzi != zi;
            if (keep) {
                FNN_SIMD_SUM3(s, ys, yz) for (int64_t j = 0; j < n; j++) {
                    double v = (double)zi[j];
                    double e = fnn_exp_f64(v - mx);
                    dzi[j] = (REAL)e;
                    s += e;
                    ys += (double)yi[j];
                    yz += (double)yi[j] * v;
                }
            } else {
                FNN_SIMD_SUM3(s, ys, yz) for (int64_t j = 0; j < n; j++) {
                    double v = (double)zi[j];
                    s += fnn_exp_f64(v - mx);
                    ys += (double)yi[j];
                    yz += (double)yi[j] * v;
                }
            }
            double lse = mx + fnn_log_f64(s);
            li = lse * ys - yz;
            if (keep) {
                const double gys = g * ys / s;
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    dzi[j] = (REAL)(gys * (double)dzi[j] - g * (double)yi[j]);
                }
            } else if (dzi) {
                const double gy = g * ys;
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    double p = fnn_exp_f64((double)zi[j] - lse);
                    dzi[j] = (REAL)(gy * p - g * (double)yi[j]);
                }
            }
            break;
        }
        default:
            li = 0.0;
            break;
        }
        total += w * li;
        if (dzi && db) {
            FNN_SIMD for (int64_t j = 0; j < n; j++) {
                db[j] += dzi[j];
            }
        }
    }
    return scale * total;
}
