/* act_impl.h -- body of act.c, included once per dtype with REAL (float or
 * double) and SUF(name) (name##_f32 or name##_f64) defined.  Every inner
 * loop runs over a row's contiguous columns and vectorizes; the switch on
 * the activation sits outside it. */
#include "dropout.h"

/* One row of forward: v = z + b (or z), z := f(v). */
#define FNN_FWD_ROW(EXPR)                                               \
    do {                                                                \
        if (b) {                                                        \
            FNN_SIMD for (int64_t j = 0; j < n; j++) {                  \
                REAL v = zi[j] + b[j];                                  \
                zi[j] = (EXPR);                                         \
            }                                                           \
        } else {                                                        \
            FNN_SIMD for (int64_t j = 0; j < n; j++) {                  \
                REAL v = zi[j];                                         \
                zi[j] = (EXPR);                                         \
            }                                                           \
        }                                                               \
    } while (0)

FNN_VEC void KSUF(fnn_bias_act_forward)(int64_t m, int64_t n, int act, REAL alpha,
                               const REAL *b, REAL *z, int64_t ldz)
{
    /* A contiguous array without bias is one long row. */
    if (!b && ldz == n) {
        n *= m;
        m = m > 0 ? 1 : 0;
    }
    for (int64_t i = 0; i < m; i++) {
        REAL *zi = z + i * ldz;
        switch (act) {
        case FNN_SIGMOID:
            FNN_FWD_ROW(SUF(fnn_sigmoid)(v));
            break;
        case FNN_TANH:
            FNN_FWD_ROW(SUF(fnn_tanh)(v));
            break;
        case FNN_RELU:
            /* v < 0 rather than v > 0 keeps NaN. */
            FNN_FWD_ROW(v < 0 ? (REAL)0 : v);
            break;
        case FNN_LRELU:
            FNN_FWD_ROW(v < 0 ? alpha * v : v);
            break;
        case FNN_ELU:
            FNN_FWD_ROW(v < 0 ? alpha * SUF(fnn_expm1)(v) : v);
            break;
        default: /* FNN_IDENTITY */
            if (b) {
                FNN_FWD_ROW(v);
            }
            break;
        }
    }
}
#undef FNN_FWD_ROW

/* One row of backward: dzi[j] := dyi[j] * D, D the derivative from yv. */
#define FNN_BWD_ROW(D)                                                  \
    do {                                                                \
        FNN_SIMD for (int64_t j = 0; j < n; j++) {                      \
            REAL yv = yi[j];                                            \
            dzi[j] = dyi[j] * (D);                                      \
        }                                                               \
    } while (0)

FNN_VEC void KSUF(fnn_bias_act_backward)(int64_t m, int64_t n, int act, REAL alpha,
                                const REAL *y, int64_t ldy, const REAL *dy,
                                int64_t lddy, REAL *dz, int64_t lddz, REAL *db)
{
    if (db) {
        for (int64_t j = 0; j < n; j++) {
            db[j] = 0;
        }
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *yi = y + i * ldy;
        const REAL *dyi = dy + i * lddy;
        REAL *dzi = dz + i * lddz;
        switch (act) {
        case FNN_SIGMOID:
            FNN_BWD_ROW(yv * (1 - yv));
            break;
        case FNN_TANH:
            FNN_BWD_ROW(1 - yv * yv);
            break;
        case FNN_RELU:
            FNN_BWD_ROW(yv > 0 ? (REAL)1 : (REAL)0);
            break;
        case FNN_LRELU:
            FNN_BWD_ROW(yv > 0 ? (REAL)1 : alpha);
            break;
        case FNN_ELU:
            FNN_BWD_ROW(yv > 0 ? (REAL)1 : yv + alpha);
            break;
        default: /* FNN_IDENTITY */
            if (dzi != dyi) {
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    dzi[j] = dyi[j];
                }
            }
            break;
        }
        if (db) {
            FNN_SIMD for (int64_t j = 0; j < n; j++) {
                db[j] += dzi[j];
            }
        }
    }
}
#undef FNN_BWD_ROW

