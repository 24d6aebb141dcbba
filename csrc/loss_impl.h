/* loss_impl.h -- body of loss.c, included once per dtype (REAL, SUF).
 * All loss arithmetic is double: the output layer is narrow, so the cost
 * is small, and the loss value and p - y keep full precision. */

#ifndef FNN_ROBUST_DEFINED
#define FNN_ROBUST_DEFINED
/* The robust regression losses (mae, huber, quantile; see fnn_loss) at
 * r = z - y with parameter p: returns the loss, *g its derivative in z.
 * Straight-line selects that vectorize once inlined into a loop with a
 * constant loss code.  NaN r gives NaN loss and derivative; at the kinks
 * (r = 0 for mae and quantile) the derivative is 0. */
static inline __attribute__((always_inline))
double fnn_robust(int loss, double p, double r, double *g)
{
    if (loss == FNN_MAE) {
        *g = r > 0 ? 1.0 : (r < 0 ? -1.0 : 0.0 * r);
        return r < 0 ? -r : r;
    }
    if (loss == FNN_HUBER) {
        double a = r < 0 ? -r : r;
        *g = r > p ? p : (r < -p ? -p : r);
        return a <= p ? 0.5 * r * r : p * (a - 0.5 * p);
    }
    /* FNN_QUANTILE */
    *g = r > 0 ? 1.0 - p : (r < 0 ? -p : 0.0 * r);
    return r > 0 ? (1.0 - p) * r : -p * r;
}
#endif

/* The robust losses over N contiguous elements (the flat pass), CODE a
 * constant: total += the losses; dz := scale * derivative if dz. */
#define FNN_ROBUST_FLAT(CODE)                                                   do {                                                                            if (dz) {                                                                       FNN_SIMD_SUM(total) for (int64_t i = 0; i < N; i++) {                           double gi;                                                                  total += fnn_robust(CODE, param,                                                                (double)z[i] - (double)y[i], &gi);                      dz[i] = (REAL)(scale * gi);                                             }                                                                       } else {                                                                        FNN_SIMD_SUM(total) for (int64_t i = 0; i < N; i++) {                           double gi;                                                                  total += fnn_robust(CODE, param,                                                                (double)z[i] - (double)y[i], &gi);                  }                                                                       }                                                                       } while (0)

/* The same over row i (zi, yi, dzi), gradient factor g: li += losses. */
#define FNN_ROBUST_ROW(CODE)                                                    do {                                                                            FNN_SIMD_SUM(li) for (int64_t j = 0; j < n; j++) {                              double gj;                                                                  li += fnn_robust(CODE, param, (double)zi[j] - (double)yi[j],                                 &gj);                                                      if (dzi) {                                                                      dzi[j] = (REAL)(g * gj);                                                }                                                                       }                                                                       } while (0)

FNN_VEC double KSUF(fnn_loss_grad)(int64_t m, int64_t n, int loss,
                                   double param, double scale, const REAL *z,
                                   int64_t ldz, const REAL *y, int64_t ldy,
                                   const REAL *sw, REAL *dz, int64_t lddz,
                                   REAL *db)
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
        } else if (loss == FNN_MAE) {
            FNN_ROBUST_FLAT(FNN_MAE);
        } else if (loss == FNN_HUBER) {
            FNN_ROBUST_FLAT(FNN_HUBER);
        } else if (loss == FNN_QUANTILE) {
            FNN_ROBUST_FLAT(FNN_QUANTILE);
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
        case FNN_MAE:
            FNN_ROBUST_ROW(FNN_MAE);
            break;
        case FNN_HUBER:
            FNN_ROBUST_ROW(FNN_HUBER);
            break;
        case FNN_QUANTILE:
            FNN_ROBUST_ROW(FNN_QUANTILE);
            break;
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

#undef FNN_ROBUST_FLAT
#undef FNN_ROBUST_ROW
