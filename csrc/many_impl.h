/* many_impl.h -- body of many.c, included once per dtype (REAL, SUF, KSUF,
 * SQRT, LANE_N, LANE_INT) after the inline kernel bodies and lanes_impl.h.
 *
 * Networks in lanes.  The small-network step (lanes_impl.h) puts LANE_N
 * rows of one network's minibatch in a vector; a group here puts LANE_N
 * networks in a vector instead, and walks the same rows the same way: per
 * step, blocks of LANE_N rows (a short last block repeating its first row
 * in the spare positions), every block position t computed separately,
 * accumulated per position in the same order, and summed across positions
 * in lanes_sum's order at the end of the step.  Each element gets the same
 * operations in the same order, written as lanes_body writes them, so that
 * the compiler makes the same choices (which multiply-add it contracts to
 * an FMA): lane k of the group holds what lane t of network k's own step
 * holds, bit for bit.  The loss of a block is the same inlined
 * fnn_loss_grad call lanes_body makes, on network k's block laid out as
 * lanes_body lays it out (its reduction order is the compiler's), and the
 * optimizers are optim_impl.h's expressions with per-lane scalars.
 * The tests compare every combination that reaches this code with fnn_fit
 * bit for bit (tests/test_many.py). */

/* ML: block positions, the rows of a step a network's own fit puts in one
 * vector (LANE_N).  The groups' width is many_group_impl.h's. */
#define ML ((int64_t)LANE_N)

typedef LANE_INT SUF(lmask) __attribute__((vector_size(FNN_LANE_BYTES)));

#define KIND_BIT(kind) (1 << (kind))

/* lanes_impl.h's FNN_LANES_N: the loops over N unrolled for n <= 4. */
#define FNN_MANY_N(n, ...)                                                  \
    switch (n) {                                                            \
    case 1: { const int64_t N = 1; __VA_ARGS__ } break;                     \
    case 2: { const int64_t N = 2; __VA_ARGS__ } break;                     \
    case 3: { const int64_t N = 3; __VA_ARGS__ } break;                     \
    case 4: { const int64_t N = 4; __VA_ARGS__ } break;                     \
    default: { const int64_t N = n; __VA_ARGS__ } break;                    \
    }

/* ---- one network per thread --------------------------------------------- */

/* A worker's scratch for fnn_fit: the small-network step's scratch, the
 * GEMM path's workspace and the gather buffers, each on its own lines. */
typedef struct {
    void *lanes_ws;
    REAL *ws;
    int32_t *iws;
    REAL *xb, *yb, *swb;
} SUF(job_mem);

static int64_t SUF(job_layout)(const fnn_many_job *job, char *base,
                               SUF(job_mem) *m)
{
    const fnn_net *net = job->net;
    const int64_t b = many_batch(job);
    const int64_t nin = net->layers[0].n_in;
    const int64_t nout = net->layers[net->n_layers - 1].n_out;
    int64_t off = 0;
    if (m) {
        m->lanes_ws = base + off;
    }
    off += net->lanes ? FNN_LANES_BYTES : 0;
    if (m) {
        m->ws = (REAL *)(base + off);
    }
    off += many_round(b * net->ws_cols * (int64_t)sizeof(REAL));
    if (m) {
        m->iws = (int32_t *)(base + off);
    }
    off += many_round(b * net->iws_cols * (int64_t)sizeof(int32_t));
    if (m) {
        m->xb = (REAL *)(base + off);
    }
    off += many_round(b * nin * (int64_t)sizeof(REAL));
    if (m) {
        m->yb = (REAL *)(base + off);
    }
    off += many_round(b * nout * (int64_t)sizeof(REAL));
    if (m) {
        m->swb = (REAL *)(base + off);
    }
    off += many_round(b * (int64_t)sizeof(REAL));
    return off;
}

static void SUF(job_unit)(many_run *r, int64_t u, char *scratch)
{
    fnn_many_job *job = &r->jobs[u];
    SUF(job_mem) m;
    SUF(job_layout)(job, scratch, &m);
    fnn_net net = *job->net;
    net.lanes_ws = net.lanes ? m.lanes_ws : NULL;
    many_prepare_job(r, job, m.xb, m.yb, m.swb);
    job->status = SUF(fnn_fit)(&net, &job->opt, &job->a, (REAL *)job->params,
                               (REAL *)job->grads, m.ws, m.iws);
}

