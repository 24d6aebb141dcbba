/* loss.c -- fused loss value + output gradient in one pass per row, for
 * float and double (body in loss_impl.h): sse, mse, stable bce from
 * logits, stable softmax cross-entropy.  No allocation, no state. */
#include <math.h>
#include <stddef.h>
#include "fastnn.h"
#include "vmath.h"

#define REAL double
#define SUF(name) name##_f64
#define KSUF SUF
#include "loss_impl.h"
#undef REAL
#undef SUF
#undef KSUF

#define REAL float
#define SUF(name) name##_f32
#define KSUF SUF
#include "loss_impl.h"
#undef REAL
#undef SUF
#undef KSUF
