# The zero-padded copy of a sample that the direct kernels (direct.pyx) and
# the GEMM driver's implicit forward (conv.pyx) read taps from: its layout is
# described in direct_simd.h (rows of column phases; tap (c, i, j) one offset
# from the start of an output row's data).

from cython cimport floating
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport malloc


cdef extern from "direct_simd.h" nogil:
    void fcnn_direct_pad_f32(const float* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t R, Py_ssize_t sw,
                             Py_ssize_t pw, Py_ssize_t PW, float* s)
    void fcnn_direct_pad_f64(const double* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t R, Py_ssize_t sw,
                             Py_ssize_t pw, Py_ssize_t PW, double* s)


cdef inline Py_ssize_t padded_width(Py_ssize_t ow, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw,
                                    Py_ssize_t seg) noexcept nogil:
    """Cells per column phase of a scratch row: whole segments of outputs,
    plus the reach of the widest tap."""
    return (ow + seg - 1) // seg * seg + (kw - 1) * dw // sw


cdef inline ptrdiff_t* tap_offsets(Py_ssize_t C, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t R,
                                   Py_ssize_t PW) except NULL:
    """Offset of tap (c, i, j) (at index (c*kh + i)*kw + j) from the start of
    an output row's data in the scratch. Free it with ``free``."""
    cdef ptrdiff_t* offs = <ptrdiff_t*> malloc(max(C * kh * kw, 1) * sizeof(ptrdiff_t))
    if offs == NULL:
        raise MemoryError("cannot allocate the tap offsets")
    cdef Py_ssize_t c, i, j
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                offs[(c * kh + i) * kw + j] = ((c * R + i * dh) * sw + j * dw % sw) * PW + j * dw // sw
    return offs


cdef inline void pad_rows(const floating* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t R, Py_ssize_t sw,
                          Py_ssize_t pw, Py_ssize_t PW, floating* s) noexcept nogil:
    """Input rows ``[row0, row0 + rows)`` of the C planes, zero-padded, into
    the scratch at `s` (R rows per channel; see fcnn_direct_pad_*)."""
    if floating is float:
        fcnn_direct_pad_f32(x, C, H, W, row0, rows, R, sw, pw, PW, s)
    else:
        fcnn_direct_pad_f64(x, C, H, W, row0, rows, R, sw, pw, PW, s)


cdef struct Bands:
    Py_ssize_t rows   # output rows per band (the last band may have fewer)
    Py_ssize_t count  # bands per sample
    Py_ssize_t R      # padded input rows per band: what its windows reach


cdef inline Bands banded(Py_ssize_t oh, Py_ssize_t most, Py_ssize_t kh, Py_ssize_t sh,
                         Py_ssize_t dh) noexcept nogil:
    """A sample's `oh` output rows in bands of at most `most` rows."""
    cdef Bands b
    b.rows = min(oh, most)
    b.count = (oh + b.rows - 1) // b.rows
    b.R = (b.rows - 1) * sh + (kh - 1) * dh + 1
    return b


cdef struct Band:
    Py_ssize_t n, y0, y1  # sample, output rows [y0, y1)


cdef inline Band band_of(const Bands* b, Py_ssize_t item, Py_ssize_t oh) noexcept nogil:
    """Work item `item` of a batch's (sample, band) items, samples outer."""
    cdef Band band
    band.n = item // b.count
    band.y0 = item % b.count * b.rows
    band.y1 = min(oh, band.y0 + b.rows)
    return band


cdef inline void pad_band(const floating* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          const Bands* b, Band band, Py_ssize_t kh, Py_ssize_t sh,
                          Py_ssize_t ph, Py_ssize_t dh, Py_ssize_t sw, Py_ssize_t pw,
                          Py_ssize_t PW, floating* s) noexcept nogil:
    """Pad the input rows that `band`'s output rows read from its sample at
    `x` (see pad_rows)."""
    pad_rows(x, C, H, W, band.y0 * sh - ph, (band.y1 - band.y0 - 1) * sh + (kh - 1) * dh + 1,
             b.R, sw, pw, PW, s)