/* ---- networks in lanes: what both group widths share ---------------- */

/* c := r transposed, ML x ML (c[k][t] = r[t][k]), in registers: shuffles
 * rather than lane stores read back as vectors (a stall on store
 * forwarding each time). */
FNN_INLINE void SUF(mtranspose)(const SUF(lanevec) *r, SUF(lanevec) *c)
{
    typedef SUF(lmask) mask;
#if LANE_N == 4
    const mask lo = {0, 4, 2, 6}, hi = {1, 5, 3, 7};
    const mask a = {0, 1, 4, 5}, b = {2, 3, 6, 7};
    SUF(lanevec) t0 = __builtin_shuffle(r[0], r[1], lo);
    SUF(lanevec) t1 = __builtin_shuffle(r[0], r[1], hi);
    SUF(lanevec) t2 = __builtin_shuffle(r[2], r[3], lo);
    SUF(lanevec) t3 = __builtin_shuffle(r[2], r[3], hi);
    c[0] = __builtin_shuffle(t0, t2, a);
    c[1] = __builtin_shuffle(t1, t3, a);
    c[2] = __builtin_shuffle(t0, t2, b);
    c[3] = __builtin_shuffle(t1, t3, b);
#else
    const mask lo = {0, 8, 2, 10, 4, 12, 6, 14}, hi = {1, 9, 3, 11, 5, 13, 7, 15};
    const mask lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const mask lo4 = {0, 1, 2, 3, 8, 9, 10, 11};
    const mask hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    SUF(lanevec) t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
    }
    /* t[2q]: columns 2m of rows 2q, 2q+1 interleaved; t[2q+1]: odd ones */
    for (int q = 0; q < 8; q += 4) {
        for (int o = 0; o < 2; o++) {
            u[q + o] = __builtin_shuffle(t[q + o], t[q + 2 + o], lo2);
            u[q + 2 + o] = __builtin_shuffle(t[q + o], t[q + 2 + o], hi2);
        }
    }
    for (int i = 0; i < 4; i++) {
        c[i] = __builtin_shuffle(u[i], u[i + 4], lo4);
        c[i + 4] = __builtin_shuffle(u[i], u[i + 4], hi4);
    }
#endif
}

/* Adam's step size of lane k at step t, as fnn_adam_step computes it. */
static REAL SUF(adam_lr_t)(REAL lr, REAL b1, REAL b2, int64_t t)
{
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    return (REAL)((double)lr * sqrt(bc2) / bc1);
}

/* The groups, twice: one vector of LANE_N networks (AVX2 and baseline
 * clones), and where the CPU has AVX-512 two such vectors side by side
 * (compiled for AVX-512 only, chosen at run time by many_wide). */
#define FNN_MANY_WIDEN 1
#define GSUF(name) SUF(name##_w1)
#define FNN_MANY_TARGET FNN_LANES_CLONES
#include "many_group_impl.h"
#undef FNN_MANY_WIDEN
#undef GSUF
#undef FNN_MANY_TARGET

#if defined(FNN_CLONES_ON)
#define FNN_MANY_WIDEN 2
#define GSUF(name) SUF(name##_w2)
#define FNN_MANY_TARGET __attribute__((target("arch=x86-64-v4")))
#include "many_group_impl.h"
#undef FNN_MANY_WIDEN
#undef GSUF
#undef FNN_MANY_TARGET
#endif

/* Whether the groups are two vectors wide on this CPU. */
static int SUF(many_wide)(void)
{
#if defined(FNN_CLONES_ON)
    return !many_narrow && __builtin_cpu_supports("x86-64-v4") > 0;
#else
    return 0;
#endif
}

int64_t SUF(fnn_many_width)(void)
{
    return SUF(many_wide)() ? 2 * ML : ML;
}

/* ---- entry points ------------------------------------------------------ */

