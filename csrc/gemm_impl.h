/* gemm_impl.h -- body of gemm.c, included once per dtype (REAL, SUF, KSUF,
 * BLAS_MEMBER naming the gemm pointer of fnn_blas to call). */

/* A 64-byte vector of REAL (GNU C vector extension). */
typedef REAL KSUF(fnn_vec) __attribute__((vector_size(64)));

#ifndef FNN_TINY_MNK
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
/* m*n*k at or below which plain dot products beat vector loops. */
#define FNN_TINY_MNK 512
#endif

/* The tiniest products (a few hundred multiply-adds, e.g. a 2 -> 4 -> 1
 * network), where loop set-up costs more than the arithmetic.  For n <= 8
 * a row of C is accumulated in N registers (N a compile-time constant, so
 * the j loops unroll); otherwise plain dot products.  Either way each
 * element is sum_p in order of p, then alpha * s (+ beta * c). */
#define FNN_TINY_ROWS(N)                                                    \
    for (int64_t i = 0; i < m; i++) {                                       \
        const REAL *ai = a + i * sai;                                       \
        REAL *ci = c + i * ldc;                                             \
        REAL acc[N];                                                        \
        for (int j = 0; j < N; j++) {                                       \
            acc[j] = 0;                                                     \
        }                                                                   \
        if (sbj == 1) {         /* contiguous rows of op(B): one vector */  \
            for (int64_t p = 0; p < k; p++) {                               \
                const REAL aip = ai[p * sap];                               \
                const REAL *bp = b + p * sbp;                               \
                for (int j = 0; j < N; j++) {                               \
                    acc[j] += aip * bp[j];                                  \
                }                                                           \
            }                                                               \
        } else {                                                            \
            for (int64_t p = 0; p < k; p++) {                               \
                const REAL aip = ai[p * sap];                               \
                const REAL *bp = b + p * sbp;                               \
                for (int j = 0; j < N; j++) {                               \
                    acc[j] += aip * bp[j * sbj];                            \
                }                                                           \
            }                                                               \
        }                                                                   \
        if (beta == 0) {                                                    \
            for (int j = 0; j < N; j++) {                                   \
                ci[j] = alpha * acc[j];                                     \
            }                                                               \
        } else {                                                            \
            for (int j = 0; j < N; j++) {                                   \
                ci[j] = alpha * acc[j] + beta * ci[j];                      \
            }                                                               \
        }                                                                   \
    }                                                                       \
    return

FNN_FN_STATIC void KSUF(tiny_gemm)(int ta, int tb, int64_t m, int64_t n, int64_t k,
                           REAL alpha, const REAL *a, int64_t lda,
                           const REAL *b, int64_t ldb, REAL beta, REAL *c,
                           int64_t ldc)
{
    /* op(A)[i,p] = a[i*sai + p*sap], op(B)[p,j] = b[p*sbp + j*sbj] */
    const int64_t sai = ta ? 1 : lda, sap = ta ? lda : 1;
    const int64_t sbp = tb ? 1 : ldb, sbj = tb ? ldb : 1;
    switch (n) {
    case 1: FNN_TINY_ROWS(1);
    case 2: FNN_TINY_ROWS(2);
    case 3: FNN_TINY_ROWS(3);
    case 4: FNN_TINY_ROWS(4);
    case 5: FNN_TINY_ROWS(5);
    case 6: FNN_TINY_ROWS(6);
    case 7: FNN_TINY_ROWS(7);
    case 8: FNN_TINY_ROWS(8);
    default:
        break;
    }
    for (int64_t i = 0; i < m; i++) {
        const REAL *ai = a + i * sai;
        REAL *ci = c + i * ldc;
        for (int64_t j = 0; j < n; j++) {
            const REAL *bj = b + j * sbj;
            REAL s = 0;
            for (int64_t p = 0; p < k; p++) {
                s += ai[p * sap] * bj[p * sbp];
            }
            ci[j] = beta == 0 ? alpha * s : alpha * s + beta * ci[j];
        }
    }
}
#undef FNN_TINY_ROWS

