# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled GEMM drivers: conv2d and linear (Dense), forward and backward.

Python twins: ``fastcnn.reference.conv2d_forward``, ``conv2d_backward``,
``linear_forward`` and ``linear_backward``, which make the same BLAS calls
through NumPy in the same order.

A convolution goes sample by sample: each sample is unfolded (im2col) into
the calling thread's scratch columns, which stay in cache for its GEMMs,
one per group, through ``scipy.linalg.cython_blas``; the forward's, where
the CPU has AVX2 and FMA, through ``gemm_simd.h`` instead, which packs the
filters once per call rather than once per sample (a level-0 cap, see
``_cap_simd``, makes it call BLAS); with AVX-512, on rows wide enough, the
forward reads the taps from a zero-padded copy of the sample instead of its
unfolded columns (fcnn_gemm_implicit_*; the same sums), or, on rows that
fill its vectors poorly, puts the filters in the lanes (lanes_simd.h; the
same sums again). Samples are spread
over the OpenMP team with the GIL released throughout; the Python layer
makes sure that BLAS itself runs one thread meanwhile, so that the team is
the only parallelism.

Sums over samples (the weight and bias gradients) are never shared between
threads: the caller splits the batch into chunks (a partition that depends
on the sizes only), each chunk sums its samples in order into its own slot
of ``dweight_parts`` / ``dbias_parts`` (on small planes by batches of
samples, whose size depends on the sizes too; the twin sums sample by
sample), and the caller adds the slots in chunk order. Results are
therefore the same for every thread count.

Every GEMM overwrites its output (beta = 0), and bias or accumulation is a
separate addition: BLAS splits long products into blocks that it adds into
the output one by one, so adding into a non-zero output would round
differently from NumPy's ``a @ b + c``, which the twins compute.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from libc.limits cimport INT_MAX
from libc.math cimport isfinite
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from gemm cimport (FCNN_GEMM_MR, fcnn_gemm_level, fcnn_gemm_packed_size, gemm, own_gemm, own_gemm_ld, own_implicit,
                   own_gemm_pack, own_transpose, own_wgrad, row_sums)
from simd cimport fcnn_set_simd_cap
from planes cimport FOLD_CHUNKS_DEFAULT, fold_by_rows, fold_plane, fold_tables, im2col_rows
from rectify cimport leaky_slope_at, relu_grad, relu_of
from padded cimport Band, Bands, band_of, banded, pad_band, padded_width, tap_offsets
from scratch cimport per_thread_scratch
from window cimport clip, end_inside, first_inside


cdef extern from "lanes_simd.h" nogil:
    ptrdiff_t fcnn_lanes_phases(ptrdiff_t planes, ptrdiff_t Hph, ptrdiff_t PWc)
    ptrdiff_t fcnn_lanes_cells(ptrdiff_t oh, ptrdiff_t PWc)
    void fcnn_lanes_pad_f32(const float* x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t sh,
                            ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t Hph, ptrdiff_t PWc,
                            float* s)
    void fcnn_lanes_pad_f64(const double* x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t sh,
                            ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t Hph,
                            ptrdiff_t PWc, double* s)
    void fcnn_lanes_conv_f32(ptrdiff_t K, const float* wt, ptrdiff_t Fp, ptrdiff_t F,
                             const float* s, const ptrdiff_t* offs, ptrdiff_t PWc, ptrdiff_t oh,
                             ptrdiff_t ow, const float* bias, float* out, float* buf)
    void fcnn_lanes_conv_f64(ptrdiff_t K, const double* wt, ptrdiff_t Fp, ptrdiff_t F,
                             const double* s, const ptrdiff_t* offs, ptrdiff_t PWc, ptrdiff_t oh,
                             ptrdiff_t ow, const double* bias, double* out, double* buf)


def _cap_simd(int level):
    """Use SIMD kernels up to `level` (0 none: BLAS for every product); returns
    the previous cap. For the tests, which run every instruction set the
    machine has; the levels agree to rounding."""
    return fcnn_set_simd_cap(level)


# Where the forward puts the filters in the lanes: "auto" by shape
# (lanes_better), "never", or "always" (wherever AVX-512 and one group
# allow it: for the tests, which compare it with the others).
cdef int lanes_mode = 1
LANES_MODES = ("never", "auto", "always")


def _use_lanes(str mode):
    """Set where the forward puts the filters in the vector lanes
    (lanes_simd.h): one of LANES_MODES; returns the previous mode. For the
    tests and benchmarks: every mode gives the same bits."""
    global lanes_mode
    previous = LANES_MODES[lanes_mode]
    lanes_mode = LANES_MODES.index(mode)
    return previous


def _simd_level():
    """Where gemm_simd.h's products run here: 0 nowhere (BLAS for every
    product), 1 AVX2 and FMA, 2 AVX-512 (and the forward's implicit
    convolution); capped by :func:`_cap_simd`."""
    return fcnn_gemm_level()


# The gemm_simd.h forward unfolds and multiplies a sample in bands of output
# rows of about this many bytes of columns, which stay in a 512 KiB L2 cache
# beside the packed filters, but of at least OWN_GEMM_MIN_CELLS outputs, so
# that each product has panels enough to pay for reading the filters. (Side
# by side on a 2-core AMD EPYC, bands of 96-384 KiB and 64-256 outputs were
# within noise of each other on 3x3 and 5x5 convolutions of 3-64 channels;
# 5x5 ones from 3 channels ran 1.6x as fast as with whole samples.)
cdef enum:
    OWN_GEMM_BAND_BYTES = 128 << 10
    OWN_GEMM_MIN_CELLS = 128


