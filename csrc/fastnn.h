/* fastnn.h -- the whole C API of fastnn's native core.
 *
 * C99 kernels over raw pointers: sizes first, then const inputs, outputs,
 * workspace.  Row-major 2-D operands, each followed by its row stride
 * (ld*, in elements); columns are unit-stride.  Kernels never allocate,
 * keep no global state, never touch Python, and exist for float (_f32)
 * and double (_f64).  An output is overwritten unless the name ends in
 * _acc; an overwritten output is never read first, so NaN garbage in it
 * cannot leak into results.  No kernel starts threads of its own; the
 * training loop (fnn_fit) may hand half of a minibatch to the one helper
 * thread of pool.c (see fnn_split).
 */
#ifndef FASTNN_H
#define FASTNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- enums ------------------------------------------------------------ */

typedef enum {
    FNN_IDENTITY = 0,
    FNN_SIGMOID = 1,
    FNN_TANH = 2,
    FNN_RELU = 3,
    FNN_LRELU = 4,      /* max(alpha*z, z) for 0 <= alpha <= 1 */
    FNN_ELU = 5,        /* z > 0 ? z : alpha*(e^z - 1) */
    FNN_MAXOUT = 6,     /* layer kind: fnn_maxout_* kernels, not an act */
    FNN_SOFTMAX = 7     /* output layers only: fnn_softmax_forward */
} fnn_act;

typedef enum {
    FNN_SSE = 0,        /* sum_j (z - y)^2             d = 2 (z - y)   */
    FNN_MSE = 1,        /* 1/2 sum_j (z - y)^2         d = z - y       */
    FNN_BCE = 2,        /* sum_j softplus(z) - y z     d = sigmoid(z) - y;
                           z are logits of a sigmoid output            */
    FNN_SOFTMAX_CE = 3, /* lse(z) sum_j y - sum_j y z  d = p sum_j y - y;
                           z are logits of a softmax output            */
    /* Robust regression losses, elementwise in r = z - y, with a parameter
     * p (fnn_loss_grad's param, fnn_net.loss_param).  At a kink the
     * derivative is the subgradient of least magnitude: 0 at r = 0. */
    FNN_MAE = 4,        /* sum_j |r|                   d = sign(r), 0 at 0 */
    FNN_HUBER = 5,      /* sum_j r^2 / 2 if |r| <= p, else p (|r| - p / 2);
                           d = r clamped to [-p, p]; p = delta > 0     */
    FNN_QUANTILE = 6    /* sum_j max(-p r, (1 - p) r) (pinball loss of
                           quantile p in (0, 1));  d = 1 - p if r > 0,
                           -p if r < 0, 0 at 0                         */
} fnn_loss;

typedef enum { FNN_NOTRANS = 0, FNN_TRANS = 1 } fnn_trans;

/* Status codes of the composite routines. */
enum {
    FNN_OK = 0,
    FNN_ERR_NONFINITE = 1,   /* a loss was NaN or inf: step not applied */
    FNN_STOPPED = 2          /* the poll callback asked to stop */
};

/* ---- BLAS binding ------------------------------------------------------ */

/* Which calling convention the gemm pointers follow. */
typedef enum {
    FNN_BLAS_NONE = 0,     /* no BLAS: built-in loops only (tests) */
    FNN_BLAS_CBLAS64 = 1,  /* cblas_?gemm with 64-bit integers (ILP64) */
    FNN_BLAS_CBLAS32 = 2,  /* cblas_?gemm with 32-bit integers (LP64) */
    FNN_BLAS_F77 = 3       /* Fortran ?gemm, 32-bit integers, by pointer
                              (scipy.linalg.cython_blas) */
} fnn_blas_api;

typedef struct {
    int32_t api;           /* fnn_blas_api */
    void *sgemm;           /* function pointers in that convention */
    void *dgemm;
    int64_t small_mnk;     /* m*n*k at or below this: built-in loops */
    int64_t chunk_mnk;     /* > 0: BLAS calls in pieces of at most this
                              m*n*k (see fnn_gemm); 0: whole */
} fnn_blas;

/* C := alpha op(A) op(B) + beta C, row-major.  op(A): (m, k), op(B): (k, n),
 * C: (m, n).  ta/tb: FNN_TRANS to use the transpose of the stored matrix.
 * beta == 0 overwrites C without reading it.  Products of at most 512
 * multiply-adds, those with m*n*k <= blas->small_mnk, and all of them when
 * there is no BLAS run built-in loops; others go to the BLAS, which may use
 * its own threads.  With blas->chunk_mnk > 0 a larger product goes to the
 * BLAS in pieces of at most chunk_mnk multiply-adds along its largest
 * dimension (along k the pieces accumulate: rounding differs from one
 * call), which OpenBLAS runs on the calling thread: the split fit step
 * keeps its two threads from contending for the BLAS's pool that way.
 * C must not overlap A or B. */
void fnn_gemm_f32(const fnn_blas *blas, int ta, int tb, int64_t m, int64_t n,
                  int64_t k, float alpha, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c,
                  int64_t ldc);
void fnn_gemm_f64(const fnn_blas *blas, int ta, int tb, int64_t m, int64_t n,
                  int64_t k, double alpha, const double *a, int64_t lda,
                  const double *b, int64_t ldb, double beta, double *c,
                  int64_t ldc);

