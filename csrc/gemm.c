/* gemm.c -- row-major GEMM over the BLAS handed in by the caller (fnn_blas:
 * ILP64 or LP64 CBLAS, or Fortran BLAS), with built-in loops for tiny
 * shapes.  Links no BLAS itself: the Python layer finds the one numpy
 * uses and passes its function pointers. */
#include <stddef.h>
#include <string.h>
#include "fastnn.h"
#include "vmath.h"


#define REAL double
#define SUF(name) name##_f64
#define KSUF SUF
#define BLAS_MEMBER dgemm
#include "gemm_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef BLAS_MEMBER

#define REAL float
#define SUF(name) name##_f32
#define KSUF SUF
#define BLAS_MEMBER sgemm
#include "gemm_impl.h"
#undef REAL
#undef SUF
#undef KSUF
#undef BLAS_MEMBER