# With AVX-512, the forward reads each sample's taps from a zero-padded copy
# of a band of IMPLICIT_BAND_ROWS output rows (csrc/padded.pxd's layout)
# instead of unfolding it (fcnn_gemm_implicit_*: the same sums), where two
# output rows fill more than half a vector (implicit_rows) and the window
# is at least as wide and high as the stride (else the copy holds mostly
# cells that no window reads). Side by side on a 2-core Xeon with AVX-512,
# one thread, 3x3 and 5x5 windows of 3-64 channels, strides 1 and 2:
# 0.42-0.94x the time of unfolding on rows of 10 to 32 float32 cells (8 to
# 32 float64; 1x1 windows on 32-cell rows, 0.95-1.00x). Rows of 5 to 8
# float32 cells (3 or 4 float64), two to a vector, 0.74-0.95x in float32;
# one to a vector, half of it empty, they had taken 1.1-1.4x.
cdef enum:
    IMPLICIT_BAND_ROWS = 8
# The input gradient goes so (implicit_input_grad) on planes of at least
# IMPLICIT_MIN_PLANE cells (stride 1), or phases of the stride of at least
# IMPLICIT_MIN_PHASE, of at least a tile's rows of channels: side by side
# (Xeon, one thread, 5x5 windows, 6-64 channels, 16-64 filters, both
# dtypes), the whole backward of stride 1 took 0.72-0.86x the time of the
# GEMM and fold on planes of 16x16 to 32x32 (1x1 windows: 0.81-1.06x), but
# 0.87-1.18x on planes of 9x9 to 14x14 (both dtypes); the input gradient of
# stride 2 (3x3 and 5x5 windows, 4-64 channels, phases of 8x8 to 32x32),
# 0.60-0.90x (1.02x once, float64); on 3 channels, 1.7-2.0x.
cdef enum:
    IMPLICIT_MIN_PLANE = 256
    IMPLICIT_MIN_PHASE = 64


# A thread's padded copy is at most IMPLICIT_MAX_SCRATCH bytes: windows much
# larger than the input (a huge dilation or padding) would make it mostly
# padding, up to gigabytes; the unfolding reads only what windows cover.
cdef enum:
    IMPLICIT_MAX_SCRATCH = 8 << 20


cdef inline bint implicit_fits(double cells, Py_ssize_t itemsize) noexcept nogil:
    """Whether a padded copy of `cells` cells stays under IMPLICIT_MAX_SCRATCH
    (a double: the product of extreme sizes would overflow an integer)."""
    return cells * itemsize <= IMPLICIT_MAX_SCRATCH


cdef inline bint implicit_rows(Py_ssize_t width, Py_ssize_t itemsize) noexcept nogil:
    """Whether the implicit products run on output rows of `width` cells:
    AVX-512 here, and two rows fill more than half a vector."""
    return fcnn_gemm_level() == 2 and 4 * width * itemsize > 64


# With AVX-512, the forward may put the filters in the vector lanes instead
# (lanes_simd.h): the same sums, read from the input's phases. It pays where
# output rows of 9 to 15 cells fill the implicit product's vectors poorly:
# side by side (Xeon, one thread, float32), 6 -> 16 channels, 5x5 on 14x14
# planes, 0.77-0.82x the implicit product's time (float64 0.76-0.80x).
# Where those are full, its filter tiles alike, it lost (stride 2,
# 1.0-1.3x: its phases are copied cell by cell), as on few taps (3
# channels, 1x1 windows: 1.1-3.3x), where its tiles' fixed costs weigh.
cdef enum:
    LANES_MIN_TAPS = 64