/* ---- bias + activation (act.c) ---------------------------------------- */

/* z := act(z + b) row-wise, in place.  z: (m, n), row stride ldz; b: (n) or
 * NULL for no bias.  act: identity..elu (not maxout/softmax).  alpha: slope
 * (lrelu) or scale (elu); ignored otherwise.  NaN propagates; saturating z
 * gives exact limits without overflow. */
void fnn_bias_act_forward_f32(int64_t m, int64_t n, int act, float alpha,
                              const float *b, float *z, int64_t ldz);
void fnn_bias_act_forward_f64(int64_t m, int64_t n, int act, double alpha,
                              const double *b, double *z, int64_t ldz);

/* dz := dy * act'(.) computed from the forward output y, and db := column
 * sums of dz (db may be NULL).  y, dy, dz: (m, n) with strides ldy, lddy,
 * lddz.  Overwrites dz and db.  dz may be dy (in place, same stride).
 * Derivatives: sigmoid y(1-y), tanh 1-y^2, relu y>0, lrelu y>0 ? 1 : alpha,
 * elu y>0 ? 1 : y+alpha, identity 1. */
void fnn_bias_act_backward_f32(int64_t m, int64_t n, int act, float alpha,
                               const float *y, int64_t ldy, const float *dy,
                               int64_t lddy, float *dz, int64_t lddz,
                               float *db);
void fnn_bias_act_backward_f64(int64_t m, int64_t n, int act, double alpha,
                               const double *y, int64_t ldy, const double *dy,
                               int64_t lddy, double *dz, int64_t lddz,
                               double *db);

/* Inverted dropout fused with the activation.  Unit j of row i is kept
 * unless its random bits (dropout.h: a pure function of key, row0 + i and
 * j) fall below rate * 2^32, so with probability 1 - rate; rate in [0, 1).
 * forward: z := act(z + b) * mask, mask 1/(1 - rate) for kept units and 0
 * for dropped ones (so E[z] = act(z + b)); shapes as fnn_bias_act_forward.
 * backward: dz := dy * mask * act'(.), the derivative taken from the
 * activation's output before the mask, y * (1 - rate) (y: that forward's
 * output); db := column sums of dz (NULL to skip).  The mask is drawn
 * again, not stored; dz may be dy.  key: fnn_drop_key(seed, epoch,
 * layer); row0: the position of row 0 among the rows the key covers. */
void fnn_bias_act_dropout_forward_f32(int64_t m, int64_t n, int act,
                                      float alpha, const float *b, float *z,
                                      int64_t ldz, double rate, uint64_t key,
                                      int64_t row0);
void fnn_bias_act_dropout_forward_f64(int64_t m, int64_t n, int act,
                                      double alpha, const double *b, double *z,
                                      int64_t ldz, double rate, uint64_t key,
                                      int64_t row0);
void fnn_bias_act_dropout_backward_f32(int64_t m, int64_t n, int act,
                                       float alpha, const float *y,
                                       int64_t ldy, const float *dy,
                                       int64_t lddy, float *dz, int64_t lddz,
                                       float *db, double rate, uint64_t key,
                                       int64_t row0);
void fnn_bias_act_dropout_backward_f64(int64_t m, int64_t n, int act,
                                       double alpha, const double *y,
                                       int64_t ldy, const double *dy,
                                       int64_t lddy, double *dz, int64_t lddz,
                                       double *db, double rate, uint64_t key,
                                       int64_t row0);

/* y[i,j] := max_p (z[i, j*k+p] + b[j*k+p]), argmax[i,j] := that p (the first
 * maximum; the first NaN wins, as numpy.argmax).  z: (m, n*k) stride ldz;
 * b: (n*k) or NULL; y: (m, n) stride ldy; argmax: (m, n) contiguous.
 * Overwrites y and argmax; z is not modified. */
void fnn_maxout_forward_f32(int64_t m, int64_t n, int64_t k, const float *b,
                            const float *z, int64_t ldz, float *y, int64_t ldy,
                            int32_t *argmax);
void fnn_maxout_forward_f64(int64_t m, int64_t n, int64_t k, const double *b,
                            const double *z, int64_t ldz, double *y,
                            int64_t ldy, int32_t *argmax);

/* dz[i, j*k+p] := p == argmax[i,j] ? dy[i,j] : 0; db := column sums of dz
 * (NULL to skip).  dy: (m, n) stride lddy; dz: (m, n*k) stride lddz.
 * Overwrites dz and db; dz must not overlap dy. */
void fnn_maxout_backward_f32(int64_t m, int64_t n, int64_t k,
                             const int32_t *argmax, const float *dy,
                             int64_t lddy, float *dz, int64_t lddz, float *db);
void fnn_maxout_backward_f64(int64_t m, int64_t n, int64_t k,
                             const int32_t *argmax, const double *dy,
                             int64_t lddy, double *dz, int64_t lddz,
                             double *db);

/* z := softmax(z + b) row-wise, in place, with the row max subtracted.
 * z: (m, n) stride ldz; b: (n) or NULL. */
void fnn_softmax_forward_f32(int64_t m, int64_t n, const float *b, float *z,
                             int64_t ldz);
