/* net.c -- the network description (fnn_net_init): checks the layer
 * layout, places each layer's scratch in the workspace and picks the
 * small-network step.  The forward pass and the fused loss + backward (+
 * SGD) step are in net_f32.c / net_f64.c (one body, net_impl.h). */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "fastnn.h"
#include "inline.h"

/* The small-network step (lanes_impl.h) keeps one vector (FNN_LANE_BYTES)
 * per parameter, input, unit and target in net->lanes_ws: within
 * FNN_LANES_BYTES that is a few thousand parameters, networks whose layers
 * are narrow enough that a vector across the batch beats GEMMs across the
 * units. */

static int lanes_fit(const fnn_net *net)
{
    const fnn_layer *layers = net->layers;
    const int64_t nl = net->n_layers;
    if (net->loss == FNN_SOFTMAX_CE) {
        return 0;               /* a loss per row, not per element */
    }
    /* narrow layers only: from 8 units on, with 20 inputs, a GEMM along
     * the units (vectorized over a row) beat the lanes in our timings
     * (20 -> 8 -> 1 relu at 32 rows: 1.1 against 2.0 us), while 2 -> 4 ->
     * 1, 4 -> 8 -> 1 and 20 -> 4 -> 1 ran 1.3-3.5x faster in lanes */
    for (int64_t l = 0; l < nl; l++) {
        const fnn_layer *L = &layers[l];
        if (L->act == FNN_MAXOUT || L->act == FNN_SOFTMAX
            || (L->n_out > 4 && L->n_in * L->n_out > 64)) {
            return 0;
        }
    }
    /* x block, the layers' outputs and the two delta buffers (ws_cols), y
     * block, one accumulator per parameter */
    int64_t vecs = layers[0].n_in + net->ws_cols + layers[nl - 1].n_out
                   + net->n_params;
    return vecs <= FNN_LANES_BYTES / FNN_LANE_BYTES;
}

/* 1 if net->loss is a loss code and net->loss_param fits it. */
static int loss_ok(const fnn_net *net)
{
    const double p = net->loss_param;
    switch (net->loss) {
    case FNN_SSE:
    case FNN_MSE:
    case FNN_BCE:
    case FNN_SOFTMAX_CE:
    case FNN_MAE:
        return 1;
    case FNN_HUBER:
        return p > 0 && p <= DBL_MAX;
    case FNN_QUANTILE:
        return p > 0 && p < 1;
    default:
        return 0;
    }
}

int fnn_net_init(fnn_net *net, fnn_layer *layers)
{
    int64_t col = 0, icol = 0, maxw = 1;
    if (net->n_layers < 1 || !loss_ok(net)) {
        return -1;
    }
    net->dropout = 0;
    for (int64_t l = 0; l < net->n_layers; l++) {
        fnn_layer *L = &layers[l];
        int64_t cols = L->n_out * L->pieces;
        if (!(L->dropout >= 0 && L->dropout < 1)
            || (L->dropout > 0 && (L->act == FNN_MAXOUT
                                   || l == net->n_layers - 1))) {
            return -1;
        }
        net->dropout |= L->dropout > 0;
        if (L->n_in < 1 || L->n_out < 1 || L->pieces < 1
            || (l > 0 && L->n_in != layers[l - 1].n_out)
            || L->w_off < 0 || L->w_off + L->n_in * cols > net->n_params
            || (L->b_off >= 0 && L->b_off + cols > net->n_params)
            || (L->act != FNN_MAXOUT && L->pieces != 1)
            || (L->act == FNN_MAXOUT && L->fwd_t)
            || (L->act == FNN_SOFTMAX && l != net->n_layers - 1)) {
            return -1;
        }
        L->ws_col = col;
        col += L->n_out + (L->act == FNN_MAXOUT ? cols : 0);
        L->iws_col = icol;
        icol += L->act == FNN_MAXOUT ? L->n_out : 0;
        maxw = cols > maxw ? cols : maxw;
    }
    net->layers = layers;
    net->max_width = maxw;
    net->ws_cols = col + 2 * maxw;
    net->iws_cols = icol;
    net->lanes = lanes_fit(net);
    return 0;
}