/* Built-in product for small shapes, where a BLAS call costs more than the
 * arithmetic.  C is scaled by beta first (zeroed, unread, if beta == 0),
 * then accumulated in whichever order vectorizes for the operands' layout:
 *   R: rows of C += a(i,p) * rows of op(B)    (op(B) rows contiguous, n >= 8)
 *   D: C(i,j) += dot(row of op(A), column of op(B))  (both contiguous in p)
 *   K: column of C += b(p,j) * columns of op(A)  (op(A) columns and the
 *      column of C contiguous: n == 1, as in a network's single output)
 * else R or plain dot products.  Sums keep p in order within each form. */
FNN_VEC_STATIC void KSUF(small_gemm)(int ta, int tb, int64_t m, int64_t n,
                                     int64_t k, REAL alpha,
                                     const REAL *restrict a, int64_t lda,
                                     const REAL *restrict b, int64_t ldb,
                                     REAL beta, REAL *restrict c, int64_t ldc)
{
    /* op(A)[i,p] = a[i*sai + p*sap], op(B)[p,j] = b[p*sbp + j*sbj] */
    const int64_t sai = ta ? 1 : lda, sap = ta ? lda : 1;
    const int64_t sbp = tb ? 1 : ldb, sbj = tb ? ldb : 1;
    const int dot = sap == 1 && sbp == 1;
    const int col = sai == 1 && n == 1;
    if (beta != 1) {
        for (int64_t i = 0; i < m; i++) {
            REAL *restrict ci = c + i * ldc;
            if (beta == 0) {
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    ci[j] = 0;
                }
            } else {
                FNN_SIMD for (int64_t j = 0; j < n; j++) {
                    ci[j] *= beta;
                }
            }
        }
    }
    if (sbj == 1 && (n >= 8 || (!dot && !col))) {
        /* 4 x NB blocks of C held in four vector registers over the whole
         * p loop (NB = one 64-byte vector; GCC lowers the vector type to
         * whatever the CPU clone has); the ragged edges row by row below. */
        enum { MB = 4, NB = 64 / sizeof(REAL) };
        const int64_t m4 = m - m % MB, n4 = n - n % NB;
        for (int64_t i = 0; i < m4; i += MB) {
            const REAL *a0 = a + i * sai, *a1 = a0 + sai, *a2 = a1 + sai,
                       *a3 = a2 + sai;
            for (int64_t j0 = 0; j0 < n4; j0 += NB) {
                KSUF(fnn_vec) c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, bv, t;
                for (int64_t p = 0; p < k; p++) {
                    memcpy(&bv, b + p * sbp + j0, sizeof bv);
                    const int64_t q = p * sap;
                    c0 += a0[q] * bv;
                    c1 += a1[q] * bv;
                    c2 += a2[q] * bv;
                    c3 += a3[q] * bv;
                }
                REAL *cr = c + i * ldc + j0;
                memcpy(&t, cr, sizeof t);
                t += alpha * c0;
                memcpy(cr, &t, sizeof t);
                memcpy(&t, cr + ldc, sizeof t);
                t += alpha * c1;
                memcpy(cr + ldc, &t, sizeof t);
                memcpy(&t, cr + 2 * ldc, sizeof t);
                t += alpha * c2;
                memcpy(cr + 2 * ldc, &t, sizeof t);
                memcpy(&t, cr + 3 * ldc, sizeof t);
                t += alpha * c3;
                memcpy(cr + 3 * ldc, &t, sizeof t);
            }
        }
        for (int64_t i = 0; i < m; i++) {
            REAL *restrict ci = c + i * ldc;
            const int64_t jstart = i < m4 ? n4 : 0;
            if (jstart == n) {
                continue;
            }
            for (int64_t p = 0; p < k; p++) {
                const REAL aip = alpha * a[i * sai + p * sap];
                const REAL *restrict bp = b + p * sbp;
                FNN_SIMD for (int64_t j = jstart; j < n; j++) {
                    ci[j] += aip * bp[j];
                }
            }
        }
    } else if (dot) {
        for (int64_t i = 0; i < m; i++) {
            const REAL *restrict ai = a + i * sai;
            REAL *restrict ci = c + i * ldc;
            for (int64_t j = 0; j < n; j++) {
                const REAL *restrict bj = b + j * sbj;
                REAL s = 0;
                FNN_SIMD_SUM(s) for (int64_t p = 0; p < k; p++) {
                    s += ai[p] * bj[p];
                }
                ci[j] += alpha * s;
            }
        }
    } else if (col) {
        for (int64_t p = 0; p < k; p++) {
            const REAL bp = alpha * b[p * sbp];
            const REAL *restrict ap = a + p * sap;
            FNN_SIMD for (int64_t i = 0; i < m; i++) {
                c[i * ldc] += ap[i] * bp;
            }
        }
    } else {
        for (int64_t i = 0; i < m; i++) {
            REAL *restrict ci = c + i * ldc;
            for (int64_t j = 0; j < n; j++) {
                REAL s = 0;
                for (int64_t p = 0; p < k; p++) {
                    s += a[i * sai + p * sap] * b[p * sbp + j * sbj];
                }
                ci[j] += alpha * s;
            }
        }
    }
}