cdef inline double row_lane_use(Py_ssize_t ow, Py_ssize_t lanes) noexcept nogil:
    """The share of an implicit product's lanes that rows of `ow` outputs fill."""
    if 2 * ow <= lanes:
        return 2.0 * ow / lanes
    return <double> ow / ((ow + lanes - 1) // lanes * lanes)


cdef inline bint lanes_better(Py_ssize_t F, Py_ssize_t K, Py_ssize_t ow, Py_ssize_t PWc,
                              Py_ssize_t sh, Py_ssize_t sw, bint implicit,
                              Py_ssize_t itemsize) noexcept nogil:
    """Whether the forward puts the filters in the lanes (see lanes_mode):
    in "auto", where it fills a quarter more of its vectors than the
    implicit product would, on stride 1 and many taps."""
    cdef Py_ssize_t lanes = 64 // itemsize
    if lanes_mode == 0 or fcnn_gemm_level() != 2:
        return False
    if lanes_mode == 2:
        return True
    if not implicit or sh != 1 or sw != 1 or K < LANES_MIN_TAPS or F < lanes:
        return False
    cdef double use = (<double> ow / PWc) * F / ((F + lanes - 1) // lanes * lanes)
    cdef double tiles = <double> F / ((F + FCNN_GEMM_MR - 1) // FCNN_GEMM_MR * FCNN_GEMM_MR)
    return use > 1.25 * row_lane_use(ow, lanes) * tiles


cdef inline void lanes_pad(const floating* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t Hph, Py_ssize_t PWc, floating* s) noexcept nogil:
    if floating is float:
        fcnn_lanes_pad_f32(x, C, H, W, sh, sw, ph, pw, Hph, PWc, s)
    else:
        fcnn_lanes_pad_f64(x, C, H, W, sh, sw, ph, pw, Hph, PWc, s)


cdef inline void lanes_conv(Py_ssize_t K, const floating* wt, Py_ssize_t Fp, Py_ssize_t F,
                            const floating* s, const ptrdiff_t* offs, Py_ssize_t PWc,
                            Py_ssize_t oh, Py_ssize_t ow, const floating* bias, floating* out,
                            floating* buf) noexcept nogil:
    if floating is float:
        fcnn_lanes_conv_f32(K, wt, Fp, F, s, offs, PWc, oh, ow, bias, out, buf)
    else:
        fcnn_lanes_conv_f64(K, wt, Fp, F, s, offs, PWc, oh, ow, bias, out, buf)


# The activation that conv2d_forward applies to its outputs, and the one
# whose gradient conv2d_backward applies to its input gradient (that before
# the convolution, whose output is its input), each band of them while it is
# in cache (activation.pyx's expressions, rectify.pxd).
cdef enum Activation:
    NONE, RELU, LEAKY_RELU


cdef inline Activation activation_of(int code) except *:
    if code not in (NONE, RELU, LEAKY_RELU):
        raise ValueError(f"activation must be 0, 1 or 2, got {code}")
    return <Activation> code


cdef inline void activate(floating* y, Py_ssize_t rows, Py_ssize_t cells, Py_ssize_t ld,
                          Activation kind, floating slope) noexcept nogil:
    """`kind` of `rows` runs of `cells` outputs, `ld` apart, in place."""
    cdef Py_ssize_t r, i
    cdef floating* run
    for r in range(rows if kind != NONE else 0):
        run = y + r * ld
        if kind == RELU:
            for i in range(cells):
                run[i] = relu_of(run[i])
        else:
            for i in range(cells):
                run[i] = run[i] * leaky_slope_at(run[i], slope)


cdef inline void activate_grad(floating* g, const floating* x, Py_ssize_t n, Activation kind,
                               floating slope) noexcept nogil:
    """`g` times the gradient of activation `kind` at its output `x` (n cells),
    in place: the output of a ReLU or of a LeakyReLU of slope >= 0 is
    positive exactly where its input is."""
    cdef Py_ssize_t i
    if kind == RELU:
        for i in range(n):
            g[i] = relu_grad(g[i], x[i])
    elif kind == LEAKY_RELU:
        for i in range(n):
            g[i] = g[i] * leaky_slope_at(x[i], slope)


cdef forward_in_lanes(const floating[:, :, :, ::1] x, const floating[:, ::1] weight,
                      const floating* bias, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                      Py_ssize_t Hph, Py_ssize_t PWc, Activation kind, floating slope,
                      floating[:, :, :, ::1] out, int num_threads):
    """conv2d_forward (groups = 1) with the filters in the lanes, sample by
    sample over the team: each thread copies its sample's phases, then runs
    the tiles (lanes_simd.h)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = weight.shape[0], K = weight.shape[1], lanes = 64 // sizeof(floating)
    cdef Py_ssize_t Fp = (F + lanes - 1) // lanes * lanes, oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t plane = Hph * PWc, phases = fcnn_lanes_phases(C * sh * sw, Hph, PWc)
    cdef Py_ssize_t stride = 0, n, c, i, j, a, b
    cdef floating* scratch = NULL
    cdef floating* wt = NULL
    cdef ptrdiff_t* offs = NULL
    cdef floating* s
    try:
        scratch = <floating*> per_thread_scratch(num_threads,
                                                 phases + fcnn_lanes_cells(oh, PWc) * Fp,
                                                 sizeof(floating), &stride)
        wt = <floating*> calloc(max(K * Fp, 1), sizeof(floating))  # (calloc(0) may be NULL)
        offs = <ptrdiff_t*> malloc(max(K, 1) * sizeof(ptrdiff_t))
        if wt == NULL or offs == NULL:
            raise MemoryError("cannot allocate the packed filters")
        own_transpose(&weight[0, 0], K, F, K, wt, Fp)  # the filters in rows of Fp, zero past F
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    a, b = i * dh % sh, j * dw % sw
                    offs[(c * kh + i) * kw + j] = (((c * sh + a) * sw + b) * plane
                                                   + i * dh // sh * PWc + j * dw // sw)
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            for n in prange(N, schedule="static"):
                lanes_pad(&x[n, 0, 0, 0], C, H, W, sh, sw, ph, pw, Hph, PWc, s)
                lanes_conv(K, wt, Fp, F, s, offs, PWc, oh, ow, bias, &out[n, 0, 0, 0], s + phases)
                activate(&out[n, 0, 0, 0], 1, F * oh * ow, 0, kind, slope)
    finally:
        free(scratch)
        free(wt)
        free(offs)
    return out.base


cdef inline void add_into(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] += src[i]


cdef inline void unfold_sample(
    const floating* x, floating* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t ya, Py_ssize_t yb, Py_ssize_t ld,
) noexcept nogil:
    """im2col of one (C, H, W) sample: output rows ``[ya, yb)`` of its
    (C*kh*kw, oh*ow) columns, each of those rows `ld` cells apart."""
    cdef Py_ssize_t c, i, j, y0, y1
    for c in range(C):
        for i in range(kh):
            y0 = clip(first_inside(i * dh - ph, sh), 0, oh)
            y1 = clip(end_inside(i * dh - ph, sh, H), y0, oh)
            for j in range(kw):
                im2col_rows(x + c * H * W, cols + ((c * kh + i) * kw + j) * ld,
                            i * dh - ph, j * dw - pw, y0, y1, ya, yb, W, sh, sw, ow)


def conv2d_forward(
    const floating[:, :, :, ::1] x,
    const floating[:, ::1] weight,
    const floating[::1] bias,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t groups,
    int activation, double negative_slope,
    floating[:, :, :, ::1] out not None,
    int num_threads,
):
    """conv2d_forward(x, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
    activation, negative_slope, out, num_threads) -> out

    `weight` is (F, C/groups*kh*kw), `bias` (F,) or empty for none, `out`
    (N, F, oh, ow). `activation` 1 applies a ReLU to the outputs, 2 a
    LeakyReLU of `negative_slope` (as activation.pyx's kernels, bit for
    bit), 0 neither. Every GEMM dimension fits in a C int (checked by the
    caller).
    """
    cdef Activation kind = activation_of(activation)
    cdef floating slope = <floating> negative_slope
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = weight.shape[0], kg = weight.shape[1], fg = F // groups
    cdef Py_ssize_t L = oh * ow, rows = C * kh * kw, n, g, f, l, stride = 0
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint own = fcnn_gemm_level() > 0
    # gemm_simd.h multiplies bands of output rows whose columns stay in L2;
    # BLAS, whole samples (one band)
    cdef Py_ssize_t band = oh, ld = L
    if own:
        band = clip(max(OWN_GEMM_BAND_BYTES // (rows * ow * sizeof(floating)),
                        (OWN_GEMM_MIN_CELLS + ow - 1) // ow), 1, oh)
        ld = own_gemm_ld(band * ow, <floating*> NULL)
    cdef Py_ssize_t PW = padded_width(ow, kw, sw, dw, 64 // sizeof(floating))
    cdef Bands bands = banded(oh, IMPLICIT_BAND_ROWS, kh, sh, dh)
    cdef bint implicit = (implicit_rows(ow, sizeof(floating)) and groups == 1
                          and sw <= (kw - 1) * dw + 1 and sh <= (kh - 1) * dh + 1
                          and implicit_fits(<double> C * bands.R * sw * PW, sizeof(floating)))
    cdef Py_ssize_t group_packed = fcnn_gemm_packed_size(fg, kg) if own else 0
    cdef Py_ssize_t b, y0, y1, cells, item
    cdef Band piece
    cdef floating* packed = NULL
    cdef floating* scratch = NULL
    cdef ptrdiff_t* offs = NULL
    cdef floating* cols
    cdef floating* y
    cdef Py_ssize_t Hph = oh + (kh - 1) * dh // sh, PWc = ow + (kw - 1) * dw // sw
    if (groups == 1 and N > 0
            and lanes_better(F, kg, ow, PWc, sh, sw, implicit, sizeof(floating))
            and implicit_fits(<double> C * sh * sw * Hph * PWc, sizeof(floating))):
        return forward_in_lanes(x, weight, &bias[0] if has_bias else NULL, kh, kw, sh, sw, ph,
                                pw, dh, dw, Hph, PWc, kind, slope, out, num_threads)
    try:
        if implicit:
            # (sample, band of output rows) items over the team, each padding
            # its band's input rows and multiplying the filters by its taps
            scratch = <floating*> per_thread_scratch(num_threads, C * bands.R * sw * PW,
                                                     sizeof(floating), &stride)
            offs = tap_offsets(C, kh, kw, sw, dh, dw, bands.R, PW)
            packed = own_gemm_pack(&weight[0, 0], kg, F, kg, 1, 0)
            with nogil, parallel(num_threads=num_threads):
                cols = scratch + threadid() * stride
                for item in prange(N * bands.count, schedule="static"):
                    piece = band_of(&bands, item, oh)
                    pad_band(&x[piece.n, 0, 0, 0], C, H, W, &bands, piece, kh, sh, ph, dh, sw, pw,
                             PW, cols)
                    own_implicit(F, kg, packed, offs, cols, sh * sw * PW, piece.y1 - piece.y0, ow,
                                 &bias[0] if has_bias else NULL, &out[piece.n, 0, piece.y0, 0], L)
                    activate(&out[piece.n, 0, piece.y0, 0], F, (piece.y1 - piece.y0) * ow, L, kind,
                             slope)
            return out.base
        scratch = <floating*> per_thread_scratch(num_threads, rows * ld, sizeof(floating), &stride)
        if own:
            # each group's filters, once for every sample's product
            packed = own_gemm_pack(&weight[0, 0], kg, fg, kg, groups, fg * kg)
        with nogil, parallel(num_threads=num_threads):
            cols = scratch + threadid() * stride
            for n in prange(N, schedule="static"):
                for b in range((oh + band - 1) // band):
                    y0 = b * band
                    y1 = min(y0 + band, oh)
                    cells = (y1 - y0) * ow
                    y = &out[n, 0, y0, 0]  # the band's outputs of filter 0, rows L apart
                    unfold_sample(&x[n, 0, 0, 0], cols, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw,
                                  oh, ow, y0, y1, ld)
                    for g in range(groups):
                        if own:
                            own_gemm(fg, cells, kg, packed + g * group_packed, cols + g * kg * ld,
                                     ld, &bias[g * fg] if has_bias else NULL, y + g * fg * L, L)
                        else:
                            gemm("N", "N", cells, fg, kg, cols + g * kg * ld, ld,
                                 &weight[g * fg, 0], kg, y + g * fg * L, L)
                    if has_bias and not own:
                        for f in range(F):
                            for l in range(cells):
                                y[f * L + l] += bias[f]
                    activate(y, F, cells, L, kind, slope)
    finally:
        free(scratch)
        free(packed)
        free(offs)
    return out.base


cdef struct Phase:
    Py_ssize_t rows         # dx's rows sh*a + r of the phase: how many a
    Py_ssize_t K            # taps: filters x window rows x window columns that reach it
    void* packed            # the weights of those taps, packed (C x K)
    ptrdiff_t* offs         # their offsets in the padded dout


cdef inline void interleave(const floating* src, Py_ssize_t ss, Py_ssize_t sw, Py_ssize_t W,
                            floating* dst) noexcept nogil:
    """A row of W cells from its sw column phases, ss apart:
    ``dst[b*sw + q] = src[q*ss + b]``."""
    cdef Py_ssize_t b, q
    if sw == 2:
        for b in range(W // 2):
            dst[2 * b] = src[b]
            dst[2 * b + 1] = src[ss + b]
        if W % 2:
            dst[W - 1] = src[W // 2]
        return
    for b in range(W):
        dst[b] = src[b % sw * ss + b // sw]


cdef inline void phase_reach(Py_ssize_t p, Py_ssize_t k, Py_ssize_t d, Py_ssize_t s,
                             Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The least and greatest ``e = (r + p - i*d) / s`` over the phases r < s
    and the window rows i that reach them: dx's row s*a + r reads dout's
    rows a + e."""
    cdef Py_ssize_t r, i
    lo[0], hi[0] = p, -k * d
    for r in range(s):
        for i in range(k):
            if (r + p - i * d) % s == 0:
                lo[0] = min(lo[0], (r + p - i * d) // s)
                hi[0] = max(hi[0], (r + p - i * d) // s)


cdef bint implicit_input_grad(
    const floating[:, :, :, ::1] dout,
    const floating[:, :, :, ::1] x,
    const floating[:, ::1] weight,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
    Activation kind, floating slope,
    floating[:, :, :, ::1] dx,
    int num_threads,
) except -1:
    """The input gradient as the forward of the transposed convolution
    (fcnn_gemm_implicit_*), where the forward would read its taps so on
    rows of dx; returns whether it did. With strides, by phases: the cells
    (sh*a + r, sw*b + q) of dx for each (r, q) are a convolution of stride 1
    of dout, padded, by the taps (i, j) with ``r + ph - i*dh`` divisible by
    sh and ``q + pw - j*dw`` by sw, which read dout at (a + e_i, b + e_j),
    ``e_i = (r + ph - i*dh) / sh``; a phase of no taps is zero. Each cell
    sums its taps in (filter, row, column) order rather than as the GEMM
    and the fold do: the two agree to rounding. Filters with a value that
    is not finite go the other way: the transpose multiplies them by the
    padding's zeros (NaN), where the fold adds nothing."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t F = dout.shape[1], oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t A = (H + sh - 1) // sh, B = (W + sw - 1) // sw, f, c, i, j, t
    if not (implicit_rows(W // sw, sizeof(floating)) and groups == 1 and N > 0
            and C >= FCNN_GEMM_MR
            and A * B >= (IMPLICIT_MIN_PLANE if sh * sw == 1 else IMPLICIT_MIN_PHASE)
            and sw <= (kw - 1) * dw + 1 and sh <= (kh - 1) * dh + 1):
        return False
    for f in range(F):
        for i in range(weight.shape[1]):
            if not isfinite(weight[f, i]):
                return False
    # the rows of dout that the phases read, from a + ey_lo to a + ey_hi (columns alike)
    cdef Py_ssize_t ey_lo, ey_hi, ex_lo, ex_hi
    phase_reach(ph, kh, dh, sh, &ey_lo, &ey_hi)
    phase_reach(pw, kw, dw, sw, &ex_lo, &ex_hi)
    cdef Py_ssize_t PW = padded_width(B, ex_hi - ex_lo + 1, 1, 1, 64 // sizeof(floating))
    cdef Bands bands = banded(A, IMPLICIT_BAND_ROWS, ey_hi - ey_lo + 1, 1, 1)
    if not implicit_fits(<double> F * bands.R * PW, sizeof(floating)):
        return False
    cdef Py_ssize_t nphases = sh * sw, k, stride = 0, item, e, r, y, x0, rows, lo, hi
    cdef Phase* phases = NULL
    cdef Phase* ph_
    cdef Band band
    cdef floating* taps = NULL
    cdef floating* scratch = NULL
    cdef floating* s
    cdef floating* out
    cdef bint direct = sh == 1 and sw == 1
    try:
        phases = <Phase*> calloc(nphases, sizeof(Phase))
        taps = <floating*> malloc(max(C * F * kh * kw, 1) * sizeof(floating))
        if phases == NULL or taps == NULL:
            raise MemoryError("cannot allocate the input gradient's phases")
        for t in range(nphases):
            # phase (r, q) = (t // sw, t % sw): its taps (f, i, j), where each
            # reads dout, and their weights (C x K, row stride F*kh*kw)
            ph_ = &phases[t]
            ph_.rows = (H - t // sw + sh - 1) // sh
            ph_.offs = <ptrdiff_t*> malloc(max(F * kh * kw, 1) * sizeof(ptrdiff_t))
            if ph_.offs == NULL:
                raise MemoryError("cannot allocate the input gradient's tap offsets")
            k = 0
            for f in range(F):
                for i in range(kh):
                    if (t // sw + ph - i * dh) % sh:
                        continue
                    e = (t // sw + ph - i * dh) // sh
                    for j in range(kw):
                        if (t % sw + pw - j * dw) % sw:
                            continue
                        x0 = (t % sw + pw - j * dw) // sw
                        ph_.offs[k] = (f * bands.R + e - ey_lo) * PW + x0 - ex_lo
                        for c in range(C):
                            taps[c * F * kh * kw + k] = weight[f, (c * kh + i) * kw + j]
                        k += 1
            ph_.K = k
            if k:
                ph_.packed = own_gemm_pack(taps, F * kh * kw, C, k, 1, 0)
        # per thread: the padded band of dout, then (with strides) a phase's
        # cells of the band before they go to their places in dx
        scratch = <floating*> per_thread_scratch(
            num_threads, F * bands.R * PW + (0 if direct else sw * C * bands.rows * B),
            sizeof(floating), &stride)
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            out = s + F * bands.R * PW
            for item in prange(N * bands.count, schedule="static"):
                band = band_of(&bands, item, A)
                pad_band(&dout[band.n, 0, 0, 0], F, oh, ow, &bands, band, ey_hi - ey_lo + 1, 1,
                         -ey_lo, 1, 1, -ex_lo, PW, s)
                if direct:
                    own_implicit(C, phases[0].K, <floating*> phases[0].packed, phases[0].offs, s, PW,
                                 band.y1 - band.y0, W, NULL, &dx[band.n, 0, band.y0, 0], H * W)
                else:
                    for r in range(sh):
                        # the row phase's column phases, B cells a row (the last of a
                        # narrower one unused), then dx's rows from them
                        rows = min(band.y1, phases[r * sw].rows) - band.y0
                        for t in range(r * sw, r * sw + sw):
                            if phases[t].K:
                                own_implicit(C, phases[t].K, <floating*> phases[t].packed,
                                             phases[t].offs, s, PW, rows, B, NULL,
                                             out + (t - r * sw) * C * bands.rows * B,
                                             bands.rows * B)
                            else:
                                memset(out + (t - r * sw) * C * bands.rows * B, 0,
                                       C * bands.rows * B * sizeof(floating))
                        for c in range(C):
                            for y in range(rows):
                                interleave(out + (c * bands.rows + y) * B, C * bands.rows * B,
                                           sw, W, &dx[band.n, c, (band.y0 + y) * sh + r, 0])
                # the band's rows of dx, all written: the gradient of the activation before
                lo, hi = band.y0 * sh, min(band.y1 * sh, H)
                for c in range(C if kind != NONE else 0):
                    activate_grad(&dx[band.n, c, lo, 0], &x[band.n, c, lo, 0], (hi - lo) * W, kind,
                                  slope)
    finally:
        if phases != NULL:
            for t in range(nphases):
                free(phases[t].packed)
                free(phases[t].offs)
        free(phases)
        free(taps)
        free(scratch)
    return True


# With AVX-512, the weight gradient reads its taps from a zero-padded copy
# of a band of output rows (fcnn_wgrad_implicit_*) instead of unfolding it:
# bands whose output gradient, transposed, fills about WGRAD_BAND_BYTES per
# panel of filters, which then stays in L1 while the tiles of taps pass.
# It pays for its copies where windows are wider than a cell, with at least
# WGRAD_MIN_TAPS taps and a vector of filters: side by side (Xeon, one
# thread, batches of 32-128, 3x3 and 5x5 windows of 3-64 channels, 72-800
# taps, strides 1 and 2) it took 0.37-0.86x the GEMM's time; with 25 or 27
# taps, 1.1-1.9x in float32; on 1x1 windows, 1.0-1.6x (whose unfolding is a
# copy).
cdef enum:
    WGRAD_BAND_BYTES = 32 << 10
    WGRAD_MIN_TAPS = 64


cdef bint implicit_weight_grad(
    const floating[:, :, :, ::1] dout,
    const floating[:, :, :, ::1] x,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
    Py_ssize_t chunk,
    floating[:, :, ::1] dweight_parts,
    floating[:, ::1] dbias_parts,
    int num_threads,
) except -1:
    """The weight and bias gradients of conv2d_backward's chunks without
    unfolding (fcnn_wgrad_implicit_*: the columns' product by the output
    gradient, read where a padded copy of the input holds them), where it
    applies; returns whether it did. The sums run in another order than the
    GEMM's: the two agree to rounding."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], oh = dout.shape[2], ow = dout.shape[3]
    cdef Py_ssize_t lanes = 64 // sizeof(floating), L = oh * ow, K = C * kh * kw
    # (the transposes gather a vector of filter planes by 32-bit offsets)
    if not (fcnn_gemm_level() == 2 and groups == 1 and N > 0 and kh * kw > 1
            and K >= WGRAD_MIN_TAPS and F >= lanes and lanes * L <= INT_MAX
            and sw <= (kw - 1) * dw + 1 and sh <= (kh - 1) * dh + 1):
        return False
    cdef Py_ssize_t Fp = (F + lanes - 1) // lanes * lanes, parts = dweight_parts.shape[0]
    cdef Bands bands = banded(oh, max(1, WGRAD_BAND_BYTES // (ow * min(Fp, 4 * lanes)
                                                              * sizeof(floating))), kh, sh, dh)
    cdef Py_ssize_t PW = padded_width(ow, kw, sw, dw, lanes)
    if not implicit_fits(<double> C * bands.R * sw * PW, sizeof(floating)):
        return False
    cdef Py_ssize_t cells = C * bands.R * sw * PW
    cdef Py_ssize_t stride = 0, p, n, n0, n1, b, j, m
    cdef Band piece
    cdef floating* scratch = NULL
    cdef ptrdiff_t* offs = NULL
    cdef floating *s, *dt, *dwt, *ones
    try:
        # per thread: the padded band, its output gradient transposed (cell by
        # cell, Fp filters each), the transposed weight gradient, ones
        scratch = <floating*> per_thread_scratch(
            num_threads, cells + bands.rows * ow * Fp + K * Fp + L, sizeof(floating), &stride)
        offs = tap_offsets(C, kh, kw, sw, dh, dw, bands.R, PW)
        with nogil, parallel(num_threads=num_threads):
            s = scratch + threadid() * stride
            dt = s + cells
            dwt = dt + bands.rows * ow * Fp
            ones = dwt + K * Fp
            memset(dt, 0, bands.rows * ow * Fp * sizeof(floating))  # the filters past F
            for j in range(L):
                ones[j] = 1
            for p in prange(parts, schedule="static"):
                n0 = p * chunk
                n1 = min(N, n0 + chunk)
                for n in range(n0, n1):
                    for b in range(bands.count):
                        piece = band_of(&bands, n * bands.count + b, oh)
                        pad_band(&x[n, 0, 0, 0], C, H, W, &bands, piece, kh, sh, ph, dh, sw, pw,
                                 PW, s)
                        m = (piece.y1 - piece.y0) * ow
                        own_transpose(&dout[n, 0, piece.y0, 0], L, F, m, dt, Fp)
                        own_wgrad(K, Fp, dt, s, offs, sh * sw * PW, piece.y1 - piece.y0, ow, dwt,
                                  n > n0 or b > 0)
                    row_sums(F, L, &dout[n, 0, 0, 0], L, ones, 0 if n == n0 else 1,
                             &dbias_parts[p, 0])
                own_transpose(dwt, Fp, K, F, &dweight_parts[p, 0, 0], K)
    finally:
        free(scratch)
        free(offs)
    return True


# The backward multiplies the columns of several samples at once where a
# sample has few outputs (L): one GEMM of about BATCH_CELLS columns rather
# than one per sample, whose call cost and thin inner dimension (L, for the
# weight gradient) dominate on small planes; the batch's columns stay under
# BATCH_BYTES. (Side by side on a 2-core AMD EPYC, one thread: 16 -> 32
# channels 3x3 on 4x4 planes, batch 128, backward 2.5 -> 1.7 ms.)
cdef enum:
    BATCH_CELLS = 256
    BATCH_BYTES = 256 << 10


cdef inline Py_ssize_t batch_samples(Py_ssize_t L, Py_ssize_t rows, Py_ssize_t chunk,
                                     Py_ssize_t itemsize) noexcept nogil:
    """Samples that the backward multiplies at once (from the sizes only)."""
    return clip(min((BATCH_CELLS + L - 1) // L, BATCH_BYTES // max(rows * L * itemsize, 1)),
                1, max(chunk, 1))


def conv2d_backward(
    const floating[:, :, :, ::1] dout,
    const floating[:, :, :, ::1] x,
    const floating[:, ::1] weight,
    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
    Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t groups, Py_ssize_t chunk,
    int activation, double negative_slope,
    floating[:, :, :, ::1] dx not None,
    floating[:, :, ::1] dweight_parts not None,
    floating[:, ::1] dbias_parts not None,
    int num_threads,
):
    """conv2d_backward(dout, x, weight, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, chunk,
    activation, negative_slope, dx, dweight_parts, dbias_parts, num_threads) -> dx

    Samples ``[p*chunk, (p+1)*chunk)`` form chunk p: their weight gradient
    (F, C/groups*kh*kw) and bias gradient (F,) are summed, batch of samples
    by batch in order (see :func:`batch_samples`), into ``dweight_parts[p]``
    and ``dbias_parts[p]``. A `dx` of no samples asks for the parameter
    gradients only (a network's first layer: nothing needs the gradient of
    the data); `dweight_parts` and `dbias_parts` of no chunks for the input
    gradient only (the direct kernels of csrc/direct.pyx compute the others).
    `activation` 1 applies relu_backward at `x` to dx, 2 leaky_relu_backward
    of `negative_slope` (activation.pyx's kernels, bit for bit), 0 neither:
    the gradient of a ReLU, or a LeakyReLU of slope >= 0, whose output is `x`.
    """
    cdef Activation kind = activation_of(activation)
    cdef floating slope = <floating> negative_slope
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = weight.shape[0], kg = weight.shape[1], fg = F // groups
    cdef bint want_dx = dx.shape[0] > 0, want_dw = dweight_parts.shape[0] > 0
    cdef Py_ssize_t L = oh * ow, rows = C * kh * kw
    cdef Py_ssize_t parts = dweight_parts.shape[0] if want_dw else (N + chunk - 1) // chunk
    cdef Py_ssize_t S = batch_samples(L, rows, chunk, sizeof(floating)), ld = S * L
    cdef Py_ssize_t p, q, j, l, n, n0, n1, s, g, c, stride = 0, t_stride = 0
    if want_dx and implicit_input_grad(dout, x, weight, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                       kind, slope, dx, num_threads):
        if not want_dw:
            return dx.base
        want_dx = False
    if want_dw and implicit_weight_grad(dout, x, kh, kw, sh, sw, ph, pw, dh, dw, groups, chunk,
                                        dweight_parts, dbias_parts, num_threads):
        if not want_dx:
            return dx.base
        want_dw = False
    cdef bint by_rows = fold_by_rows(W, kw, sw, pw, dw, ow, sizeof(floating), FOLD_CHUNKS_DEFAULT)
    # per thread: a batch's columns, their gradient and its dout (F, S*L),
    # one batch's dweight and dbias, ones
    cdef Py_ssize_t cells = (2 * rows + F) * ld + F * kg + F + ld
    cdef floating* scratch = NULL
    cdef void** tables = NULL
    cdef floating* cols
    cdef floating* dcols
    cdef floating* batch_dout
    cdef floating* dw1
    cdef floating* db1
    cdef floating* ones
    cdef void** t
    cdef const floating* d
    try:
        scratch = <floating*> per_thread_scratch(num_threads, cells, sizeof(floating), &stride)
        tables = fold_tables(num_threads if by_rows else 0, kh, kw, &t_stride)
        with nogil, parallel(num_threads=num_threads):
            cols = scratch + threadid() * stride
            dcols = cols + rows * ld
            batch_dout = dcols + rows * ld
            dw1 = batch_dout + F * ld
            db1 = dw1 + F * kg
            ones = db1 + F
            for l in range(ld):
                ones[l] = 1
            t = tables + threadid() * t_stride
            for p in prange(parts, schedule="static"):
                n0 = p * chunk
                n1 = min(N, n0 + chunk)
                for q in range((n1 - n0 + S - 1) // S):
                    n = n0 + q * S
                    s = min(S, n1 - n)
                    # the batch's samples side by side, L columns each, rows ld apart
                    d = &dout[n, 0, 0, 0]
                    if S > 1:
                        for j in range(s):
                            for c in range(F):
                                memcpy(batch_dout + c * ld + j * L, d + (j * F + c) * L,
                                       L * sizeof(floating))
                        d = batch_dout
                    for j in range(s if want_dw else 0):
                        unfold_sample(&x[n + j, 0, 0, 0], cols + j * L, C, H, W, kh, kw, sh, sw,
                                      ph, pw, dh, dw, oh, ow, 0, oh, ld)
                    for g in range(groups):
                        if want_dw:
                            gemm("T", "N", kg, fg, s * L, cols + g * kg * ld, ld, d + g * fg * ld,
                                 ld, dw1 + g * fg * kg, kg)
                        if want_dx:
                            gemm("N", "T", s * L, kg, fg, d + g * fg * ld, ld, &weight[g * fg, 0],
                                 kg, dcols + g * kg * ld, ld)
                    if want_dw:
                        row_sums(F, s * L, d, ld, ones, 0, db1)
                        if q == 0:
                            memcpy(&dweight_parts[p, 0, 0], dw1, F * kg * sizeof(floating))
                            memcpy(&dbias_parts[p, 0], db1, F * sizeof(floating))
                        else:
                            add_into(&dweight_parts[p, 0, 0], dw1, F * kg)
                            add_into(&dbias_parts[p, 0], db1, F)
                    for j in range(s if want_dx else 0):
                        for c in range(C):
                            fold_plane(dcols + c * kh * kw * ld + j * L, &dx[n + j, c, 0, 0], H,
                                       W, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, ld, by_rows,
                                       <const floating**> t, <ptrdiff_t*> (t + kh * kw),
                                       <Py_ssize_t*> (t + 2 * kh * kw))
                            activate_grad(&dx[n + j, c, 0, 0], &x[n + j, c, 0, 0], H * W, kind,
                                          slope)
    finally:
        free(scratch)
        free(tables)
    return dx.base


# A linear layer's GEMMs are also split over the features (the weight's rows
# for the output and the weight gradient, its columns for the input
# gradient), into at most LINEAR_BLOCKS blocks of at least LINEAR_MIN_BLOCK:
# a chunk's samples then read each part of the weight once, on one thread,
# and a batch of one chunk still spreads over the team. The blocks depend on
# the sizes only, and no sum crosses them.
cdef enum:
    LINEAR_BLOCKS = 8
    LINEAR_MIN_BLOCK = 128


cdef inline Py_ssize_t _blocks(Py_ssize_t n) noexcept nogil:
    return max(1, min(<Py_ssize_t> LINEAR_BLOCKS, n // LINEAR_MIN_BLOCK))


cdef inline Py_ssize_t _block_start(Py_ssize_t n, Py_ssize_t blocks, Py_ssize_t b) noexcept nogil:
    return b * n // blocks


def linear_forward(
    const floating[:, ::1] x,
    const floating[:, ::1] weight,
    const floating[::1] bias,
    Py_ssize_t chunk,
    floating[:, ::1] out not None,
    int num_threads,
):
    """linear_forward(x, weight, bias, chunk, out, num_threads) -> out

    ``out = x @ weight.T + bias`` for x (N, I), weight (O, I), bias (O,) or
    empty, out (N, O); rows ``[p*chunk, (p+1)*chunk)`` times a block of
    features (see LINEAR_BLOCKS) form one GEMM.
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef Py_ssize_t parts = (N + chunk - 1) // chunk, blocks = _blocks(O)
    cdef Py_ssize_t t, p, m, r, o, lo, o0, o1
    cdef bint has_bias = bias.shape[0] > 0
    with nogil:
        for t in prange(parts * blocks, schedule="dynamic", num_threads=num_threads):
            p = t // blocks
            lo = p * chunk
            m = min(N, lo + chunk) - lo
            o0 = _block_start(O, blocks, t % blocks)
            o1 = _block_start(O, blocks, t % blocks + 1)
            gemm("T", "N", o1 - o0, m, I, &weight[o0, 0], I, &x[lo, 0], I, &out[lo, o0], O)
            if has_bias:
                for r in range(lo, lo + m):
                    for o in range(o0, o1):
                        out[r, o] += bias[o]
    return out.base


def linear_backward(
    const floating[:, ::1] dout,
    const floating[:, ::1] x,
    const floating[:, ::1] weight,
    Py_ssize_t chunk,
    floating[:, ::1] dx not None,
    floating[:, :, ::1] dweight_parts not None,
    floating[:, ::1] dbias_parts not None,
    int num_threads,
):
    """linear_backward(dout, x, weight, chunk, dx, dweight_parts, dbias_parts, num_threads) -> dx

    ``dx = dout @ weight``; rows ``[p*chunk, (p+1)*chunk)`` form chunk p, whose
    ``dout.T @ x`` (O, I) and column sums of dout (O,), summed row after
    row, go to ``dweight_parts[p]`` and ``dbias_parts[p]``. A `dx` of no
    rows asks for the parameter gradients only. Each chunk's GEMMs are split
    over blocks of features (see LINEAR_BLOCKS).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef Py_ssize_t parts = dweight_parts.shape[0], t, b, p, m, lo, r, a0, a1
    cdef bint want_dx = dx.shape[0] > 0
    # per chunk: the weight gradient's blocks of rows, then dx's of columns
    cdef Py_ssize_t wblocks = _blocks(O), xblocks = _blocks(I) if want_dx else 0
    cdef Py_ssize_t tasks = wblocks + xblocks
    with nogil:
        for t in prange(parts * tasks, schedule="dynamic", num_threads=num_threads):
            p = t // tasks
            b = t % tasks
            lo = p * chunk
            m = min(N, lo + chunk) - lo
            if b < wblocks:
                a0 = _block_start(O, wblocks, b)
                a1 = _block_start(O, wblocks, b + 1)
                gemm("N", "T", I, a1 - a0, m, &x[lo, 0], I, &dout[lo, a0], O,
                     &dweight_parts[p, a0, 0], I)
                memcpy(&dbias_parts[p, a0], &dout[lo, a0], (a1 - a0) * sizeof(floating))
                for r in range(lo + 1, lo + m):
                    add_into(&dbias_parts[p, a0], &dout[r, a0], a1 - a0)
            else:
                a0 = _block_start(I, xblocks, b - wblocks)
                a1 = _block_start(I, xblocks, b - wblocks + 1)
                gemm("N", "N", a1 - a0, m, O, &weight[0, a0], I, &dout[lo, 0], O,
                     &dx[lo, a0], I)
    return dx.base