/* ---- dropout fused with the activation (masks: dropout.h) ---- */

/* One row of forward with dropout: v = z + b (or z), z := f(v) * mask,
 * mask s for kept units, 0 for dropped ones (NaN and inf still show). */
#define FNN_FWD_DROP_ROW(EXPR)                                          \
    do {                                                                \
        if (b) {                                                        \
            FNN_SIMD for (int64_t j = 0; j < n; j++) {                  \
                REAL v = zi[j] + b[j];                                  \
                REAL keep = fnn_drop_bits(r, (uint32_t)j) >= thr ? s : 0; \
                zi[j] = (EXPR) * keep;                                  \
            }                                                           \
        } else {                                                        \
            FNN_SIMD for (int64_t j = 0; j < n; j++) {                  \
                REAL v = zi[j];                                         \
                REAL keep = fnn_drop_bits(r, (uint32_t)j) >= thr ? s : 0; \
                zi[j] = (EXPR) * keep;                                  \
            }                                                           \
        }                                                               \
    } while (0)

FNN_VEC void KSUF(fnn_bias_act_dropout_forward)(int64_t m, int64_t n, int act,
                                                REAL alpha, const REAL *b,
                                                REAL *z, int64_t ldz,
                                                double rate, uint64_t key,
                                                int64_t row0)
{
    const uint32_t thr = fnn_drop_threshold(rate);
    const REAL s = (REAL)(1.0 / (1.0 - rate));
    for (int64_t i = 0; i < m; i++) {
        REAL *zi = z + i * ldz;
        const uint64_t r = fnn_drop_row(key, row0 + i);
        switch (act) {
        case FNN_SIGMOID:
            FNN_FWD_DROP_ROW(SUF(fnn_sigmoid)(v));
            break;
        case FNN_TANH:
            FNN_FWD_DROP_ROW(SUF(fnn_tanh)(v));
            break;
        case FNN_RELU:
            FNN_FWD_DROP_ROW(v < 0 ? (REAL)0 : v);
            break;
        case FNN_LRELU:
            FNN_FWD_DROP_ROW(v < 0 ? alpha * v : v);
            break;
        case FNN_ELU:
            FNN_FWD_DROP_ROW(v < 0 ? alpha * SUF(fnn_expm1)(v) : v);
            break;
        default: /* FNN_IDENTITY */
            FNN_FWD_DROP_ROW(v);
            break;
        }
    }
}
#undef FNN_FWD_DROP_ROW

/* One row of backward with dropout: the mask drawn again, yv = yi[j] *
 * (1 - rate) the activation's output before the mask (0 where dropped),
 * dzi[j] := dyi[j] * mask * D. */
#define FNN_BWD_DROP_ROW(D)                                             \
    do {                                                                \
        FNN_SIMD for (int64_t j = 0; j < n; j++) {                      \
            REAL yv = yi[j] * q;                                        \
            REAL keep = fnn_drop_bits(r, (uint32_t)j) >= thr ? s : 0;   \
            dzi[j] = dyi[j] * keep * (D);                               \
        }                                                               \
    } while (0)