/* One call of the BLAS in blas->api's convention (sizes > 0). */
FNN_FN_STATIC void KSUF(blas_gemm)(const fnn_blas *blas, int api, int ta,
                                   int tb, int64_t m, int64_t n, int64_t k,
                                   REAL alpha, const REAL *a, int64_t lda,
                                   const REAL *b, int64_t ldb, REAL beta,
                                   REAL *c, int64_t ldc)
{
    if (api == FNN_BLAS_CBLAS64) {
        typedef void (*fn_t)(int, int, int, int64_t, int64_t, int64_t, REAL,
                             const REAL *, int64_t, const REAL *, int64_t,
                             REAL, REAL *, int64_t);
        ((fn_t)blas->BLAS_MEMBER)(CBLAS_ROW_MAJOR,
                                  ta ? CBLAS_TRANS : CBLAS_NO_TRANS,
                                  tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
                                  m, n, k, alpha, a, lda, b, ldb, beta, c,
                                  ldc);
    } else if (api == FNN_BLAS_CBLAS32) {
        typedef void (*fn_t)(int, int, int, int32_t, int32_t, int32_t, REAL,
                             const REAL *, int32_t, const REAL *, int32_t,
                             REAL, REAL *, int32_t);
        ((fn_t)blas->BLAS_MEMBER)(CBLAS_ROW_MAJOR,
                                  ta ? CBLAS_TRANS : CBLAS_NO_TRANS,
                                  tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
                                  (int32_t)m, (int32_t)n, (int32_t)k, alpha,
                                  a, (int32_t)lda, b, (int32_t)ldb, beta, c,
                                  (int32_t)ldc);
    } else {
        /* Fortran is column-major: C^T = op(B)^T op(A)^T, i.e. swap the
         * operands and read each row-major array as its transpose. */
        typedef void (*fn_t)(const char *, const char *, const int32_t *,
                             const int32_t *, const int32_t *, const REAL *,
                             const REAL *, const int32_t *, const REAL *,
                             const int32_t *, const REAL *, REAL *,
                             const int32_t *);
        char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
        int32_t M = (int32_t)n, N = (int32_t)m, K = (int32_t)k;
        int32_t LDA = (int32_t)ldb, LDB = (int32_t)lda, LDC = (int32_t)ldc;
        ((fn_t)blas->BLAS_MEMBER)(&tra, &trb, &M, &N, &K, &alpha, b, &LDA,
                                  a, &LDB, &beta, c, &LDC);
    }
}

/* Pieces of a size-d dimension so that each, times the product o of the
 * other two sizes, is at most chunk multiply-adds: as few as that allows,
 * of even size (1 if even one row of the dimension is over chunk). */
