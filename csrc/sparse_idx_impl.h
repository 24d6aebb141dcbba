/* sparse_idx_impl.h -- the loops of sparse.c that read indptr and indices,
 * included once per dtype (REAL, SUF) and index type (IDX, ISUF). */

/* Entries are checked in blocks: a branch-free pass flags a bad block,
 * and only then is it searched for the first bad entry. */
#define FNN_CSR_BLOCK 4096

static int ISUF(csr_check)(const fnn_csr *x, int64_t nnz, int64_t *where)
{
    const IDX *ip = (const IDX *)x->indptr;
    const IDX *ix = (const IDX *)x->indices;
    const REAL *d = (const REAL *)x->data;
    const int64_t n = x->n_rows, ncols = x->n_cols;
    if (ip[0] != 0) {
        *where = 0;
        return FNN_CSR_INDPTR_START;
    }
    for (int64_t i = 0; i < n; i++) {
        if (ip[i + 1] < ip[i]) {
            *where = i;
            return FNN_CSR_INDPTR_ORDER;
        }
    }
    const int64_t end = (int64_t)ip[n];
    if (end > nnz) {
        *where = n;
        return FNN_CSR_INDPTR_END;
    }
    for (int64_t k0 = 0; k0 < end; k0 += FNN_CSR_BLOCK) {
        const int64_t k1 = k0 + FNN_CSR_BLOCK < end ? k0 + FNN_CSR_BLOCK : end;
        int bad = 0;
        FNN_SIMD for (int64_t k = k0; k < k1; k++) {
            bad |= ix[k] < 0 || (int64_t)ix[k] >= ncols;
        }
        if (bad) {
            for (int64_t k = k0; k < k1; k++) {
                if (ix[k] < 0 || (int64_t)ix[k] >= ncols) {
                    *where = k;
                    return FNN_CSR_INDEX_RANGE;
                }
            }
        }
    }
    for (int64_t k0 = 0; k0 < end; k0 += FNN_CSR_BLOCK) {
        const int64_t k1 = k0 + FNN_CSR_BLOCK < end ? k0 + FNN_CSR_BLOCK : end;
        /* v - v is 0 for finite v, NaN for NaN and inf: NaN poisons acc */
        REAL acc = 0;
        FNN_SIMD_SUM(acc) for (int64_t k = k0; k < k1; k++) {
            acc += d[k] - d[k];
        }
        if (acc != 0) {
            for (int64_t k = k0; k < k1; k++) {
                if (!(d[k] - d[k] == 0)) {
                    *where = k;
                    return FNN_CSR_NONFINITE;
                }
            }
        }
    }
    return FNN_CSR_OK;
}

/* z[r, :] := sum_k data[k] w[indices[k], :] over batch row r's entries:
 * the first entry's product assigned, the others added, row by row of W
 * (n contiguous elements each, vectorized). */
FNN_CLONES static void ISUF(csr_matmul)(const fnn_csr *x, int64_t m,
                                        int64_t row0, const int64_t *rows,
                                        int64_t n, const REAL *w, int64_t ldw,
                                        REAL *z, int64_t ldz)
{
    const IDX *ip = (const IDX *)x->indptr;
    const IDX *ix = (const IDX *)x->indices;
    const REAL *d = (const REAL *)x->data;
    for (int64_t r = 0; r < m; r++) {
        const int64_t i = fnn_batch_row(row0, rows, r);
        const int64_t k0 = (int64_t)ip[i], k1 = (int64_t)ip[i + 1];
        REAL *restrict zr = z + r * ldz;
        if (k0 == k1) {
            FNN_SIMD for (int64_t c = 0; c < n; c++) {
                zr[c] = 0;
            }
            continue;
        }
        {
            const REAL v = d[k0];
            const REAL *restrict wr = w + (int64_t)ix[k0] * ldw;
            FNN_SIMD for (int64_t c = 0; c < n; c++) {
                zr[c] = v * wr[c];
            }
        }
        for (int64_t k = k0 + 1; k < k1; k++) {
            const REAL v = d[k];
            const REAL *restrict wr = w + (int64_t)ix[k] * ldw;
            FNN_SIMD for (int64_t c = 0; c < n; c++) {
                zr[c] += v * wr[c];
            }
        }
    }
}

/* The counting sort of fnn_csr_batch: counts per column (shifted by one)
 * into colptr, their running sums, the entries placed at colptr[j]++ (in
 * batch-row order, so pos ascends within a column), and colptr shifted
 * back by one place. */
static int64_t ISUF(csr_batch)(const fnn_csr *x, int64_t m, int64_t row0,
                               const int64_t *rows, fnn_csr_batch *b)
{
    const IDX *ip = (const IDX *)x->indptr;
    const IDX *ix = (const IDX *)x->indices;
    const REAL *d = (const REAL *)x->data;
    const int64_t ncols = x->n_cols;
    const int64_t tot = fnn_csr_batch_nnz(x, m, row0, rows);
    if (tot > b->cap) {
        return -1;
    }
    int64_t *colptr = b->colptr;
    int32_t *pos = b->pos;
    REAL *val = (REAL *)b->val;
    memset(colptr, 0, (size_t)(ncols + 1) * sizeof(int64_t));
    for (int64_t r = 0; r < m; r++) {
        const int64_t i = fnn_batch_row(row0, rows, r);
        for (int64_t k = (int64_t)ip[i]; k < (int64_t)ip[i + 1]; k++) {
            colptr[(int64_t)ix[k] + 1] += 1;
        }
    }
    for (int64_t j = 1; j <= ncols; j++) {
        colptr[j] += colptr[j - 1];
    }
    for (int64_t r = 0; r < m; r++) {
        const int64_t i = fnn_batch_row(row0, rows, r);
        for (int64_t k = (int64_t)ip[i]; k < (int64_t)ip[i + 1]; k++) {
            const int64_t at = colptr[(int64_t)ix[k]]++;
            pos[at] = (int32_t)r;
            val[at] = d[k];
        }
    }
    memmove(colptr + 1, colptr, (size_t)ncols * sizeof(int64_t));
    colptr[0] = 0;
    b->m = m;
    b->n_cols = ncols;
    b->nnz = tot;
    return tot;
}

#undef FNN_CSR_BLOCK