void fnn_softmax_forward_f64(int64_t m, int64_t n, const double *b, double *z,
                             int64_t ldz);

/* ---- fused loss + gradient (loss.c) ----------------------------------- */

/* Returns scale * sum_i w_i l_i, with l_i the loss of row i (see fnn_loss)
 * and w_i = sw[i] (sw NULL: all 1); the caller picks scale (1 for a sum,
 * 1/m or 1/sum(w) for a mean).  param: huber's delta (> 0), quantile's
 * quantile (in (0, 1)); ignored by the other losses.  If dz is not NULL,
 * dz := scale * w_i * dl_i/dz, overwritten, and db := column sums of dz
 * (db may be NULL).  z, y, dz: (m, n) with strides ldz, ldy, lddz; dz may
 * be z (same stride).  One pass per row, in double precision internally;
 * bce and softmax_ce use their stable forms (softplus with log1p,
 * log-sum-exp minus max).  NaN in z or y gives a NaN loss and NaN in the
 * matching elements of dz. */
double fnn_loss_grad_f32(int64_t m, int64_t n, int loss, double param,
                         double scale, const float *z, int64_t ldz,
                         const float *y, int64_t ldy, const float *sw,
                         float *dz, int64_t lddz, float *db);
double fnn_loss_grad_f64(int64_t m, int64_t n, int loss, double param,
                         double scale, const double *z, int64_t ldz,
                         const double *y, int64_t ldy, const double *sw,
                         double *dz, int64_t lddz, double *db);

/* ---- optimizers over flat buffers (optim.c) --------------------------- */
/* All take n elements; w, g, v, m are flat arrays of n.  wd adds wd*w to
 * the gradient (L2); pass 0 for biases.  Overwrite w and state in place. */

/* w := w - lr (g + wd w) */
void fnn_sgd_step_f32(int64_t n, float lr, float wd, const float *g,
                      float *w);
void fnn_sgd_step_f64(int64_t n, double lr, double wd, const double *g,
                      double *w);

/* g' = g + wd w; v := mu v - lr g'; w := w + (nesterov ? mu v - lr g' : v)
 * (scikit-learn's SGDOptimizer). */
void fnn_momentum_step_f32(int64_t n, float lr, float mu, float wd,
                           int nesterov, const float *g, float *w, float *v);
void fnn_momentum_step_f64(int64_t n, double lr, double mu, double wd,
                           int nesterov, const double *g, double *w,
                           double *v);

/* Adam step number t >= 1 (scikit-learn's AdamOptimizer):
 * g' = g + wd w; m := b1 m + (1-b1) g'; v := b2 v + (1-b2) g'^2;
 * w := w - lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1-b2^t) / (1-b1^t). */
void fnn_adam_step_f32(int64_t n, float lr, float b1, float b2, float eps,
                       int64_t t, float wd, const float *g, float *w,
                       float *m, float *v);
void fnn_adam_step_f64(int64_t n, double lr, double b1, double b2, double eps,
                       int64_t t, double wd, const double *g, double *w,
                       double *m, double *v);

/* ---- utilities (optim.c) ---------------------------------------------- */

/* sum_i x_i^2 of n elements, accumulated in double. */
double fnn_sum_squares_f32(int64_t n, const float *x);
double fnn_sum_squares_f64(int64_t n, const double *x);

/* 1 if every element of the (m, n) array x (stride ldx) is finite. */
int fnn_all_finite_f32(int64_t m, int64_t n, const float *x, int64_t ldx);
int fnn_all_finite_f64(int64_t m, int64_t n, const double *x, int64_t ldx);

/* ---- whole network (net.c) -------------------------------------------- */

/* One layer.  W: (n_in, n_out*pieces) row-major at params + w_off; bias
 * (n_out*pieces) at params + b_off, or b_off < 0 for none.  For maxout,
 * column j*pieces + p of W is piece p of unit j.  ws_col/iws_col place the
 * layer's scratch in the workspace (set by fnn_net_init).  fwd_t (not for
 * maxout) makes the forward GEMM compute Z^T = W^T X^T and transpose it:
 * the same numbers, in whichever orientation the BLAS runs faster for the
 * shape (chosen by timing both, see fastnn/_train.pyx).  dropout: the rate
 * of inverted dropout on the layer's output in training steps given an
 * fnn_drop (fnn_bias_act_dropout_forward), in [0, 1); 0 for none, and for
 * maxout and output layers. */
typedef struct {
    int64_t n_in, n_out;
    int32_t act;         /* fnn_act */
    int32_t pieces;      /* maxout pieces (1 for other layers) */
    int32_t fwd_t;       /* forward GEMM transposed (0/1) */
    double alpha;        /* lrelu slope / elu scale */
    double dropout;      /* dropout rate of the output in training */
    int64_t w_off, b_off;
    int64_t ws_col, iws_col;
} fnn_layer;

/* The dropout of one training step: layer l's mask keyed by
 * fnn_drop_key(seed, epoch, l) (dropout.h), row i of the step at position
 * row0 + i of the epoch's order, so a sample's mask does not depend on how
 * its minibatch is cut. */
typedef struct {
    uint64_t seed;
    int64_t epoch;
    int64_t row0;
} fnn_drop;

/* A network: layers[0..n_layers), loss, and the derived workspace shape.
 * For bce the last layer's act must be sigmoid, for softmax_ce softmax;
 * the pair is then fused (gradient p - y from the logits). */
