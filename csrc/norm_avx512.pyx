# norm.pyx compiled with AVX-512F enabled (see setup.py's SIMD_KERNELS).
include "norm.pyx"
