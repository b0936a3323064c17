/* The AVX2 kernels of direct_simd.h for one element type: included once per
 * type with T, SFX (name suffix), FCNN_TARGET, the vector type VT of VL
 * lanes and the V_* operations defined (see direct_simd.h), which it
 * undefines at the end. */

#define FCNN_D(name) FCNN_DCAT(name, SFX)

/* Forward: an output segment of 2*VL cells of FB filters, weights packed
 * tap-major (w[t*FB + f]), into out[f*L + x]; the first `n` cells only when
 * n < 2*VL (through a buffer: masked stores are slow on some CPUs). */
#define FCNN_DIRECT_TILE(FB)                                                          \
FCNN_TARGET static void FCNN_DCAT(FCNN_D(fcnn_direct_tile), FB)(                       \
    const T *base, const ptrdiff_t *offs, ptrdiff_t K, const T *w, const T *bias,     \
    T *out, ptrdiff_t L, ptrdiff_t n)                                                 \
{                                                                                     \
    VT a0[FB], a1[FB];                                                                \
    _Pragma("GCC unroll 8") for (int f = 0; f < FB; f++)                              \
        a0[f] = a1[f] = V_ZERO();                                                     \
    for (ptrdiff_t t = 0; t < K; t++) {                                               \
        const T *p = base + offs[t];                                                  \
        VT x0 = V_LOAD(p), x1 = V_LOAD(p + VL);                                       \
        _Pragma("GCC unroll 8") for (int f = 0; f < FB; f++) {                        \
            VT wv = V_SET1(w[t * FB + f]);                                            \
            a0[f] = V_ADD(a0[f], V_MUL(wv, x0));                                             \
            a1[f] = V_ADD(a1[f], V_MUL(wv, x1));                                             \
        }                                                                             \
    }                                                                                 \
    if (bias) {                                                                       \
        _Pragma("GCC unroll 8") for (int f = 0; f < FB; f++) {                        \
            VT b = V_SET1(bias[f]);                                                   \
            a0[f] = V_ADD(a0[f], b);                                                  \
            a1[f] = V_ADD(a1[f], b);                                                  \
        }                                                                             \
    }                                                                                 \
    if (n >= 2 * VL) {                                                                \
        _Pragma("GCC unroll 8") for (int f = 0; f < FB; f++) {                        \
            V_STORE(out + f * L, a0[f]);                                              \
            V_STORE(out + f * L + VL, a1[f]);                                         \
        }                                                                             \
    } else {                                                                          \
        T buf[2 * VL];                                                                \
        _Pragma("GCC unroll 8") for (int f = 0; f < FB; f++) {                        \
            V_STORE(buf, a0[f]);                                                      \
            V_STORE(buf + VL, a1[f]);                                                 \
            memcpy(out + f * L, buf, (size_t)n * sizeof(T));                          \
        }                                                                             \
    }                                                                                 \
}
FCNN_DIRECT_TILE(1)
FCNN_DIRECT_TILE(2)
FCNN_DIRECT_TILE(3)
FCNN_DIRECT_TILE(4)
FCNN_DIRECT_TILE(5)
FCNN_DIRECT_TILE(6)
#undef FCNN_DIRECT_TILE

/* One output row of every filter (as fcnn_direct_row_*, with weights packed
 * by fcnn_direct_pack_*). A row of at least 2*VL cells ends with a segment
 * that overlaps the one before: its cells are computed again the same way
 * and stored whole. */