static inline int64_t KSUF(chunk_size)(int64_t d, double o, int64_t chunk)
{
    double fit = (double)chunk / o;
    int64_t size = fit < 1 ? 1 : fit >= (double)d ? d : (int64_t)fit;
    int64_t pieces = (d + size - 1) / size;
    return (d + pieces - 1) / pieces;
}

/* The product in pieces of at most blas->chunk_mnk multiply-adds, cut
 * along its largest dimension: along k the pieces accumulate into C (beta
 * on the first only), along m or n each writes its own block of C.  Each
 * piece is small enough that the BLAS runs it on the calling thread. */
FNN_FN_STATIC void KSUF(chunked_gemm)(const fnn_blas *blas, int api, int ta,
                                      int tb, int64_t m, int64_t n, int64_t k,
                                      REAL alpha, const REAL *a, int64_t lda,
                                      const REAL *b, int64_t ldb, REAL beta,
                                      REAL *c, int64_t ldc)
{
    const int64_t chunk = blas->chunk_mnk;
    if (k >= m && k >= n) {
        const int64_t kc = KSUF(chunk_size)(k, (double)m * (double)n, chunk);
        for (int64_t p = 0; p < k; p += kc) {
            const int64_t kp = kc < k - p ? kc : k - p;
            /* op(A)[:, p:], op(B)[p:, :] */
            KSUF(blas_gemm)(blas, api, ta, tb, m, n, kp, alpha,
                            a + (ta ? p * lda : p), lda,
                            b + (tb ? p : p * ldb), ldb, p == 0 ? beta : 1,
                            c, ldc);
        }
    } else if (m >= n) {
        const int64_t mc = KSUF(chunk_size)(m, (double)n * (double)k, chunk);
        for (int64_t i = 0; i < m; i += mc) {
            const int64_t mp = mc < m - i ? mc : m - i;
            KSUF(blas_gemm)(blas, api, ta, tb, mp, n, k, alpha,
                            a + (ta ? i : i * lda), lda, b, ldb, beta,
                            c + i * ldc, ldc);
        }
    } else {
        const int64_t nc = KSUF(chunk_size)(n, (double)m * (double)k, chunk);
        for (int64_t j = 0; j < n; j += nc) {
            const int64_t np = nc < n - j ? nc : n - j;
            KSUF(blas_gemm)(blas, api, ta, tb, m, np, k, alpha, a, lda,
                            b + (tb ? j * ldb : j), ldb, beta, c + j, ldc);
        }
    }
}

FNN_FN void KSUF(fnn_gemm)(const fnn_blas *blas, int ta, int tb, int64_t m,
                   int64_t n, int64_t k, REAL alpha, const REAL *a,
                   int64_t lda, const REAL *b, int64_t ldb, REAL beta,
                   REAL *c, int64_t ldc)
{
    if (m <= 0 || n <= 0) {
        return;
    }
    if (k <= 0 || alpha == 0) {
        /* C := beta C, without reading C when beta == 0 */
        for (int64_t i = 0; i < m; i++) {
            REAL *ci = c + i * ldc;
            for (int64_t j = 0; j < n; j++) {
                ci[j] = beta == 0 ? (REAL)0 : beta * ci[j];
            }
        }
        return;
    }
    int api = blas ? blas->api : FNN_BLAS_NONE;
    /* m*n*k without overflow: in double unless every size is small */
    const double mnk = (m | n | k) < (1 << 20) ? (double)(m * n * k)
                                               : (double)m * (double)n * (double)k;
    if (mnk <= FNN_TINY_MNK) {
        KSUF(tiny_gemm)(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (api == FNN_BLAS_NONE || !blas->BLAS_MEMBER
        || mnk <= (double)blas->small_mnk) {
        KSUF(small_gemm)(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (blas->chunk_mnk > 0 && mnk > (double)blas->chunk_mnk) {
        KSUF(chunked_gemm)(blas, api, ta, tb, m, n, k, alpha, a, lda, b, ldb,
                           beta, c, ldc);
        return;
    }
    KSUF(blas_gemm)(blas, api, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta,
                    c, ldc);
}
