# activation.pyx compiled with AVX2 enabled (see setup.py's AVX2_KERNELS).
include "activation.pyx"