int64_t SUF(fnn_many_scratch)(const fnn_many_job *jobs, int64_t n_jobs,
                              int lanes)
{
    int64_t most = 64;
    for (int64_t i = 0; i < n_jobs; i++) {
        int64_t b = !lanes ? SUF(job_layout)(&jobs[i], NULL, NULL)
#if defined(FNN_CLONES_ON)
                    : SUF(many_wide)() ? SUF(group_layout_w2)(jobs[i].net, NULL, NULL)
#endif
                    : SUF(group_layout_w1)(jobs[i].net, NULL, NULL);
        most = b > most ? b : most;
    }
    return many_round(most);
}

static int SUF(same_layers)(const fnn_net *a, const fnn_net *b)
{
    if (a->n_layers != b->n_layers || a->loss != b->loss
        || a->n_params != b->n_params || a->n_weights != b->n_weights
        || a->ws_cols != b->ws_cols || a->max_width != b->max_width
        || !a->lanes || !b->lanes) {
        return 0;
    }
    for (int64_t l = 0; l < a->n_layers; l++) {
        const fnn_layer *p = &a->layers[l], *q = &b->layers[l];
        if (p->n_in != q->n_in || p->n_out != q->n_out || p->act != q->act
            || p->pieces != q->pieces || p->alpha != q->alpha
            || p->w_off != q->w_off || p->b_off != q->b_off
            || p->ws_col != q->ws_col) {
            return 0;
        }
    }
    return 1;
}

int SUF(fnn_many_lanes_ok)(const fnn_many_job *jobs, int64_t count)
{
    if (count < 1 || count > SUF(fnn_many_width)()) {
        return 0;
    }
    const fnn_many_job *j0 = &jobs[0];
    for (int64_t i = 0; i < count; i++) {
        const fnn_many_job *j = &jobs[i];
        const fnn_fit_args *a = &j->a, *b = &j0->a;
        if (!SUF(same_layers)(j->net, j0->net)
            || a->x != b->x || a->ldx != b->ldx || a->y != b->y
            || a->ldy != b->ldy || a->sw || !a->order != !b->order
            || a->n != b->n || a->batch != b->batch
            || a->n_epochs != b->n_epochs || a->loss_l2 || a->mean_by_rows
            || !a->lr || !a->epoch_loss || !j->params || !j->grads
            || j->opt.kind < FNN_OPT_SGD || j->opt.kind > FNN_OPT_ADAM
            || (j->opt.kind != FNN_OPT_SGD && !j->opt.vel)
            || (j->opt.kind == FNN_OPT_ADAM && !j->opt.sq)) {
            return 0;
        }
    }
    return 1;
}

int SUF(fnn_fit_many)(fnn_many_job *jobs, int64_t n_jobs, int lanes,
                      int n_threads, void *scratch, int64_t scratch_bytes,
                      fnn_poll_fn poll, void *poll_ctx, double poll_ms)
{
    many_run r;
    memset(&r, 0, sizeof r);
    const int64_t NL = SUF(fnn_many_width)();
    r.jobs = jobs;
    r.n_jobs = n_jobs;
    r.n_units = lanes ? (n_jobs + NL - 1) / NL : n_jobs;
    r.unit = !lanes ? SUF(job_unit)
#if defined(FNN_CLONES_ON)
           : NL > ML ? SUF(group_unit_w2)
#endif
           : SUF(group_unit_w1);
    r.scratch = (char *)scratch;
    r.scratch_bytes = scratch_bytes;
    r.poll = poll;
    r.poll_ctx = poll_ctx;
    r.poll_ms = poll_ms > 0 ? poll_ms : 50.0;
    if (lanes) {
        for (int64_t k0 = 0; k0 < n_jobs; k0 += NL) {
            int64_t c = n_jobs - k0 < NL ? n_jobs - k0 : NL;
            if (!SUF(fnn_many_lanes_ok)(jobs + k0, c)) {
                return -1;
            }
        }
    }
    for (int64_t i = 0; i < n_jobs; i++) {
        jobs[i].status = FNN_NOT_RUN;
    }
    if (n_jobs == 0) {
        return FNN_OK;
    }
    return many_run_all(&r, n_threads);
}

#undef ML
#undef FNN_MANY_N
#undef KIND_BIT
