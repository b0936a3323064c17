# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled direct convolution for layers of few input channels: forward,
and the weight and bias gradients.

Python twins: ``fastcnn.reference.conv2d_direct_forward`` and
``conv2d_direct_backward``.

Where C*kh*kw is small (a network's first layer: C = 1 or 3), the GEMM of
the im2col driver (csrc/conv.pyx) has a thin inner dimension and the
unfolding costs as much as the products. These kernels copy each sample's
input once into a zero-padded per-thread scratch and accumulate every tap
in registers (``direct_simd.h`` describes the layout and the blocking).
groups = 1 only; the Python layer decides where they run.

The forward spreads (sample, band of output rows) items over the OpenMP
team; each output is summed in a fixed order, so the split does not matter.
The weight gradient goes as the GEMM driver's: the caller's chunks of
samples (a partition of the batch that depends on the sizes only), each
summing its samples in order into its own slot of ``dweight_parts`` /
``dbias_parts``, which the caller adds in chunk order.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from padded cimport Band, Bands, band_of, banded, pad_band, pad_rows, padded_width, tap_offsets
from scratch cimport per_thread_scratch
from simd cimport fcnn_set_simd_cap


cdef extern from "direct_simd.h" nogil:
    const Py_ssize_t FCNN_DIRECT_SEG_F32, FCNN_DIRECT_SEG_F64
    int fcnn_direct_level()
    void fcnn_direct_pack_f32(const float* w, Py_ssize_t F, Py_ssize_t K, float* wp)
    void fcnn_direct_pack_f64(const double* w, Py_ssize_t F, Py_ssize_t K, double* wp)
    void fcnn_direct_row_at_f32(bint simd, const float* base, const ptrdiff_t* offs, Py_ssize_t K,
                                const float* w, const float* bias, Py_ssize_t F, float* out,
                                Py_ssize_t L, Py_ssize_t ow)
    void fcnn_direct_row_at_f64(bint simd, const double* base, const ptrdiff_t* offs,
                                Py_ssize_t K, const double* w, const double* bias, Py_ssize_t F,
                                double* out, Py_ssize_t L, Py_ssize_t ow)
    void fcnn_direct_wgrad_at_f32(bint simd, const float* xs, const ptrdiff_t* offs, Py_ssize_t K,
                                  const float* d, Py_ssize_t F, Py_ssize_t oh, Py_ssize_t ow,
                                  Py_ssize_t rstep, float* dw, float* db)
    void fcnn_direct_wgrad_at_f64(bint simd, const double* xs, const ptrdiff_t* offs,
                                  Py_ssize_t K, const double* d, Py_ssize_t F, Py_ssize_t oh,
                                  Py_ssize_t ow, Py_ssize_t rstep, double* dw, double* db)


# Output rows per forward work item: enough items to share a small batch
# between threads, and a band's padded input stays in the first-level cache.
cdef Py_ssize_t BAND_ROWS = 8


def _cap_simd(int level):
    """Use SIMD kernels up to `level` (0 none, 1 AVX2); returns the previous cap.

    For the tests, which run every instruction set the machine has. The
    forward gives the same bits at every level, the weight gradient the
    same to rounding.
    """
    return fcnn_set_simd_cap(level)


def _simd_level():
    """1 where the AVX2 kernels run here, else 0 (see :func:`_cap_simd`)."""
    return fcnn_direct_level()


def conv2d_direct_forward(
    const floating[:, :, :, ::1] x,
    const floating[:, ::1] weight,
    const floating[::1] bias,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """conv2d_direct_forward(x, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out,
    num_threads) -> out

    `weight` is (F, C*kh*kw), `bias` (F,) or empty for none, `out` (N, F, oh, ow).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = weight.shape[0], K = weight.shape[1], L = oh * ow
    cdef bint simd = fcnn_direct_level() > 0
    cdef Py_ssize_t seg = FCNN_DIRECT_SEG_F32 if floating is float else FCNN_DIRECT_SEG_F64
    cdef Py_ssize_t PW = padded_width(ow, kw, sw, dw, seg)
    cdef Bands bands = banded(oh, BAND_ROWS, kh, sh, dh)
    cdef Band band
    cdef Py_ssize_t stride = 0, item, y
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* scratch = NULL
    cdef floating* packed = NULL
    cdef const floating* w = &weight[0, 0]
    cdef ptrdiff_t* offs = NULL
    cdef floating* s
    cdef floating* base
    try:
        scratch = <floating*> per_thread_scratch(num_threads, C * bands.R * sw * PW,
                                                 sizeof(floating), &stride)
        offs = tap_offsets(C, kh, kw, sw, dh, dw, bands.R, PW)
        if simd:
            packed = <floating*> malloc(F * K * sizeof(floating))
            if packed == NULL:
                raise MemoryError("cannot allocate the packed weights")
            if floating is float:
                fcnn_direct_pack_f32(w, F, K, packed)
            else:
                fcnn_direct_pack_f64(w, F, K, packed)
            w = packed
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            for item in prange(N * bands.count, schedule="static"):
                band = band_of(&bands, item, oh)
                pad_band(&x[band.n, 0, 0, 0], C, H, W, &bands, band, kh, sh, ph, dh, sw, pw, PW, s)
                for y in range(band.y0, band.y1):
                    base = s + (y - band.y0) * sh * sw * PW
                    if floating is float:
                        fcnn_direct_row_at_f32(simd, base, offs, K, w, b, F,
                                               &out[band.n, 0, y, 0], L, ow)
                    else:
                        fcnn_direct_row_at_f64(simd, base, offs, K, w, b, F,
                                               &out[band.n, 0, y, 0], L, ow)
    finally:
        free(scratch)
        free(packed)
        free(offs)
    return out.base


def conv2d_direct_backward(
    const floating[:, :, :, ::1] dout,
    const floating[:, :, :, ::1] x,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t chunk,
    floating[:, :, ::1] dweight_parts not None,
    floating[:, ::1] dbias_parts not None,
    int num_threads,
):
    """conv2d_direct_backward(dout, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, chunk,
    dweight_parts, dbias_parts, num_threads) -> dweight_parts

    Samples ``[p*chunk, (p+1)*chunk)`` form chunk p: their weight gradient
    (F, C*kh*kw) and bias gradient (F,) are summed, sample by sample in
    order, into ``dweight_parts[p]`` and ``dbias_parts[p]``.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], K = C * kh * kw, parts = dweight_parts.shape[0]
    cdef bint simd = fcnn_direct_level() > 0
    cdef Py_ssize_t seg = FCNN_DIRECT_SEG_F32 if floating is float else FCNN_DIRECT_SEG_F64
    cdef Py_ssize_t PW = padded_width(ow, kw, sw, dw, seg)
    cdef Py_ssize_t R = (oh - 1) * sh + (kh - 1) * dh + 1, rstep = sh * sw * PW
    cdef Py_ssize_t stride = 0, p, n, i
    cdef floating* scratch = NULL
    cdef ptrdiff_t* offs = NULL
    cdef floating* s
    cdef floating* dw1
    cdef floating* db1
    cdef floating* pw_dw
    cdef floating* pw_db
    try:
        # per thread: the padded sample, one sample's dweight and dbias
        scratch = <floating*> per_thread_scratch(num_threads, C * R * sw * PW + F * K + F,
                                                 sizeof(floating), &stride)
        offs = tap_offsets(C, kh, kw, sw, dh, dw, R, PW)
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            dw1 = s + C * R * sw * PW
            db1 = dw1 + F * K
            for p in prange(parts, schedule="static"):
                pw_dw = &dweight_parts[p, 0, 0]
                pw_db = &dbias_parts[p, 0]
                for n in range(p * chunk, min(N, (p + 1) * chunk)):
                    pad_rows(&x[n, 0, 0, 0], C, H, W, -ph, R, R, sw, pw, PW, s)
                    if floating is float:
                        fcnn_direct_wgrad_at_f32(simd, s, offs, K, &dout[n, 0, 0, 0], F, oh, ow,
                                                 rstep, dw1, db1)
                    else:
                        fcnn_direct_wgrad_at_f64(simd, s, offs, K, &dout[n, 0, 0, 0], F, oh, ow,
                                                 rstep, dw1, db1)
                    if n == p * chunk:
                        memcpy(pw_dw, dw1, F * K * sizeof(floating))
                        memcpy(pw_db, db1, F * sizeof(floating))
                    else:
                        for i in range(F * K):
                            pw_dw[i] += dw1[i]
                        for i in range(F):
                            pw_db[i] += db1[i]
    finally:
        free(scratch)
        free(offs)
    return dweight_parts.base
