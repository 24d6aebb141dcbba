/* inline.h -- how net.c and train.c compile the kernel bodies (*_impl.h)
 * a second time: as always-inline static functions (suffix _in, KSUF), so
 * that a whole network step, and the fit loop of the small-network step,
 * are each one function per CPU target with no calls left inside (for a
 * 2 -> 4 -> 1 network the calls would cost more than the arithmetic).
 * Include after fastnn.h, before the bodies. */
#ifndef FASTNN_INLINE_H
#define FASTNN_INLINE_H

#define FNN_INLINE static inline __attribute__((always_inline))
#define FNN_VEC FNN_INLINE
#define FNN_FN FNN_INLINE
#define FNN_FN_STATIC FNN_INLINE
#define FNN_VEC_STATIC FNN_INLINE
#include "vmath.h"

/* The small-network step (lanes_impl.h) holds LANES rows of the minibatch
 * in one vector of this many bytes. */
#define FNN_LANE_BYTES 32

/* Activation applied in the forward pass of the last layer: when the loss
 * is fused with it (bce/sigmoid, softmax_ce/softmax) training stops at the
 * logits. */
static inline int fnn_out_act(const fnn_net *net, int predict)
{
    int act = net->layers[net->n_layers - 1].act;
    if (!predict && (net->loss == FNN_BCE || net->loss == FNN_SOFTMAX_CE)) {
        return FNN_IDENTITY;
    }
    return act;
}

#endif /* FASTNN_INLINE_H */
