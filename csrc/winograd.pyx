# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled Winograd convolution F(4x4, 3x3) and its weight gradient F(3x3, 4x4):
stride 1, dilation 1, kernels of 3x3 taps or of blocks of them.

Python twins: ``fastcnn.reference.winograd_weight``, ``winograd_conv2d``
and ``winograd_conv2d_backward``, which compute the same transforms in the
same order (bitwise) and the same products through NumPy's BLAS (to
rounding).

The output is cut into 4x4 tiles, each computed from a 6x6 tile of the
input: both tiles and the 3x3 kernel are transformed (csrc/winograd.h) so
that the convolution becomes 36 element-wise products, summed over the
input channels: 36 GEMMs ``M[t] = U[t] @ V[t]`` of the transformed weight
U[t] (F, C) with the transformed input tiles V[t] (C, tiles). That is 36
multiply-adds per 16 outputs and channel instead of 144. The weight
gradient sums the products of the same transformed input tiles with the
transformed 4x4 tiles of the output gradient over the tiles, 36 GEMMs
``D[t] @ V[t].T``, and transforms the sums into 3x3 kernels.

A larger kernel is cut into gh x gw blocks of 3x3 taps (zero past its
edges); block (a, b) convolves the input shifted by (3*a, 3*b), so that the
blocks' transformed input tiles stack as gh*gw*C channels of one GEMM (see
:func:`winograd_conv2d`).

The convolution's GEMMs multiply the same U[t] by every block's V[t]: where
the CPU has AVX2 and FMA they run gemm_simd.h's product, with the 36 U[t]
packed once per call, instead of BLAS, which would pack U[t] again for
every block (a level-0 cap, see ``_cap_simd``, keeps BLAS).

The batch is cut into blocks of tiles (a few whole samples, or a few tile
rows of one sample): a partition that depends on the sizes only. Each
block's tiles are transformed into the calling thread's scratch, multiplied
there by one GEMM per t, and
transformed back into the output (or summed, per chunk of blocks, for the
weight gradient). Blocks are spread over the OpenMP team with the GIL
released; the Python layer holds BLAS at one thread meanwhile. Every output
is computed within its block (every sum within its chunk, in block order),
so results are the same for every thread count.

A NaN or infinity spreads over whole tiles here, where a direct convolution
keeps it to the outputs whose windows hold it: each block of the
convolution reports whether one of its tiles holds a value that is not
finite (and a weight gradient shows it), and the caller then computes the
convolution directly instead.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport free
from libc.string cimport memset

from gemm cimport (blas_gemm, fcnn_gemm_level, fcnn_gemm_packed_size, gemm, own_gemm,
                   own_gemm_ld, own_gemm_pack, row_sums)
from simd cimport fcnn_set_simd_cap
from scratch cimport per_thread_scratch
from window cimport clip, end_inside, first_inside