typedef struct {
    const fnn_blas *blas;
    const fnn_layer *layers;
    int32_t n_layers;
    int32_t loss;
    double loss_param;   /* fnn_loss_grad's param for net->loss */
    int64_t n_params;
    int64_t n_weights;   /* params[0, n_weights) hold every W, the rest
                            every bias: L2 decay covers just that prefix */
    int64_t ws_cols;     /* workspace: m * ws_cols elements of the dtype */
    int64_t iws_cols;    /*            m * iws_cols int32 (maxout argmax) */
    int64_t max_width;
    int32_t lanes;       /* set by fnn_net_init: steps without sample
                            weights or dropout run the small-network step
                            (batch rows across vector lanes, lanes_impl.h)
                            when lanes_ws is set; callers may clear it to
                            force the GEMM path */
    int32_t dropout;     /* set by fnn_net_init: a layer's dropout > 0 */
    void *lanes_ws;      /* that step's scratch, owned by the caller:
                            FNN_LANES_BYTES bytes, 64-byte aligned, used by
                            one thread at a time (NULL: the GEMM path) */
} fnn_net;

/* Scratch of the small-network step (fnn_net.lanes_ws): one 32-byte vector
 * per input, unit, target and parameter of the network must fit. */
#define FNN_LANES_BYTES 65536

/* Fills ws_col/iws_col of each layer, the workspace sizes of net and
 * net->lanes (1 for a small dense network: every layer's act elementwise,
 * loss not softmax_ce, and a few thousand parameters at most).  Returns
 * 0, or -1 if the layers do not chain (n_in of layer l != n_out of layer
 * l-1), a weight or bias lies outside params, net->loss is not a
 * fnn_loss or net->loss_param is out of its range (huber: finite > 0,
 * quantile: in (0, 1)), or a dropout rate is outside [0, 1) or set on a
 * maxout or the output layer. */
int fnn_net_init(fnn_net *net, fnn_layer *layers);

/* Forward pass of m rows of x (m, n_in) stride ldx.  Activations go to ws;
 * returns a pointer into ws to the (m, n_out) output, contiguous.
 * predict = 1 applies the output activation (sigmoid/softmax included);
 * predict = 0 leaves what the loss consumes (logits for bce/softmax_ce). */
float *fnn_net_forward_f32(const fnn_net *net, int64_t m, const float *x,
                           int64_t ldx, const float *params, int predict,
                           float *ws, int32_t *iws);
double *fnn_net_forward_f64(const fnn_net *net, int64_t m, const double *x,
                            int64_t ldx, const double *params, int predict,
                            double *ws, int32_t *iws);

/* Forward, loss and backward for m rows of x and y (m, n_out) stride ldy:
 * returns the loss (see fnn_loss_grad for scale and sw) and overwrites
 * grads (n_params, same layout as params).  If lr != 0 the SGD step is
 * fused instead: grads of W are not written; each W := (1 - lr wd) W -
 * lr dW inside its gradient GEMM, each bias := b - lr db (db is left in
 * grads); wd applies to W only.  If the loss is not finite, nothing after
 * the forward pass runs: grads and params are untouched.  Otherwise, if
 * snapshot is not NULL, params are copied to it (n_params) before any
 * update: a state whose loss is known to be finite.  check_x != 0 also
 * returns NaN, touching nothing, if x holds NaN or inf (seen through the
 * first layer's product x W, all non-finite then; cheaper than reading x
 * again when n_in is large).  drop (NULL: none) applies the layers'
 * dropout with its masks in the forward and backward passes. */
double fnn_net_loss_grad_f32(const fnn_net *net, int64_t m, const float *x,
                             int64_t ldx, const float *y, int64_t ldy,
                             const float *sw, double scale, float lr, float wd,
                             float *params, float *grads, float *snapshot,
                             float *ws, int32_t *iws, int check_x,
                             const fnn_drop *drop);
double fnn_net_loss_grad_f64(const fnn_net *net, int64_t m, const double *x,
                             int64_t ldx, const double *y, int64_t ldy,
                             const double *sw, double scale, double lr,
                             double wd, double *params, double *grads,
                             double *snapshot, double *ws, int32_t *iws,
                             int check_x, const fnn_drop *drop);
/* fnn_net_loss_grad with lr 0 that stops short of layer 0's weight
 * gradient: *dz0 is set to layer 0's dZ, (m, n_out * pieces) contiguous in
 * ws (NULL if the loss is not finite; ws and grads then hold partial
 * results).  The split fit step forms that gradient by rows of W from both
 * halves' dZ. */
double fnn_net_loss_dz0_f32(const fnn_net *net, int64_t m, const float *x,
                            int64_t ldx, const float *y, int64_t ldy,
                            const float *sw, double scale, float *params,
                            float *grads, float *ws, int32_t *iws,
                            float **dz0, const fnn_drop *drop);
double fnn_net_loss_dz0_f64(const fnn_net *net, int64_t m, const double *x,
                            int64_t ldx, const double *y, int64_t ldy,
                            const double *sw, double scale, double *params,
                            double *grads, double *ws, int32_t *iws,
                            double **dz0, const fnn_drop *drop);

/* ---- the training loop (train.c) -------------------------------------- */

