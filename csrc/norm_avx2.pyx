# norm.pyx compiled with AVX2 enabled (see setup.py's SIMD_KERNELS).
include "norm.pyx"
