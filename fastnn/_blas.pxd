# _blas.pxd -- the process-wide BLAS binding other Cython modules use.
from fastnn._kernels cimport fnn_blas

cdef const fnn_blas *blas_handle() noexcept nogil