cdef extern from "winograd.h" nogil:
    void fcnn_winograd_weight_f32(const float*, Py_ssize_t, float*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_weight_f64(const double*, Py_ssize_t, double*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_input_f32(const float*, Py_ssize_t, float*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_input_f64(const double*, Py_ssize_t, double*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_dout_f32(const float*, Py_ssize_t, float*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_dout_f64(const double*, Py_ssize_t, double*, Py_ssize_t, Py_ssize_t)
    void fcnn_winograd_output_f32(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t ds,
                                  Py_ssize_t n, int m)
    void fcnn_winograd_output_f64(const double* src, Py_ssize_t ss, double* dst, Py_ssize_t ds,
                                  Py_ssize_t n, int m)
    void fcnn_winograd_input_shifted_f32(const float* src, Py_ssize_t ss, Py_ssize_t shift,
                                         float* dst, Py_ssize_t ds, Py_ssize_t n)
    void fcnn_winograd_input_shifted_f64(const double* src, Py_ssize_t ss, Py_ssize_t shift,
                                         double* dst, Py_ssize_t ds, Py_ssize_t n)
    void fcnn_interleave4_f32(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t n,
                              const float* bias)
    void fcnn_interleave4_f64(const double* src, Py_ssize_t ss, double* dst, Py_ssize_t n,
                              const double* bias)
    void fcnn_deinterleave4_f32(const float* src, float* dst, Py_ssize_t ds, Py_ssize_t n)
    void fcnn_deinterleave4_f64(const double* src, double* dst, Py_ssize_t ds, Py_ssize_t n)
    bint fcnn_any_nonfinite_f32(const float* src, Py_ssize_t n)
    bint fcnn_any_nonfinite_f64(const double* src, Py_ssize_t n)

cdef extern from "winograd_simd.h" nogil:
    bint fcnn_winograd_wide()
    void fcnn_winograd_input_plane512_f32(const float* plane, Py_ssize_t W, Py_ssize_t hr,
                                          Py_ssize_t wr, Py_ssize_t row0, Py_ssize_t pw,
                                          Py_ssize_t tw, Py_ssize_t nt, float* scratch,
                                          float* dst, Py_ssize_t ds, Py_ssize_t ahead)
    void fcnn_winograd_input_plane512_f64(const double* plane, Py_ssize_t W, Py_ssize_t hr,
                                          Py_ssize_t wr, Py_ssize_t row0, Py_ssize_t pw,
                                          Py_ssize_t tw, Py_ssize_t nt, double* scratch,
                                          double* dst, Py_ssize_t ds, Py_ssize_t ahead)
    void fcnn_winograd_dout_plane512_f32(const float* plane, Py_ssize_t oh, Py_ssize_t ow,
                                         Py_ssize_t row0, Py_ssize_t tw, Py_ssize_t nt,
                                         float* scratch, float* dst, Py_ssize_t ds,
                                         Py_ssize_t ahead)
    void fcnn_winograd_dout_plane512_f64(const double* plane, Py_ssize_t oh, Py_ssize_t ow,
                                         Py_ssize_t row0, Py_ssize_t tw, Py_ssize_t nt,
                                         double* scratch, double* dst, Py_ssize_t ds,
                                         Py_ssize_t ahead)
    bint fcnn_winograd_output_plane512_f32(const float* src, Py_ssize_t ss, Py_ssize_t n,
                                           float* dst)
    bint fcnn_winograd_output_plane512_f64(const double* src, Py_ssize_t ss, Py_ssize_t n,
                                           double* dst)
    void fcnn_interleave4_512_f32(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t n,
                                  const float* bias)
    void fcnn_interleave4_512_f64(const double* src, Py_ssize_t ss, double* dst, Py_ssize_t n,
                                  const double* bias)


def _cap_simd(int level):
    """Cap the SIMD level at `level`, returning the previous cap: at 0, the
    convolution's products run BLAS (for the tests, which compare both)."""
    return fcnn_set_simd_cap(level)


# The one-dimensional transforms of csrc/winograd.h.
cdef enum Transform:
    WEIGHT, INPUT, DOUT, OUTPUT, DWEIGHT


cdef inline void transform(Transform kind, const floating* src, Py_ssize_t ss, floating* dst,
                           Py_ssize_t ds, Py_ssize_t n) noexcept nogil:
    """Transform `kind` of n vectors: cell k of vector j is ``src[k*ss + j]``,
    cell r of its transform goes to ``dst[r*ds + j]``."""
    if floating is float:
        if kind == OUTPUT or kind == DWEIGHT:
            fcnn_winograd_output_f32(src, ss, dst, ds, n, 4 if kind == OUTPUT else 3)
        else:
            (fcnn_winograd_weight_f32 if kind == WEIGHT else
             fcnn_winograd_input_f32 if kind == INPUT else
             fcnn_winograd_dout_f32)(src, ss, dst, ds, n)
    else:
        if kind == OUTPUT or kind == DWEIGHT:
            fcnn_winograd_output_f64(src, ss, dst, ds, n, 4 if kind == OUTPUT else 3)
        else:
            (fcnn_winograd_weight_f64 if kind == WEIGHT else
             fcnn_winograd_input_f64 if kind == INPUT else
             fcnn_winograd_dout_f64)(src, ss, dst, ds, n)


cdef inline void deinterleave4(const floating* src, floating* dst, Py_ssize_t ds,
                               Py_ssize_t n) noexcept nogil:
    if floating is float:
        fcnn_deinterleave4_f32(src, dst, ds, n)
    else:
        fcnn_deinterleave4_f64(src, dst, ds, n)


# Filters and channels of one weight-transform block.
cdef enum:
    WEIGHT_BLOCK = 4096


def winograd_weight(
    const floating[:, :, :, ::1] weight,
    floating[:, :, ::1] out not None,
    int num_threads,
):
    """winograd_weight(weight, out, num_threads) -> out

    The transformed kernels: `weight` (F, C, 3, 3) into `out` (36, F, C),
    ``out[6*r + s, f, c]`` = ``(G @ weight[f, c] @ G.T)[r, s]``.
    """
    cdef Py_ssize_t F = weight.shape[0], C = weight.shape[1], fc = F * C
    cdef Py_ssize_t blocks = (fc + WEIGHT_BLOCK - 1) // WEIGHT_BLOCK, blk, lo, n, i, r
    cdef Py_ssize_t stride = 0
    cdef const floating* w = &weight[0, 0, 0, 0]
    cdef floating* u = &out[0, 0, 0]
    # per thread: a block's 9 taps (3, 3, n), then their column transforms (6, 3, n)
    cdef floating* scratch = <floating*> per_thread_scratch(num_threads, 27 * WEIGHT_BLOCK,
                                                            sizeof(floating), &stride)
    cdef floating* taps
    cdef floating* cols
    try:
        with nogil, parallel(num_threads=num_threads):
            taps = scratch + threadid() * stride
            cols = taps + 9 * WEIGHT_BLOCK
            for blk in prange(blocks, schedule="static"):
                lo = blk * WEIGHT_BLOCK
                n = min(fc - lo, <Py_ssize_t> WEIGHT_BLOCK)
                for i in range(n):
                    for r in range(9):
                        taps[r * n + i] = w[(lo + i) * 9 + r]
                for r in range(3):  # kernel column r: its 3 rows -> 6
                    transform(WEIGHT, taps + r * n, 3 * n, cols + r * n, 3 * n, n)
                for r in range(6):  # transformed row r: its 3 columns -> 6
                    transform(WEIGHT, cols + r * 3 * n, n, u + r * 6 * fc + lo, fc, n)
    finally:
        free(scratch)
    return out.base


cdef inline void gather_rows(
    const floating* plane, floating* d, Py_ssize_t row0, Py_ssize_t count, Py_ssize_t tw,
    Py_ssize_t pw, Py_ssize_t hr, Py_ssize_t wr, Py_ssize_t W,
) noexcept nogil:
    """Rows ``[row0, row0 + count)`` of one plane, from column ``-pw`` on
    (4*tw + 4 columns), each de-interleaved into 4 phases of tw + 1 cells:
    column ``4*q + j - pw`` of row ``row0 + k`` goes to
    ``d[(4*k + j)*(tw + 1) + q]``. Cells outside rows ``[0, hr)`` and
    columns ``[0, wr)`` are zero."""
    cdef Py_ssize_t w1 = tw + 1, k, j, q, row, col, qa, qb
    cdef floating* dst
    cdef const floating* src
    # the groups of 4 columns that lie inside [0, wr) whole
    qa = clip(first_inside(-pw, 4), 0, w1)
    qb = clip(end_inside(3 - pw, 4, wr), qa, w1)
    for k in range(count):
        row = row0 + k
        dst = d + 4 * k * w1
        if row < 0 or row >= hr:
            memset(dst, 0, 4 * w1 * sizeof(floating))
            continue
        src = plane + row * W
        if qb > qa:
            deinterleave4(src + 4 * qa - pw, dst + qa, w1, qb - qa)
        for j in range(4):
            for q in range(qa):
                col = 4 * q + j - pw
                dst[j * w1 + q] = src[col] if 0 <= col < wr else 0
            for q in range(qb, w1):
                col = 4 * q + j - pw
                dst[j * w1 + q] = src[col] if 0 <= col < wr else 0


cdef inline void transform_input_plane(
    const floating* plane, floating* d, floating* e, floating* dst, Py_ssize_t ds,
    Py_ssize_t ty0, Py_ssize_t nt, Py_ssize_t tw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t hr, Py_ssize_t wr, Py_ssize_t H, Py_ssize_t W,
    bint wide,
) noexcept nogil:
    """The transformed input tiles of tile rows ``[ty0, ty0 + nt)`` of one
    (H, W) plane (as :func:`gather_rows` reads it): transformed cell t of tile
    (ty, tx) goes to ``dst[t*ds + (ty - ty0)*tw + tx]``. `d` and `e` are
    scratch of ``(4*nt + 2) * 4*(tw + 1)`` and ``6*nt * 4*(tw + 1)`` cells.
    With `wide`, by winograd_simd.h's AVX-512 kernel (into `d`)."""
    cdef Py_ssize_t w1 = tw + 1, rw = 4 * w1, ty, r
    cdef const floating* row
    if wide:
        if floating is float:
            fcnn_winograd_input_plane512_f32(plane, W, hr, wr, 4 * ty0 - ph, pw, tw, nt, d, dst,
                                             ds, H * W)
        else:
            fcnn_winograd_input_plane512_f64(plane, W, hr, wr, 4 * ty0 - ph, pw, tw, nt, d, dst,
                                             ds, H * W)
        return
    gather_rows(plane, d, 4 * ty0 - ph, 4 * nt + 2, tw, pw, hr, wr, W)
    for ty in range(nt):  # the columns of each tile row
        transform(INPUT, d + 4 * ty * rw, rw, e + ty * rw, nt * rw, rw)
    for r in range(6):    # then each row of the tiles, from its 4 phases
        for ty in range(nt):
            # cell 4*tx + k of the row: phase k % 4, tile tx + k // 4
            row = e + r * nt * rw + ty * rw
            if floating is float:
                fcnn_winograd_input_shifted_f32(row, w1, 1, dst + r * 6 * ds + ty * tw, ds, tw)
            else:
                fcnn_winograd_input_shifted_f64(row, w1, 1, dst + r * 6 * ds + ty * tw, ds, tw)


# Tiles a block's planes must hold for winograd_simd.h's AVX-512 kernels to
# transform them: with fewer, most lanes idle and the portable loops are
# faster.
cdef Py_ssize_t WIDE_MIN_TILES = 16


def _wide_min_tiles(Py_ssize_t tiles):
    """Set ``WIDE_MIN_TILES``, returning the previous value: for the tests,
    which compare the AVX-512 transforms with the portable ones bit for bit
    on planes of every size."""
    global WIDE_MIN_TILES
    previous = WIDE_MIN_TILES
    WIDE_MIN_TILES = tiles
    return previous


cdef bint winograd_wide(Py_ssize_t rows, Py_ssize_t tw) noexcept nogil:
    """Whether winograd_simd.h's AVX-512 kernels transform the tiles of
    blocks of `rows` tile rows of `tw` tiles (where the CPU has AVX-512)."""
    return fcnn_winograd_wide() and rows * tw >= WIDE_MIN_TILES


cdef void transform_input_block(
    const floating* x, Py_ssize_t samples, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    floating* d, floating* e, floating* V, Py_ssize_t ld, Py_ssize_t ty0, Py_ssize_t nt,
    Py_ssize_t tw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t gh,
    Py_ssize_t gw, bint wide,
) noexcept nogil:
    """A block's V (36, gh*gw*C, P), P = samples*nt*tw, rows `ld` cells apart:
    the transformed input tiles of tile rows ``[ty0, ty0 + nt)`` of `samples`
    (C, H, W) samples from `x` on, sample by sample, for each of the gh x gw
    3x3 blocks of the kernel (see :func:`winograd_conv2d`): block (a, b)
    reads channel c with padding (ph - 3*a, pw - 3*b) into row
    ``(a*gw + b)*C + c`` (scratch `d` and `e` as :func:`transform_input_plane`)."""
    cdef Py_ssize_t n = nt * tw, cv = gh * gw * C, s, g, c, bh, bw
    for s in range(samples):
        for g in range(gh * gw):
            bh, bw = ph - 3 * (g // gw), pw - 3 * (g % gw)
            for c in range(C):
                # the cells a direct 3x3 convolution reads: the rest of a tile is zero
                transform_input_plane(x + (s * C + c) * H * W, d, e, V + (g * C + c) * ld + s * n,
                                      cv * ld, ty0, nt, tw, bh, bw, min(H, oh + 2 - bh),
                                      min(W, ow + 2 - bw), H, W, wide)


cdef inline void transform_dout_plane(
    const floating* plane, floating* d, floating* e, floating* dst, Py_ssize_t ds,
    Py_ssize_t ty0, Py_ssize_t nt, Py_ssize_t tw, Py_ssize_t oh, Py_ssize_t ow, bint wide,
) noexcept nogil:
    """The transformed 4x4 tiles of tile rows ``[ty0, ty0 + nt)`` of one
    output-gradient plane (cells past its edges are zero): transformed cell
    t of tile (ty, tx) goes to ``dst[t*ds + (ty - ty0)*tw + tx]``. `d` and
    `e` are scratch of ``16*nt*tw`` and ``24*nt*tw`` cells. With `wide`, by
    winograd_simd.h's AVX-512 kernel (into `d`)."""
    cdef Py_ssize_t n = nt * tw, whole = ow // 4, k, j, q, r, row
    cdef floating* to
    cdef const floating* src
    if wide:
        if floating is float:
            fcnn_winograd_dout_plane512_f32(plane, oh, ow, 4 * ty0, tw, nt, d, dst, ds, oh * ow)
        else:
            fcnn_winograd_dout_plane512_f64(plane, oh, ow, 4 * ty0, tw, nt, d, dst, ds, oh * ow)
        return
    # row i of tile row ty, phase j (its columns 4*q + j) -> d[((4*i + j)*nt + ty)*tw + q]
    for k in range(4 * nt):
        row = 4 * ty0 + k
        to = d + (4 * (k % 4) * nt + k // 4) * tw
        if row >= oh:
            for j in range(4):
                memset(to + j * n, 0, tw * sizeof(floating))
            continue
        src = plane + row * ow
        deinterleave4(src, to, n, whole)
        for j in range(4):
            for q in range(whole, tw):
                to[j * n + q] = src[4 * q + j] if 4 * q + j < ow else 0
    transform(DOUT, d, 4 * n, e, 4 * n, 4 * n)  # the columns of each tile
    for r in range(6):                  # then each row
        transform(DOUT, e + r * 4 * n, n, dst + r * 6 * ds, ds, n)


cdef inline bint output_tiles(
    const floating* src, Py_ssize_t ss, Py_ssize_t n, floating* d, floating* e, bint wide,
) noexcept nogil:
    """The output tiles of one plane from its products, product t of tile k
    at ``src[t*ss + k]`` (n tiles): cell (i, j) of tile k goes to
    ``e[(4*i + j)*n + k]`` (`d`: scratch of 24*n cells). Returns whether one
    of them is not finite. With `wide`, by winograd_simd.h's AVX-512 kernel."""
    cdef Py_ssize_t r
    if wide:
        if floating is float:
            return fcnn_winograd_output_plane512_f32(src, ss, n, e)
        else:
            return fcnn_winograd_output_plane512_f64(src, ss, n, e)
    for r in range(6):                              # rows of each tile
        transform(OUTPUT, src + r * 6 * ss, ss, d + r * 4 * n, n, n)
    transform(OUTPUT, d, 4 * n, e, 4 * n, 4 * n)    # then columns
    if floating is float:
        return fcnn_any_nonfinite_f32(e, 16 * n)
    else:
        return fcnn_any_nonfinite_f64(e, 16 * n)


cdef inline void scatter_tiles(
    const floating* y, floating* plane, const floating* bias,
    Py_ssize_t ty0, Py_ssize_t ty1, Py_ssize_t tw, Py_ssize_t oh, Py_ssize_t ow, bint wide,
) noexcept nogil:
    """Write output tiles of tile rows ``[ty0, ty1)`` to one output plane,
    plus ``*bias`` (if not NULL): cell (i, j) of tile (ty, tx) is
    ``y[(4*i + j)*n + (ty - ty0)*tw + tx]`` (n tiles); cells past the
    plane's edges are dropped. With `wide`, the whole tiles of a row by
    winograd_simd.h's AVX-512 interleave."""
    cdef Py_ssize_t n = (ty1 - ty0) * tw, i, j, ty, row, whole = ow // 4, tx
    cdef floating* dst
    cdef const floating* src
    for i in range(4):
        for ty in range(ty0, ty1):
            row = 4 * ty + i
            if row >= oh:
                break
            src = y + 4 * i * n + (ty - ty0) * tw
            dst = plane + row * ow
            if floating is float:
                (fcnn_interleave4_512_f32 if wide else fcnn_interleave4_f32)(src, n, dst, whole,
                                                                             bias)
            else:
                (fcnn_interleave4_512_f64 if wide else fcnn_interleave4_f64)(src, n, dst, whole,
                                                                             bias)
            for j in range(ow - 4 * whole):  # the last, partial tile
                dst[4 * whole + j] = src[j * n + whole] + bias[0] if bias else src[j * n + whole]


cdef Py_ssize_t kernel_blocks(Py_ssize_t C, Py_ssize_t cells, Py_ssize_t gw,
                              Py_ssize_t per) except -1:
    """gh of the gh x gw blocks of 3x3 taps whose C channels of `per` cells
    each make the `cells` cells of a (transformed) kernel (see
    :func:`winograd_conv2d`)."""
    if gw < 1 or C < 1 or cells < 1 or cells % (gw * C * per):
        raise ValueError(f"kernels of {cells} cells are not rows of gw={gw} blocks "
                         f"of {C} channels of {per}")
    return cells // (gw * C * per)


def winograd_conv2d(
    const floating[:, :, :, ::1] x,
    const floating[:, :, ::1] u,
    const floating[::1] bias,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t gw,
    Py_ssize_t samples, Py_ssize_t rows,
    floating[:, :, :, ::1] out not None,
    unsigned char[::1] nonfinite not None,
    int num_threads,
):
    """winograd_conv2d(x, u, bias, ph, pw, gw, samples, rows, out, nonfinite, num_threads) -> out

    The convolution of `x` (N, C, H, W) with the kernels of gh x gw blocks
    of 3x3 taps whose transform (:func:`winograd_weight`) is `u`
    (36, F, gh*gw*C), stride 1, top/left padding (ph, pw) (negative: that
    many rows/columns cropped), plus `bias` (F,) or empty for none, into
    `out` (N, F, oh, ow). Block (a, b) holds taps ``[3*a, 3*a + 3)`` x
    ``[3*b, 3*b + 3)`` of the kernels, its channel c at ``(a*gw + b)*C + c``:
    the sum over blocks of their 3x3 convolutions, each of the input with
    padding (ph - 3*a, pw - 3*b), is the whole kernel's.

    Blocks: samples ``[g*samples, (g+1)*samples)`` and tile rows
    ``[b*rows, (b+1)*rows)`` of them (``rows`` is all tile rows when
    ``samples > 1``), block ``g*ceil(ceil(oh/4)/rows) + b``. ``nonfinite``
    (one per block) is set to 1 where a block read or wrote a NaN or an
    infinity (then `out` holds what Winograd gave), else 0. Every GEMM
    dimension fits in a C int (checked by the caller).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = u.shape[1], cv = u.shape[2], oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t gh = kernel_blocks(C, cv, gw, 1)
    cdef Py_ssize_t th = (oh + 3) // 4, tw = (ow + 3) // 4
    cdef Py_ssize_t row_blocks = (th + rows - 1) // rows
    cdef Py_ssize_t items = (N + samples - 1) // samples * row_blocks
    cdef Py_ssize_t most = samples * rows * tw  # tiles of a block
    cdef Py_ssize_t cells = (24 * rows + 8) * (tw + 1)
    cdef Py_ssize_t stride = 0, it, n0, n1, ty0, ty1, nt, n, P, s, f, t
    cdef bint has_bias = bias.shape[0] > 0, bad, own = fcnn_gemm_level() > 0
    cdef bint wide = winograd_wide(rows, tw)
    # gemm_simd.h reads V[t] in rows of whole panels (see fcnn_gemm_ld_*);
    # BLAS, in rows of a block's P tiles
    cdef Py_ssize_t most_ld = own_gemm_ld(most, <floating*> NULL) if own else most, ld
    cdef Py_ssize_t packed_u = fcnn_gemm_packed_size(F, cv)
    cdef floating* packed = NULL
    cdef floating* scratch = NULL
    cdef floating* V
    cdef floating* M
    cdef floating* d
    cdef floating* e
    try:
        scratch = <floating*> per_thread_scratch(
            num_threads, 36 * (cv * most_ld + F * most) + 2 * cells, sizeof(floating), &stride)
        if own:  # the 36 U[t], once for every block's products
            packed = own_gemm_pack(&u[0, 0, 0], cv, F, cv, 36, F * cv)
        with nogil, parallel(num_threads=num_threads):
            V = scratch + threadid() * stride  # (36, cv, P), rows ld apart
            M = V + 36 * cv * most_ld          # (36, F, P)
            # one plane's rows, de-interleaved (4*nt + 2, 4, w1); then (6, 4, n)
            d = M + 36 * F * most
            # their columns' transform (6, nt, 4, w1); then the output tiles (4, 4, n)
            e = d + cells
            for it in prange(items, schedule="static"):
                n0 = it // row_blocks * samples
                n1 = min(N, n0 + samples)
                ty0 = it % row_blocks * rows
                ty1 = min(th, ty0 + rows)
                nt = ty1 - ty0
                n = nt * tw
                P = (n1 - n0) * n
                bad = False
                ld = most_ld if own else P
                transform_input_block(&x[n0, 0, 0, 0], n1 - n0, C, H, W, d, e, V, ld, ty0, nt,
                                      tw, ph, pw, oh, ow, gh, gw, wide)
                for t in range(36):
                    if own:
                        own_gemm(F, P, cv, packed + t * packed_u, V + t * cv * ld, ld, NULL,
                                 M + t * F * P, P)
                    else:
                        gemm("N", "N", P, F, cv, V + t * cv * ld, ld, &u[t, 0, 0], cv,
                             M + t * F * P, P)
                for s in range(n1 - n0):
                    for f in range(F):
                        bad = output_tiles(M + f * P + s * n, F * P, n, d, e, wide) or bad
                        scatter_tiles(e, &out[n0 + s, f, 0, 0], &bias[f] if has_bias else NULL,
                                      ty0, ty1, tw, oh, ow, wide)
                nonfinite[it] = bad
    finally:
        free(scratch)
        free(packed)
    return out.base


# Kernels of one block of the weight gradient's final transform.
cdef enum:
    DWEIGHT_BLOCK = 512


def winograd_conv2d_backward(
    const floating[:, :, :, ::1] dout,
    const floating[:, :, :, ::1] x,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t gw,
    Py_ssize_t samples, Py_ssize_t rows, Py_ssize_t chunk,
    floating[:, :, ::1] dweight_parts not None,
    floating[:, ::1] dbias_parts not None,
    int num_threads,
):
    """winograd_conv2d_backward(dout, x, ph, pw, gw, samples, rows, chunk, dweight_parts,
    dbias_parts, num_threads) -> dweight_parts

    The weight and bias gradients of :func:`winograd_conv2d` (whose input
    was `x` (N, C, H, W), its kernels gh x gw blocks of 3x3 taps) from
    `dout` (N, F, oh, ow), by Winograd's F(3x3, 4x4): the transformed 6x6
    input tiles (as the forward's) times the transformed 4x4 tiles of dout,
    summed over the tiles by 36 GEMMs ``M[t] = D[t] @ V[t].T`` per block,
    then transformed into 3x3 kernels.

    Blocks as :func:`winograd_conv2d`'s; the blocks of groups
    ``[p*chunk, (p+1)*chunk)`` of `samples` samples form chunk p, which sums
    them in order into ``dweight_parts[p]`` (F, gh*gw*C*9), the 3x3 blocks
    in the order of the forward's `u`, and ``dbias_parts[p]`` (F,). Every
    GEMM dimension fits in a C int (checked by the caller).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t gh = kernel_blocks(C, dweight_parts.shape[2], gw, 9), cv = gh * gw * C
    cdef Py_ssize_t fc = F * cv
    cdef Py_ssize_t th = (oh + 3) // 4, tw = (ow + 3) // 4
    cdef Py_ssize_t row_blocks = (th + rows - 1) // rows, groups = (N + samples - 1) // samples
    cdef Py_ssize_t parts = dweight_parts.shape[0]
    cdef Py_ssize_t most = samples * rows * tw, length = min(oh, 4 * rows) * ow
    cdef Py_ssize_t cells = (24 * rows + 8) * (tw + 1)
    cdef Py_ssize_t stride = 0, p, g, b, n0, n1, ty0, ty1, nt, n, P, s, f, t, r, i, j
    cdef Py_ssize_t blk, lo, nb
    cdef bint first, wide = winograd_wide(rows, tw)
    # per thread: V, D, the chunk's sums M, two scratch areas, ones for the bias sums
    cdef floating* scratch = <floating*> per_thread_scratch(
        num_threads, 36 * (cv + F) * most + 36 * fc + 2 * max(cells, 27 * DWEIGHT_BLOCK) + length,
        sizeof(floating), &stride)
    cdef floating* V
    cdef floating* D
    cdef floating* M
    cdef floating* d
    cdef floating* e
    cdef floating* ones
    cdef floating* dw
    try:
        with nogil, parallel(num_threads=num_threads):
            V = scratch + threadid() * stride      # (36, cv, P)
            D = V + 36 * cv * most                 # (36, F, P)
            M = D + 36 * F * most                  # (36, F, cv)
            d = M + 36 * fc
            e = d + max(cells, 27 * DWEIGHT_BLOCK)
            ones = e + max(cells, 27 * DWEIGHT_BLOCK)
            for i in range(length):
                ones[i] = 1
            for p in prange(parts, schedule="static"):
                first = True
                for g in range(p * chunk, min(groups, (p + 1) * chunk)):
                    for b in range(row_blocks):
                        n0 = g * samples
                        n1 = min(N, n0 + samples)
                        ty0 = b * rows
                        ty1 = min(th, ty0 + rows)
                        nt = ty1 - ty0
                        n = nt * tw
                        P = (n1 - n0) * n
                        transform_input_block(&x[n0, 0, 0, 0], n1 - n0, C, H, W, d, e, V, P,
                                              ty0, nt, tw, ph, pw, oh, ow, gh, gw, wide)
                        for s in range(n1 - n0):
                            for f in range(F):
                                transform_dout_plane(&dout[n0 + s, f, 0, 0], d, e,
                                                     D + f * P + s * n, F * P, ty0, nt, tw, oh, ow,
                                                     wide)
                            # the bias gradient: sums of the block's rows of dout
                            row_sums(F, (min(oh, 4 * ty1) - 4 * ty0) * ow,
                                     &dout[n0 + s, 0, 4 * ty0, 0], oh * ow, ones,
                                     0 if first else 1, &dbias_parts[p, 0])
                            first = False
                        for t in range(36):  # M[t] (F, cv) += D[t] @ V[t].T
                            blas_gemm("T", "N", cv, F, P, V + t * cv * P, P, D + t * F * P, P,
                                      0 if g == p * chunk and b == 0 else 1, M + t * fc, cv)
                # M -> 3x3 kernels, DWEIGHT_BLOCK (filter, channel) pairs at a time
                for blk in range((fc + DWEIGHT_BLOCK - 1) // DWEIGHT_BLOCK):
                    lo = blk * DWEIGHT_BLOCK
                    nb = min(fc - lo, <Py_ssize_t> DWEIGHT_BLOCK)
                    for r in range(6):  # the columns of each transformed row r: 6 -> 3
                        transform(DWEIGHT, M + r * 6 * fc + lo, fc, d + r * 3 * nb, nb, nb)
                    transform(DWEIGHT, d, 3 * nb, e, 3 * nb, 3 * nb)  # then the rows
                    dw = &dweight_parts[p, 0, 0] + lo * 9
                    for j in range(nb):
                        for t in range(9):
                            dw[j * 9 + t] = e[t * nb + j]
    finally:
        free(scratch)
    return dweight_parts.base