typedef enum {
    FNN_OPT_SGD = 0,
    FNN_OPT_MOMENTUM = 1,
    FNN_OPT_NESTEROV = 2,
    FNN_OPT_ADAM = 3
} fnn_opt_kind;

/* Optimizer: kind, hyper-parameters and state buffers (n_params each, same
 * layout as params; unused ones may be NULL).  t counts Adam steps taken
 * and is advanced in place.  The L2 coefficient applied to the weights at
 * a step of m rows is l2 / m if l2_per_row (scikit-learn's alpha), else
 * l2. */
typedef struct {
    int32_t kind;
    int32_t l2_per_row;
    double momentum, beta1, beta2, eps, l2;
    int64_t t;
    void *vel;            /* momentum / nesterov velocity, Adam m */
    void *sq;             /* Adam v */
} fnn_optim;

/* Called between steps, about every poll_ms milliseconds; nonzero stops. */
typedef int (*fnn_poll_fn)(void *ctx, int64_t epoch, int64_t step);

/* The data-parallel split step (csrc/split.h, split_impl.h; the helper
 * thread is csrc/pool.c).  A minibatch of at least min_rows (>= 2) rows is
 * split in two, the second half's forward/backward pass running on the
 * helper thread with its own workspace ws2/iws2 (for ceil(batch / 2) rows)
 * and gradient buffer grads2 (n_params); the halves' gradients are then
 * summed (always in the same order, so results are reproducible) and the
 * optimizer applied, half of it on each thread.  min_rows 0, or the helper
 * held by another fit, runs every step on the calling thread.  chunk_mnk
 * (> 0) is the fnn_blas.chunk_mnk of the halves' GEMMs: pieces small
 * enough that the BLAS runs them on the thread that calls it (0: whole
 * calls).
 *
 * hold and backoff are in/out, kept by the caller between fits (start at
 * 0): the back-off state of split.h.  While the helper is starved (its
 * core busy elsewhere) steps run unsplit until hold (ms on
 * CLOCK_MONOTONIC; 0: not held); backoff is the length of the last hold
 * in ms (0: none recently).  backoff < 0: never back off. */
typedef struct {
    int64_t min_rows, chunk_mnk;
    void *ws2, *grads2;
    int32_t *iws2;
    double hold, backoff;
} fnn_split;

/* How far a fit went.  epochs_done / steps_done count finished epochs and
 * steps; on FNN_ERR_NONFINITE bad_epoch / bad_step name the step whose
 * loss was not finite (not applied; -1 otherwise).  snapshot_epoch: the
 * epoch of the last snapshot taken, left alone if none was.  Updated
 * before each poll: epoch_steps, the finished steps of the current epoch,
 * and epoch_loss, that epoch's loss over them so far (reported as
 * epoch_loss will report it; NaN before its first step). */
typedef struct {
    int64_t epochs_done, steps_done;
    int64_t bad_epoch, bad_step;
    int64_t snapshot_epoch;
    int64_t epoch_steps;
    double epoch_loss;
} fnn_fit_out;

/* A run of epochs.
 *
 * Rows: x (n, n_in) stride ldx, y (n, n_out) stride ldy, sw (n) sample
 * weights or NULL.  Epoch e visits rows order[e*n + i] (order NULL: rows
 * in order) in minibatches of `batch` rows, the last one partial; with an
 * order, rows are gathered into xb/yb/swb (batch rows each).  lr[e] is the
 * learning rate of epoch e; epoch0 the global number of epoch 0 of this
 * run.
 *
 * Losses: a step's loss is scaled by 1 for sse and by 1/(rows) or
 * 1/sum(sw) otherwise.  epoch_loss[e] receives the epoch's loss: the sum
 * of the step losses for sse, else their mean weighted by each batch's
 * rows (or its sample-weight sum, unless mean_by_rows), i.e. the mean loss
 * over the epoch's samples, each step's loss reported as loss_scale * loss
 * (+ the L2 term if loss_l2).  loss_scale changes what is reported, not
 * the gradient (scikit-learn reports squared error as a mean over outputs:
 * 1 / n_out).  loss_l2 adds 1/2 wd |W|^2 (W before the step) to each
 * step's loss, as scikit-learn reports it.
 *
 * Dropout: with dropout set, each step applies the layers' dropout
 * (fnn_layer.dropout) with the masks of fnn_drop {drop_seed, epoch0 + e,
 * the step's first position in epoch e's order}; 0: no dropout.
 *
 * Snapshots: see fnn_fit.  The fit's progress is in `out`. */
