/* sparse.c -- a first layer over a CSR input: the validity check, the
 * forward product X_b W over a minibatch's rows, the minibatch regrouped
 * by column, and from it the weight gradient X_b^T dZ or the optimizer
 * step fused with it, for float and double and for int32 and int64
 * indices.  The index-width-dependent loops are in sparse_idx_impl.h
 * (included per dtype and index type), the rest in sparse_impl.h (per
 * dtype); each public entry point picks the index width at run time.  No
 * allocation, no state. */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "fastnn.h"
#include "vmath.h"

#define FNN_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Rows of a minibatch: batch row r is rows[r], or row0 + r. */
FNN_ALWAYS_INLINE int64_t fnn_batch_row(int64_t row0, const int64_t *rows,
                                        int64_t r)
{
    return rows ? rows[r] : row0 + r;
}

/* ---- index-width dependent: check, matmul, regrouping ------------------ */

#define REAL double
#define SUF(name) name##_f64
#define IDX int32_t
#define ISUF(name) name##_i32_f64
#include "sparse_idx_impl.h"
#undef IDX
#undef ISUF
#define IDX int64_t
#define ISUF(name) name##_i64_f64
#include "sparse_idx_impl.h"
#undef IDX
#undef ISUF
#undef REAL
#undef SUF

#define REAL float
#define SUF(name) name##_f32
#define IDX int32_t
#define ISUF(name) name##_i32_f32
#include "sparse_idx_impl.h"
#undef IDX
#undef ISUF
#define IDX int64_t
#define ISUF(name) name##_i64_f32
#include "sparse_idx_impl.h"
#undef IDX
#undef ISUF
#undef REAL
#undef SUF

int64_t fnn_csr_batch_nnz(const fnn_csr *x, int64_t m, int64_t row0,
                          const int64_t *rows)
{
    int64_t tot = 0;
    if (x->idx64) {
        const int64_t *ip = (const int64_t *)x->indptr;
        for (int64_t r = 0; r < m; r++) {
            const int64_t i = fnn_batch_row(row0, rows, r);
            tot += ip[i + 1] - ip[i];
        }
    } else {
        const int32_t *ip = (const int32_t *)x->indptr;
        for (int64_t r = 0; r < m; r++) {
            const int64_t i = fnn_batch_row(row0, rows, r);
            tot += (int64_t)ip[i + 1] - (int64_t)ip[i];
        }
    }
    return tot;
}

/* ---- per dtype: the public entry points, gradient and update ----------- */

#define REAL double
#define SUF(name) name##_f64
#define SQRT sqrt
#include "sparse_impl.h"
#undef REAL
#undef SUF
#undef SQRT

#define REAL float
#define SUF(name) name##_f32
#define SQRT sqrtf
#include "sparse_impl.h"
#undef REAL
#undef SUF
#undef SQRT
