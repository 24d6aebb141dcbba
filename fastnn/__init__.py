"""fastnn: dense neural networks trained fast on the CPU."""
from fastnn._blas import blas_info, use_blas