typedef struct {
    int64_t n, n_epochs, batch, epoch0;
    uint64_t drop_seed;
    int32_t dropout;
    const void *x; int64_t ldx;
    const void *y; int64_t ldy;
    const void *sw;             /* (n) or NULL */
    const int64_t *order;       /* (n_epochs, n) or NULL */
    const double *lr;           /* (n_epochs), or (1) with lr_const */
    int32_t lr_const;           /* nonzero: lr[0] for every epoch */
    double *epoch_loss;         /* (n_epochs), out */
    int32_t loss_l2, mean_by_rows;
    double loss_scale;
    void *snapshot;             /* (n_params) or NULL */
    int64_t snapshot_every;     /* epochs between snapshots (>= 1) */
    void *xb, *yb, *swb;        /* gather buffers (batch rows), if order */
    fnn_poll_fn poll; void *poll_ctx; double poll_ms;
    fnn_split split;
    fnn_fit_out out;
    /* Sparse input (see fnn_csr; x unused and xb not written then): xs,
     * with n rows and n_in columns, valid (fnn_csr_check), read in place
     * through the order, never gathered; xsb: room for one minibatch
     * regrouped by column (colptr of n_in + 1, cap at least the entries of
     * the batch rows of xs that hold the most).  Each step then runs on the
     * calling thread (fnn_net_loss_dz0_csr, then fnn_csr_update for layer
     * 0's W and the optimizer for the rest; no split step, no
     * small-network step). */
    const struct fnn_csr *xs;
    struct fnn_csr_batch *xsb;
} fnn_fit_args;

/* Runs the epochs of a (see fnn_fit_args) with optimizer opt.  Returns
 * FNN_OK, FNN_ERR_NONFINITE or FNN_STOPPED, a->out saying how far it went.
 * Plain SGD without momentum is fused into the gradient GEMMs.  If
 * a->snapshot is set, the parameters at the start of each epoch whose
 * global number (epoch0 + e) is a multiple of snapshot_every are copied
 * there once that epoch's first loss is known finite; a->out.snapshot_epoch
 * is then set to e.  Runs on the calling thread, plus the helper thread of
 * pool.c for split steps (a->split).  No allocation. */
int fnn_fit_f32(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                float *params, float *grads, float *ws, int32_t *iws);
int fnn_fit_f64(const fnn_net *net, fnn_optim *opt, fnn_fit_args *a,
                double *params, double *grads, double *ws, int32_t *iws);

/* ---- many networks at once (many.c) ----------------------------------- */

/* Status of a job that fnn_fit_many never started (stopped before). */
#define FNN_NOT_RUN (-1)

/* One network's fit within fnn_fit_many: its description (net; its
 * lanes_ws is not used: every worker thread has its own), parameters and
 * gradient buffer (n_params each), optimizer and fit arguments, as
 * fnn_fit takes them.  fnn_fit_many sets a.xb/yb/swb (gather buffers),
 * a.poll/poll_ctx/poll_ms, and turns split steps off (a.split zeroed:
 * min_rows 0): a job is the fit fnn_fit runs on one thread; a.out says how
 * far it went.  status: out, the job's fnn_fit return value, or
 * FNN_NOT_RUN. */
typedef struct {
    const fnn_net *net;
    void *params, *grads;
    fnn_optim opt;
    fnn_fit_args a;
    int32_t status;
} fnn_many_job;

/* Bytes of scratch one worker thread of fnn_fit_many needs for these jobs
 * (workspace and gather buffers for the largest batch, the small-network
 * step's scratch, and with `lanes` the networks-in-lanes state): the
 * caller passes n_threads times this, 64-byte aligned. */
int64_t fnn_many_scratch_f32(const fnn_many_job *jobs, int64_t n_jobs,
                             int lanes);
int64_t fnn_many_scratch_f64(const fnn_many_job *jobs, int64_t n_jobs,
                             int lanes);

/* Networks per networks-in-lanes group on this CPU: LANE_N (8 floats, 4
 * doubles), twice that where the CPU has AVX-512. */
int64_t fnn_many_width_f32(void);
int64_t fnn_many_width_f64(void);
/* on: one vector per group whatever the CPU (for tests; not thread-safe
 * against a running fnn_fit_many). */
void fnn_many_set_narrow(int on);

/* 1 if jobs[0, count) (count <= fnn_many_width) can
 * run as one networks-in-lanes group: every job's net has the same layers,
 * loss and parameter layout and runs the small-network step (net->lanes),
 * and the jobs share x, y (and strides), n, batch and n_epochs, with no
 * sample weights, no reported L2 term, mean_by_rows 0, and orders either
 * all given or all absent.  Optimizer kinds and hyper-parameters, epoch0
 * and snapshot_every may differ. */
int fnn_many_lanes_ok_f32(const fnn_many_job *jobs, int64_t count);
int fnn_many_lanes_ok_f64(const fnn_many_job *jobs, int64_t count);

/* Runs every job on n_threads worker threads started for the call (each
 * job whole on one thread, its BLAS calls made from that thread), while
 * the calling thread waits and calls poll(poll_ctx, jobs finished, 0)
 * about every poll_ms ms; nonzero stops the workers at their next step
 * (a running fit returns FNN_STOPPED, jobs not started keep FNN_NOT_RUN).
 * If no thread can be started the calling thread runs the jobs, polling
 * the same way between and within them.
 *
 * lanes = 0: each job is fnn_fit on one thread.  The results are those
 * of fnn_fit called on the job alone with split steps off, bit for bit.
 *
 * lanes = 1: consecutive groups of LANE_N jobs (the last may be short),
 * each satisfying fnn_many_lanes_ok, run as one fit with the networks in
 * the vector lanes: each lane computes its network's step in the same
 * arithmetic, in the same order and with the same contractions as the
 * small-network step of fnn_fit (lanes_impl.h): the minibatch's rows in
 * blocks of LANE_N, per-row sums kept per block lane and summed across
 * lanes in lanes_sum's order, the loss of each block by the same inlined
 * fnn_loss_grad call on the network's own block, every elementwise kernel
 * called on as many elements as there.  Optimizer kinds, learning rates,
 * L2, momentum, betas, eps, Adam's step count, orders and snapshots are
 * per lane.  A lane whose loss is not finite stops there, as its fnn_fit
 * would (its state is left as before that step); the others go on.
 * Cloned for the same CPU targets as the small-network step
 * (FNN_LANES_CLONES), so that on one machine both run the same kind of
 * arithmetic (with or without FMA).
 *
 * Returns FNN_OK, FNN_STOPPED if poll asked to stop, or -1 (nothing run)
 * if lanes = 1 and a group fails fnn_many_lanes_ok. */