FNN_VEC void KSUF(fnn_bias_act_dropout_backward)(int64_t m, int64_t n, int act,
                                                 REAL alpha, const REAL *y,
                                                 int64_t ldy, const REAL *dy,
                                                 int64_t lddy, REAL *dz,
                                                 int64_t lddz, REAL *db,
                                                 double rate, uint64_t key,
                                                 int64_t row0)
{
    const uint32_t thr = fnn_drop_threshold(rate);
    const REAL s = (REAL)(1.0 / (1.0 - rate));
    const REAL q = (REAL)(1.0 - rate);
    if (db) {
        for (int64_t j = 0; j < n; j++) {
            db[j] = 0;
        }
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *yi = y + i * ldy;
        const REAL *dyi = dy + i * lddy;
        REAL *dzi = dz + i * lddz;
        const uint64_t r = fnn_drop_row(key, row0 + i);
        switch (act) {
        case FNN_SIGMOID:
            FNN_BWD_DROP_ROW(yv * (1 - yv));
            break;
        case FNN_TANH:
            FNN_BWD_DROP_ROW(1 - yv * yv);
            break;
        case FNN_RELU:
            FNN_BWD_DROP_ROW(yv > 0 ? (REAL)1 : (REAL)0);
            break;
        case FNN_LRELU:
            FNN_BWD_DROP_ROW(yv > 0 ? (REAL)1 : alpha);
            break;
        case FNN_ELU:
            FNN_BWD_DROP_ROW(yv > 0 ? (REAL)1 : yv + alpha);
            break;
        default: /* FNN_IDENTITY */
            FNN_SIMD for (int64_t j = 0; j < n; j++) {
                REAL keep = fnn_drop_bits(r, (uint32_t)j) >= thr ? s : 0;
                dzi[j] = dyi[j] * keep;
            }
            break;
        }
        if (db) {
            FNN_SIMD for (int64_t j = 0; j < n; j++) {
                db[j] += dzi[j];
            }
        }
    }
}
#undef FNN_BWD_DROP_ROW

FNN_FN void KSUF(fnn_maxout_forward)(int64_t m, int64_t n, int64_t k, const REAL *b,
                             const REAL *z, int64_t ldz, REAL *y, int64_t ldy,
                             int32_t *argmax)
{
    for (int64_t i = 0; i < m; i++) {
        const REAL *zi = z + i * ldz;
        REAL *yi = y + i * ldy;
        int32_t *ai = argmax + i * n;
        for (int64_t j = 0; j < n; j++) {
            const REAL *zj = zi + j * k;
            const REAL *bj = b ? b + j * k : NULL;
            REAL best = zj[0] + (bj ? bj[0] : 0);
            int32_t arg = 0;
            for (int64_t p = 1; p < k; p++) {
                REAL v = zj[p] + (bj ? bj[p] : 0);
                /* v > best, or v is the first NaN: numpy.argmax's choice */
                if (!(v <= best) && best == best) {
                    best = v;
                    arg = (int32_t)p;
                }
            }
            yi[j] = best;
            ai[j] = arg;
        }
    }
}

FNN_FN void KSUF(fnn_maxout_backward)(int64_t m, int64_t n, int64_t k,
                              const int32_t *argmax, const REAL *dy,
                              int64_t lddy, REAL *dz, int64_t lddz, REAL *db)
{
    if (db) {
        for (int64_t c = 0; c < n * k; c++) {
            db[c] = 0;
        }
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *dyi = dy + i * lddy;
        const int32_t *ai = argmax + i * n;
        REAL *dzi = dz + i * lddz;
        for (int64_t j = 0; j < n; j++) {
            for (int64_t p = 0; p < k; p++) {
                dzi[j * k + p] = p == ai[j] ? dyi[j] : (REAL)0;
            }
        }
        if (db) {
            FNN_SIMD for (int64_t c = 0; c < n * k; c++) {
                db[c] += dzi[c];
            }
        }
    }
}

FNN_VEC void KSUF(fnn_softmax_forward)(int64_t m, int64_t n, const REAL *b, REAL *z,
                              int64_t ldz)
{
    for (int64_t i = 0; i < m; i++) {
        REAL *zi = z + i * ldz;
        if (b) {
            FNN_SIMD for (int64_t j = 0; j < n; j++) {
                zi[j] += b[j];
            }
        }
        REAL mx = zi[0];
        for (int64_t j = 1; j < n; j++) {
            mx = zi[j] > mx ? zi[j] : mx;
        }
        REAL s = 0;
        FNN_SIMD_SUM(s) for (int64_t j = 0; j < n; j++) {
            REAL e = SUF(fnn_exp)(zi[j] - mx);
            zi[j] = e;
            s += e;
        }
        REAL inv = 1 / s;
        FNN_SIMD for (int64_t j = 0; j < n; j++) {
            zi[j] *= inv;
        }
    }
}