FCNN_TARGET static void FCNN_D(fcnn_direct_row)(
    const T *base, const ptrdiff_t *offs, ptrdiff_t K, const T *wp, const T *bias,
    ptrdiff_t F, T *out, ptrdiff_t L, ptrdiff_t ow)
{
    for (ptrdiff_t b = 0; b < fcnn_direct_blocks(F); b++) {
        ptrdiff_t f0, fb;
        fcnn_direct_block(F, b, &f0, &fb);
        const T *w = wp + f0 * K, *bb = bias ? bias + f0 : NULL;
        T *o = out + f0 * L;
        for (ptrdiff_t x0 = 0; x0 < ow; x0 += 2 * VL) {
            ptrdiff_t x = x0 + 2 * VL > ow && ow >= 2 * VL ? ow - 2 * VL : x0;
            switch (fb) {
            case 1: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 1)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            case 2: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 2)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            case 3: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 3)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            case 4: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 4)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            case 5: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 5)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            default: FCNN_DCAT(FCNN_D(fcnn_direct_tile), 6)(base + x, offs, K, w, bb, o + x, L, ow - x); break;
            }
        }
    }
}

/* Weight gradient of FB filters (dout planes d + f*L) x TB taps (offsets
 * offs[0..TB)) over one sample, into dw[f*K + t]: per lane, the products
 * along each output row in runs of at most FCNN_DIRECT_RUN vectors, each
 * run's sum added to the total (a long plane's sum would otherwise gather
 * rounding errors in proportion to its length), runs and rows in order;
 * the lanes added last. The columns past ow of the last vector of a row
 * are masked off on both operands (the input there may hold infinities). */
#define FCNN_DIRECT_WTILE(FB, TB)                                                     \
FCNN_TARGET static void FCNN_DCAT(FCNN_DCAT(FCNN_D(fcnn_direct_wtile), FB), TB)(       \
    const T *xs, const ptrdiff_t *offs, const T *d, ptrdiff_t L, ptrdiff_t oh,        \
    ptrdiff_t ow, ptrdiff_t rstep, T *dw, ptrdiff_t K)                                \
{                                                                                     \
    VT total[FB][TB], acc[FB][TB], dv[FB], m = V_MASK(ow % VL);                      \
    ptrdiff_t full = ow - ow % VL;                                                    \
    for (int f = 0; f < FB; f++)                                                      \
        for (int t = 0; t < TB; t++)                                                  \
            total[f][t] = V_ZERO();                                                   \
    for (ptrdiff_t y = 0; y < oh; y++) {                                              \
        const T *dr = d + y * ow, *xr = xs + y * rstep;                               \
        for (ptrdiff_t x0 = 0; x0 == 0 || x0 < full; x0 += FCNN_DIRECT_RUN * VL) {    \
            ptrdiff_t x1 = x0 + FCNN_DIRECT_RUN * VL < full ? x0 + FCNN_DIRECT_RUN * VL : full; \
            for (int f = 0; f < FB; f++)                                              \
                for (int t = 0; t < TB; t++)                                          \
                    acc[f][t] = V_ZERO();                                             \
            for (ptrdiff_t x = x0; x < x1; x += VL) {                                 \
                for (int f = 0; f < FB; f++)                                          \
                    dv[f] = V_LOAD(dr + f * L + x);                                   \
                for (int t = 0; t < TB; t++) {                                        \
                    VT xv = V_LOAD(xr + offs[t] + x);                                 \
                    for (int f = 0; f < FB; f++)                                      \
                        acc[f][t] = V_ADD(acc[f][t], V_MUL(dv[f], xv));               \
                }                                                                     \
            }                                                                         \
            if (x1 == full && full < ow) {                                            \
                for (int f = 0; f < FB; f++)                                          \
                    dv[f] = V_MASKLOAD(dr + f * L + full, m);                         \
                for (int t = 0; t < TB; t++) {                                        \
                    VT xv = V_AND(V_LOAD(xr + offs[t] + full), m);                    \
                    for (int f = 0; f < FB; f++)                                      \
                        acc[f][t] = V_ADD(acc[f][t], V_MUL(dv[f], xv));               \
                }                                                                     \
            }                                                                         \
            for (int f = 0; f < FB; f++)                                              \
                for (int t = 0; t < TB; t++)                                          \
                    total[f][t] = V_ADD(total[f][t], acc[f][t]);                      \
        }                                                                             \
    }                                                                                 \
    for (int f = 0; f < FB; f++)                                                      \
        for (int t = 0; t < TB; t++)                                                  \
            dw[f * K + t] = V_HSUM(total[f][t]);                                      \
}
FCNN_DIRECT_WTILE(1, 1)
FCNN_DIRECT_WTILE(1, 2)
FCNN_DIRECT_WTILE(1, 3)
FCNN_DIRECT_WTILE(2, 1)
FCNN_DIRECT_WTILE(2, 2)
FCNN_DIRECT_WTILE(2, 3)
FCNN_DIRECT_WTILE(3, 1)
FCNN_DIRECT_WTILE(3, 2)
FCNN_DIRECT_WTILE(3, 3)
#undef FCNN_DIRECT_WTILE