int fnn_fit_many_f32(fnn_many_job *jobs, int64_t n_jobs, int lanes,
                     int n_threads, void *scratch, int64_t scratch_bytes,
                     fnn_poll_fn poll, void *poll_ctx, double poll_ms);
int fnn_fit_many_f64(fnn_many_job *jobs, int64_t n_jobs, int lanes,
                     int n_threads, void *scratch, int64_t scratch_bytes,
                     fnn_poll_fn poll, void *poll_ctx, double poll_ms);
/* ---- sparse first layer (sparse.c) ------------------------------------ */
/* A first layer whose input X is a CSR matrix: its forward product and its
 * weight update touch only the entries of X, never a dense copy of it.
 * All kernels here but fnn_csr_check trust the matrix to be valid (as
 * fnn_csr_check says): out-of-range indices would be read and written out
 * of bounds.  No allocation, no threads of their own; the update works on
 * a range of W's rows, so two threads may share one step. */

/* A CSR matrix of n_rows x n_cols.  Row i holds the entries
 * [indptr[i], indptr[i+1]) of indices (their columns) and data (their
 * values, of the entry point's dtype).  idx64: 1 if indptr and indices are
 * int64, 0 if int32 (scipy uses either).  Within a row the columns may come
 * in any order and may repeat (repeats add up, as in scipy's toarray()),
 * and values may be explicit zeros. */
typedef struct fnn_csr {
    int64_t n_rows, n_cols;
    int32_t idx64;
    const void *indptr;     /* (n_rows + 1) */
    const void *indices;    /* (nnz) */
    const void *data;       /* (nnz) */
} fnn_csr;

/* The rows of a minibatch, used by the kernels below: batch row r is row
 * rows[r] of the matrix, or row0 + r if rows is NULL (0 <= each < n_rows;
 * rows may repeat). */

/* Status codes of fnn_csr_check; *where receives the position. */
enum {
    FNN_CSR_OK = 0,
    FNN_CSR_INDPTR_START = 1,   /* indptr[0] != 0                  (0)    */
    FNN_CSR_INDPTR_ORDER = 2,   /* indptr[i+1] < indptr[i]         (i)    */
    FNN_CSR_INDPTR_END = 3,     /* indptr[n_rows] > nnz         (n_rows)  */
    FNN_CSR_INDEX_RANGE = 4,    /* indices[k] < 0 or >= n_cols     (k)    */
    FNN_CSR_NONFINITE = 5       /* data[k] is NaN or +-inf         (k)    */
};

/* Checks x, whose indices and data arrays hold nnz elements: indptr starts
 * at 0, never decreases and ends at most at nnz, and every entry k below
 * indptr[n_rows] has 0 <= indices[k] < n_cols and a finite data[k].
 * Returns FNN_CSR_OK or the first problem found, its position in *where:
 * indptr is checked first, then the indices of all entries, then their
 * values, each in order.  O(n_rows + nnz), no writes but *where. */
int fnn_csr_check_f32(const fnn_csr *x, int64_t nnz, int64_t *where);
int fnn_csr_check_f64(const fnn_csr *x, int64_t nnz, int64_t *where);

/* Number of entries in the m batch rows (see above): the room that
 * fnn_csr_batch needs. */
int64_t fnn_csr_batch_nnz(const fnn_csr *x, int64_t m, int64_t row0,
                          const int64_t *rows);

/* Z := X_b W for the m batch rows X_b of x: z[r, :] = sum over the entries
 * k of batch row r, in stored order, of data[k] * w[indices[k], :].
 * w: (n_cols, n) with row stride ldw; z: (m, n) with row stride ldz,
 * overwritten (an empty row gives zeros; z is never read).  The bias and
 * activation follow separately (fnn_bias_act_forward). */
void fnn_csr_matmul_f32(const fnn_csr *x, int64_t m, int64_t row0,
                        const int64_t *rows, int64_t n, const float *w,
                        int64_t ldw, float *z, int64_t ldz);
void fnn_csr_matmul_f64(const fnn_csr *x, int64_t m, int64_t row0,
                        const int64_t *rows, int64_t n, const double *w,
                        int64_t ldw, double *z, int64_t ldz);

/* A minibatch X_b (m, n_cols) regrouped by column, what the weight
 * gradient X_b^T dZ reads row by row of W: the entries of column j are
 * [colptr[j], colptr[j+1]), each with its batch row pos[k] (ascending
 * within a column) and value val[k] (of the dtype).  The caller provides
 * colptr (n_cols + 1), and pos and val with room for cap entries. */
