# activation.pyx compiled with AVX2 enabled (see setup.py's SIMD_KERNELS).
include "activation.pyx"
