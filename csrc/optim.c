/* optim.c -- in-place optimizer steps over one flat parameter buffer (SGD,
 * momentum, Nesterov, Adam; L2 decay) and the finiteness check, for float
 * and double (body in optim_impl.h).  No allocation, no state. */
#include <math.h>
#include "fastnn.h"
#include "vmath.h"

#define REAL double
#define SUF(name) name##_f64
#define KSUF SUF
#define SQRT sqrt
#include "optim_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT

#define REAL float
#define SUF(name) name##_f32
#define KSUF SUF
#define SQRT sqrtf
#include "optim_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef SQRT