typedef struct fnn_csr_batch {
    int64_t m, n_cols, nnz, cap;
    int64_t *colptr;
    int32_t *pos;
    void *val;
} fnn_csr_batch;

/* Fills b (b->colptr, pos, val, and b->m, n_cols, nnz) from the m batch
 * rows of x (m <= INT32_MAX); b->cap is read.  A counting sort by column:
 * one pass over colptr and two over the batch's entries.  Returns the
 * number of entries, or -1 (b untouched) if they exceed b->cap. */
int64_t fnn_csr_batch_f32(const fnn_csr *x, int64_t m, int64_t row0,
                          const int64_t *rows, fnn_csr_batch *b);
int64_t fnn_csr_batch_f64(const fnn_csr *x, int64_t m, int64_t row0,
                          const int64_t *rows, fnn_csr_batch *b);

/* G := X_b^T dZ for rows [j0, j1) of G: g[j, :] = sum over the entries k
 * of column j of the batch b, in order, of val[k] * dz[pos[k], :] (0 for a
 * column without entries).  dz: (b->m, n) with row stride lddz; g: (n_cols,
 * n) with row stride ldg, its rows [j0, j1) overwritten (never read). */
void fnn_csr_grad_f32(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                      int64_t n, const float *dz, int64_t lddz, float *g,
                      int64_t ldg);
void fnn_csr_grad_f64(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                      int64_t n, const double *dz, int64_t lddz, double *g,
                      int64_t ldg);

/* One optimizer step of rows [j0, j1) of W (n_cols, n), contiguous, with
 * the gradient G = X_b^T dZ of fnn_csr_grad (plus wd W, the L2 decay):
 * each row's gradient is formed and applied in one pass over W and its
 * state, no G buffer.  The step is that of opt->kind in the form of the
 * flat optimizers above: FNN_OPT_SGD fnn_sgd_step (lr, wd), MOMENTUM and
 * NESTEROV fnn_momentum_step (opt->momentum; velocity vel), ADAM
 * fnn_adam_step (opt->beta1, beta2, eps and the step number opt->t >= 1,
 * already advanced; moments vel, sq).  vel and sq: (n_cols, n) contiguous
 * like W, the layer's own state (opt->vel and opt->sq are not used); NULL
 * where the kind needs none.  Rows without entries in the batch take the
 * same formula with a zero gradient without reading dZ (and with SGD and
 * wd == 0 are not written at all: w - lr * 0 is w).  If sumsq is not NULL,
 * *sumsq := sum of w^2 over rows [j0, j1) before the step, in double (the
 * L2 term of the loss, without another pass). */
void fnn_csr_update_f32(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                        int64_t n, const float *dz, int64_t lddz,
                        const fnn_optim *opt, float lr, float wd, float *w,
                        float *vel, float *sq, double *sumsq);
void fnn_csr_update_f64(const fnn_csr_batch *b, int64_t j0, int64_t j1,
                        int64_t n, const double *dz, int64_t lddz,
                        const fnn_optim *opt, double lr, double wd, double *w,
                        double *vel, double *sq, double *sumsq);

/* ---- a network whose input is sparse (net.c) --------------------------- */

/* A network step's input: m rows of the CSR matrix x, batch row r being
 * rows[r], or row0 + r if rows is NULL (as for the kernels above). */
typedef struct {
    const fnn_csr *x;
    int64_t row0;
    const int64_t *rows;
} fnn_csr_rows;

/* fnn_net_forward with the input as m rows of a CSR matrix: layer 0's
 * product by fnn_csr_matmul (its fwd_t ignored), the rest as for a dense
 * input; x must be valid (fnn_csr_check) with n_cols == layer 0's n_in. */
float *fnn_net_forward_csr_f32(const fnn_net *net, int64_t m,
                               const fnn_csr_rows *xs, const float *params,
                               int predict, float *ws, int32_t *iws);
double *fnn_net_forward_csr_f64(const fnn_net *net, int64_t m,
                                const fnn_csr_rows *xs, const double *params,
                                int predict, double *ws, int32_t *iws);

/* fnn_net_loss_dz0 with the input as m rows of a CSR matrix: the loss, the
 * gradient of every parameter but layer 0's W in grads (that range of
 * grads is not written), and *dz0 pointed at layer 0's dZ (m, n_out *
 * pieces), contiguous in ws (NULL if the loss is not finite).  Layer 0's
 * weight gradient is then X_b^T dZ0: fnn_csr_batch and fnn_csr_grad, or
 * the step fused with it, fnn_csr_update.  drop: as for fnn_net_loss_dz0. */
double fnn_net_loss_dz0_csr_f32(const fnn_net *net, int64_t m,
                                const fnn_csr_rows *xs, const float *y,
                                int64_t ldy, const float *sw, double scale,
                                float *params, float *grads, float *ws,
                                int32_t *iws, float **dz0,
                                const fnn_drop *drop);
double fnn_net_loss_dz0_csr_f64(const fnn_net *net, int64_t m,
                                const fnn_csr_rows *xs, const double *y,
                                int64_t ldy, const double *sw, double scale,
                                double *params, double *grads, double *ws,
                                int32_t *iws, double **dz0,
                                const fnn_drop *drop);

#ifdef __cplusplus
}
#endif
#endif /* FASTNN_H */
