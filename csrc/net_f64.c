/* net_f64.c -- a whole network's forward pass and its fused loss +
 * backward (+ SGD) step in double, composed only of the kernels in act.c,
 * loss.c, optim.c and gemm.c.  Caller-owned workspace (layout in
 * net_impl.h); no allocation.  Every kernel body is included here again as
 * an always-inline function (inline.h), so each CPU clone of
 * fnn_net_forward / fnn_net_loss_grad is one function with the kernels
 * compiled for that CPU.  One file per dtype, so the two compile in
 * parallel. */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "fastnn.h"
#include "inline.h"

#define REAL double
#define SUF(name) name##_f64
#define KSUF(name) name##_f64_in
#define BLAS_MEMBER dgemm
#define SQRT sqrt
#define LANE_INT int64_t
#define LANE_N 4
#include "gemm_impl.h"
#include "act_impl.h"
#include "loss_impl.h"
#include "optim_impl.h"
#include "lanes_impl.h"
#include "net_impl.h"
