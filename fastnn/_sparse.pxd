# _sparse.pxd -- the sparse first layer section of csrc/fastnn.h for Cython,
# line for line, in the same order.  Every declaration is nogil.
from libc.stdint cimport int32_t, int64_t

from fastnn._kernels cimport fnn_drop, fnn_net, fnn_optim

cdef extern from "fastnn.h" nogil:
    ctypedef struct fnn_csr:
        int64_t n_rows, n_cols
        int32_t idx64
        const void *indptr
        const void *indices
        const void *data

    enum:
        FNN_CSR_OK
        FNN_CSR_INDPTR_START
        FNN_CSR_INDPTR_ORDER
        FNN_CSR_INDPTR_END
        FNN_CSR_INDEX_RANGE
        FNN_CSR_NONFINITE

    int fnn_csr_check_f32(const fnn_csr *x, int64_t nnz, int64_t *where)
    int fnn_csr_check_f64(const fnn_csr *x, int64_t nnz, int64_t *where)

    int64_t fnn_csr_batch_nnz(const fnn_csr *x, int64_t m, int64_t row0,
                              const int64_t *rows)

    void fnn_csr_matmul_f32(const fnn_csr *x, int64_t m, int64_t row0,
                            const int64_t *rows, int64_t n, const float *w,
                            int64_t ldw, float *z, int64_t ldz)
    void fnn_csr_matmul_f64(const fnn_csr *x, int64_t m, int64_t row0,
                            const int64_t *rows, int64_t n, const double *w,
                            int64_t ldw, double *z, int64_t ldz)

    ctypedef struct fnn_csr_batch:
        int64_t m, n_cols, nnz, cap
        int64_t *colptr
        int32_t *pos
        void *val

    int64_t fnn_csr_batch_f32(const fnn_csr *x, int64_t m, int64_t row0,
                              const int64_t *rows, fnn_csr_batch *b)
    int64_t fnn_csr_batch_f64(const fnn_csr *x, int64_t m, int64_t row0,
                              const int64_t *rows, fnn_csr_batch *b)

    void fnn_csr_grad_f32(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                          int64_t n, const float *dz, int64_t lddz, float *g,
                          int64_t ldg)
    void fnn_csr_grad_f64(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                          int64_t n, const double *dz, int64_t lddz, double *g,
                          int64_t ldg)

    void fnn_csr_update_f32(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                            int64_t n, const float *dz, int64_t lddz,
                            const fnn_optim *opt, float lr, float wd, float *w,
                            float *vel, float *sq, double *sumsq)
    void fnn_csr_update_f64(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                            int64_t n, const double *dz, int64_t lddz,
                            const fnn_optim *opt, double lr, double wd, double *w,
                            double *vel, double *sq, double *sumsq)

    ctypedef struct fnn_csr_rows:
        const fnn_csr *x
        int64_t row0
        const int64_t *rows

    float *fnn_net_forward_csr_f32(const fnn_net *net, int64_t m,
                                   const fnn_csr_rows *xs, const float *params,
                                   int predict, float *ws, int32_t *iws)
    double *fnn_net_forward_csr_f64(const fnn_net *net, int64_t m,
                                    const fnn_csr_rows *xs, const double *params,
                                    int predict, double *ws, int32_t *iws)
    double fnn_net_loss_dz0_csr_f32(const fnn_net *net, int64_t m,
                                    const fnn_csr_rows *xs, const float *y,
                                    int64_t ldy, const float *sw, double scale,
                                    float *params, float *grads, float *ws,
                                    int32_t *iws, float **dz0,
                                    const fnn_drop *drop)
    double fnn_net_loss_dz0_csr_f64(const fnn_net *net, int64_t m,
                                    const fnn_csr_rows *xs, const double *y,
                                    int64_t ldy, const double *sw, double scale,
                                    double *params, double *grads, double *ws,
                                    int32_t *iws, double **dz0,
                                    const fnn_drop *drop)
