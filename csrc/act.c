/* act.c -- fused bias + activation forward/backward, maxout and softmax,
 * for float and double (bodies in act_impl.h).  No allocation, no global
 * state; vectorized through vmath.h with run-time CPU dispatch. */
#include <stddef.h>
#include "fastnn.h"
#include "vmath.h"

#define REAL double
#define SUF(name) name##_f64
#define KSUF SUF
#include "act_impl.h"
#undef REAL
#undef SUF
#undef KSUF

#define REAL float
#define SUF(name) name##_f32
#define KSUF SUF
#include "act_impl.h"
#undef REAL
#undef SUF
#undef KSUF
