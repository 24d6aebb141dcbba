# _kernels.pxd -- csrc/fastnn.h for Cython, line for line, in the same order.
# Every declaration is nogil: the C kernels never touch Python.
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef extern from "fastnn.h" nogil:
    enum:
        FNN_LANES_BYTES
    enum:
        FNN_IDENTITY
        FNN_SIGMOID
        FNN_TANH
        FNN_RELU
        FNN_LRELU
        FNN_ELU
        FNN_MAXOUT
        FNN_SOFTMAX
    enum:
        FNN_SSE
        FNN_MSE
        FNN_BCE
        FNN_SOFTMAX_CE
        FNN_MAE
        FNN_HUBER
        FNN_QUANTILE
    enum:
        FNN_NOTRANS
        FNN_TRANS
    enum:
        FNN_OK
        FNN_ERR_NONFINITE
        FNN_STOPPED
    enum:
        FNN_BLAS_NONE
        FNN_BLAS_CBLAS64
        FNN_BLAS_CBLAS32
        FNN_BLAS_F77

    ctypedef struct fnn_blas:
        int32_t api
        void *sgemm
        void *dgemm
        int64_t small_mnk
        int64_t chunk_mnk

    void fnn_gemm_f32(const fnn_blas *blas, int ta, int tb, int64_t m, int64_t n,
                      int64_t k, float alpha, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float beta, float *c,
                      int64_t ldc)
    void fnn_gemm_f64(const fnn_blas *blas, int ta, int tb, int64_t m, int64_t n,
                      int64_t k, double alpha, const double *a, int64_t lda,
                      const double *b, int64_t ldb, double beta, double *c,
                      int64_t ldc)

    void fnn_bias_act_forward_f32(int64_t m, int64_t n, int act, float alpha,
                                  const float *b, float *z, int64_t ldz)
    void fnn_bias_act_forward_f64(int64_t m, int64_t n, int act, double alpha,
                                  const double *b, double *z, int64_t ldz)
    void fnn_bias_act_backward_f32(int64_t m, int64_t n, int act, float alpha,
                                   const float *y, int64_t ldy, const float *dy,
                                   int64_t lddy, float *dz, int64_t lddz,
                                   float *db)
    void fnn_bias_act_backward_f64(int64_t m, int64_t n, int act, double alpha,
                                   const double *y, int64_t ldy, const double *dy,
                                   int64_t lddy, double *dz, int64_t lddz,
                                   double *db)
    void fnn_bias_act_dropout_forward_f32(int64_t m, int64_t n, int act,
                                          float alpha, const float *b, float *z,
                                          int64_t ldz, double rate, uint64_t key,
                                          int64_t row0)
    void fnn_bias_act_dropout_forward_f64(int64_t m, int64_t n, int act,
                                          double alpha, const double *b,
                                          double *z, int64_t ldz, double rate,
                                          uint64_t key, int64_t row0)
    void fnn_bias_act_dropout_backward_f32(int64_t m, int64_t n, int act,
                                           float alpha, const float *y,
                                           int64_t ldy, const float *dy,
                                           int64_t lddy, float *dz, int64_t lddz,
                                           float *db, double rate, uint64_t key,
                                           int64_t row0)
    void fnn_bias_act_dropout_backward_f64(int64_t m, int64_t n, int act,
                                           double alpha, const double *y,
                                           int64_t ldy, const double *dy,
                                           int64_t lddy, double *dz,
                                           int64_t lddz, double *db, double rate,
                                           uint64_t key, int64_t row0)

    void fnn_maxout_forward_f32(int64_t m, int64_t n, int64_t k, const float *b,
                                const float *z, int64_t ldz, float *y, int64_t ldy,
                                int32_t *argmax)
    void fnn_maxout_forward_f64(int64_t m, int64_t n, int64_t k, const double *b,
                                const double *z, int64_t ldz, double *y,
                                int64_t ldy, int32_t *argmax)
    void fnn_maxout_backward_f32(int64_t m, int64_t n, int64_t k,
                                 const int32_t *argmax, const float *dy,
                                 int64_t lddy, float *dz, int64_t lddz, float *db)
    void fnn_maxout_backward_f64(int64_t m, int64_t n, int64_t k,
                                 const int32_t *argmax, const double *dy,
                                 int64_t lddy, double *dz, int64_t lddz,
                                 double *db)
    void fnn_softmax_forward_f32(int64_t m, int64_t n, const float *b, float *z,
                                 int64_t ldz)
    void fnn_softmax_forward_f64(int64_t m, int64_t n, const double *b, double *z,
                                 int64_t ldz)

    double fnn_loss_grad_f32(int64_t m, int64_t n, int loss, double param,
                             double scale, const float *z, int64_t ldz,
                             const float *y, int64_t ldy, const float *sw,
                             float *dz, int64_t lddz, float *db)
    double fnn_loss_grad_f64(int64_t m, int64_t n, int loss, double param,
                             double scale, const double *z, int64_t ldz,
                             const double *y, int64_t ldy, const double *sw,
                             double *dz, int64_t lddz, double *db)

    void fnn_sgd_step_f32(int64_t n, float lr, float wd, const float *g,
                          float *w)
    void fnn_sgd_step_f64(int64_t n, double lr, double wd, const double *g,
                          double *w)
    void fnn_momentum_step_f32(int64_t n, float lr, float mu, float wd,
                               int nesterov, const float *g, float *w, float *v)
    void fnn_momentum_step_f64(int64_t n, double lr, double mu, double wd,
                               int nesterov, const double *g, double *w,
                               double *v)
    void fnn_adam_step_f32(int64_t n, float lr, float b1, float b2, float eps,
                           int64_t t, float wd, const float *g, float *w,
                           float *m, float *v)
    void fnn_adam_step_f64(int64_t n, double lr, double b1, double b2, double eps,
                           int64_t t, double wd, const double *g, double *w,
                           double *m, double *v)

    double fnn_sum_squares_f32(int64_t n, const float *x)
    double fnn_sum_squares_f64(int64_t n, const double *x)

    int fnn_all_finite_f32(int64_t m, int64_t n, const float *x, int64_t ldx)
    int fnn_all_finite_f64(int64_t m, int64_t n, const double *x, int64_t ldx)

    ctypedef struct fnn_layer:
        int64_t n_in, n_out
        int32_t act
        int32_t pieces
        int32_t fwd_t
        double alpha
        double dropout
        int64_t w_off, b_off
        int64_t ws_col, iws_col

    ctypedef struct fnn_drop:
        uint64_t seed
        int64_t epoch
        int64_t row0

    ctypedef struct fnn_net:
        const fnn_blas *blas
        const fnn_layer *layers
        int32_t n_layers
        int32_t loss
        double loss_param
        int64_t n_params
        int64_t n_weights
        int64_t ws_cols
        int64_t iws_cols
        int64_t max_width
        int32_t lanes
        int32_t dropout
        void *lanes_ws

    int fnn_net_init(fnn_net *net, fnn_layer *layers)

    float *fnn_net_forward_f32(const fnn_net *net, int64_t m, const float *x,
                               int64_t ldx, const float *params, int predict,
                               float *ws, int32_t *iws)
    double *fnn_net_forward_f64(const fnn_net *net, int64_t m, const double *x,
                                int64_t ldx, const double *params, int predict,
                                double *ws, int32_t *iws)
    double fnn_net_loss_grad_f32(const fnn_net *net, int64_t m, const float *x,
                                 int64_t ldx, const float *y, int64_t ldy,
                                 const float *sw, double scale, float lr, float wd,
                                 float *params, float *grads, float *snapshot,
                                 float *ws, int32_t *iws, int check_x,
                                 const fnn_drop *drop)
    double fnn_net_loss_grad_f64(const fnn_net *net, int64_t m, const double *x,
                                 int64_t ldx, const double *y, int64_t ldy,
                                 const double *sw, double scale, double lr,
                                 double wd, double *params, double *grads,
                                 double *snapshot, double *ws, int32_t *iws,
                                 int check_x, const fnn_drop *drop)

    enum:
        FNN_OPT_SGD
        FNN_OPT_MOMENTUM
        FNN_OPT_NESTEROV
        FNN_OPT_ADAM

    ctypedef struct fnn_optim:
        int32_t kind
        int32_t l2_per_row
        double momentum, beta1, beta2, eps, l2
        int64_t t
        void *vel
        void *sq

    ctypedef int (*fnn_poll_fn)(void *ctx, int64_t epoch, int64_t step) noexcept nogil

    ctypedef struct fnn_split:
        int64_t min_rows, chunk_mnk
        void *ws2
        void *grads2
        int32_t *iws2
        double hold, backoff

    ctypedef struct fnn_fit_out:
        int64_t epochs_done, steps_done
        int64_t bad_epoch, bad_step
        int64_t snapshot_epoch
        int64_t epoch_steps
        double epoch_loss

    ctypedef struct fnn_fit_args:
        int64_t n, n_epochs, batch, epoch0
        uint64_t drop_seed
        int32_t dropout
        const void *x
        int64_t ldx
        const void *y
        int64_t ldy
        const void *sw
        const int64_t *order
        const double *lr
        int32_t lr_const
        double *epoch_loss
        int32_t loss_l2, mean_by_rows
        double loss_scale
        void *snapshot
        int64_t snapshot_every
        void *xb
        void *yb
        void *swb
        fnn_poll_fn poll
        void *poll_ctx
        double poll_ms
        fnn_split split
        fnn_fit_out out
        const void *xs          # const fnn_csr * (fastnn/_sparse.pxd)
        void *xsb               # fnn_csr_batch *

    int fnn_fit_f32(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                    float *params, float *grads, float *ws, int32_t *iws)
    int fnn_fit_f64(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                    double *params, double *grads, double *ws, int32_t *iws)