#define FCNN_WTILE(FB, TB) FCNN_DCAT(FCNN_DCAT(FCNN_D(fcnn_direct_wtile), FB), TB)

/* One sample's weight and bias gradients (as fcnn_direct_wgrad_*): blocks
 * of 3 filters x 3 taps; the bias gradient of each filter summed over its
 * flat dout plane per lane, in runs of FCNN_DIRECT_RUN vectors as above,
 * the lanes added last. */
FCNN_TARGET static void FCNN_D(fcnn_direct_wgrad)(
    const T *xs, const ptrdiff_t *offs, ptrdiff_t K, const T *d, ptrdiff_t F, ptrdiff_t oh,
    ptrdiff_t ow, ptrdiff_t rstep, T *dw, T *db)
{
    ptrdiff_t L = oh * ow, full = L - L % VL;
    for (ptrdiff_t f0 = 0; f0 < F; f0 += 3) {
        ptrdiff_t fb = F - f0 < 3 ? F - f0 : 3;
        const T *df = d + f0 * L;
        for (ptrdiff_t t0 = 0; t0 < K; t0 += 3) {
            ptrdiff_t tb = K - t0 < 3 ? K - t0 : 3;
            const ptrdiff_t *o = offs + t0;
            T *g = dw + f0 * K + t0;
            switch (fb * 4 + tb) {
            case 5: FCNN_WTILE(1, 1)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 6: FCNN_WTILE(1, 2)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 7: FCNN_WTILE(1, 3)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 9: FCNN_WTILE(2, 1)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 10: FCNN_WTILE(2, 2)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 11: FCNN_WTILE(2, 3)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 13: FCNN_WTILE(3, 1)(xs, o, df, L, oh, ow, rstep, g, K); break;
            case 14: FCNN_WTILE(3, 2)(xs, o, df, L, oh, ow, rstep, g, K); break;
            default: FCNN_WTILE(3, 3)(xs, o, df, L, oh, ow, rstep, g, K); break;
            }
        }
    }
    for (ptrdiff_t f = 0; f < F; f++) {
        const T *df = d + f * L;
        VT s = V_ZERO();
        for (ptrdiff_t l0 = 0; l0 < full; l0 += FCNN_DIRECT_RUN * VL) {
            ptrdiff_t l1 = l0 + FCNN_DIRECT_RUN * VL < full ? l0 + FCNN_DIRECT_RUN * VL : full;
            VT run = V_ZERO();
            for (ptrdiff_t l = l0; l < l1; l += VL)
                run = V_ADD(run, V_LOAD(df + l));
            s = V_ADD(s, run);
        }
        if (full < L)
            s = V_ADD(s, V_MASKLOAD(df + full, V_MASK(L - full)));
        db[f] = V_HSUM(s);
    }
}
#undef FCNN_WTILE

#undef FCNN_D
#undef T
#undef SFX
#undef VT
#undef VL
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_MUL
#undef V_AND
#undef V_MASK
#undef V_MASKLOAD
#undef V_HSUM
