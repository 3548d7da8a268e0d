/* ---------------------------------------------------------------------------------------------
 * fewbit C runtime (kernels and API). Appended by the exporter after the model's tables; see
 * fewbit_model.h for the API. C99, no dynamic allocation, no stdio; sqrt (and exp when the
 * head is fine-tuned) from libm.
 *
 * Layout: activations are pixel-major (H, W, C), so an im2col row of a convolution is kw * C
 * contiguous values per kernel row; a stage whose output is flattened (into a linear layer or
 * the embedding) writes it in PyTorch's (C, H, W) order, and a linear layer is a 1x1
 * convolution of a 1x1 image. Weights stay packed in flash (const arrays, rows in (ky, kx, C)
 * order); each layer unpacks `group` output channels at a time into the arena, transposed
 * for a layer with few inputs per output (the products then run across output channels).
 *
 * BatchNorm uses statistics of the support set, frozen (fewbit_freeze_statistics): for each
 * BatchNorm layer in turn, every support image is run through the layers before it (already
 * frozen) and the sums of that layer's outputs and of their squares are accumulated, so one
 * image's activations are live at a time. Each query is then embedded on its own.
 * ------------------------------------------------------------------------------------------- */

#define FB_ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

/* Little-endian bit stream: `n` (<= 25) bits at bit offset `bit`; arrays carry 4 bytes of padding. */
static uint32_t fb_bits(const uint8_t *p, uint32_t bit, int n) {
    const uint8_t *q = p + (bit >> 3);
    uint32_t w = (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) | ((uint32_t)q[3] << 24);
    return (w >> (bit & 7u)) & ((n >= 32) ? 0xFFFFFFFFu : ((1u << n) - 1u));
}

/* What a stage's quantizers are once known: its input range (constant, or taken from the support
 * set), and the clip range of its requantized output. */
typedef struct {
    float iq_scale;
    int32_t iq_zero, out_zero, out_lo, out_hi;
} fb_live;

static fb_live *fb_live_of(unsigned char *arena, int s) { return (fb_live *)(void *)(arena + FB_OFF_LIVE) + s; }

static float fb_rintf(float x) { /* round half to even, as numpy's rint */
    const float big = 8388608.0f; /* 2**23: floats this large are integers */
    if (x >= big || x <= -big) return x;
    return x >= 0.0f ? (x + big) - big : (x - big) + big;
}

/* (scale, zero point) of a range, in float32 as a per-batch quantizer takes them (the range holds 0). */
static void fb_range_qparams(double lo, double hi, int qmin, int qmax, float *scale, int32_t *zero) {
    float lo32 = (float)lo, hi32 = (float)hi, sc, z;
    if (lo32 > 0.0f) lo32 = 0.0f;
    if (hi32 < 0.0f) hi32 = 0.0f;
    sc = (hi32 - lo32) / (float)(qmax - qmin);
    if (sc < 1e-8f) sc = 1e-8f;
    z = fb_rintf(-lo32 / sc);
    if (z < (float)qmin) z = (float)qmin;
    if (z > (float)qmax) z = (float)qmax;
    *scale = sc;
    *zero = (int32_t)z;
}

/* The model's float32 input at index i of an input (channel-major): a series' value as given, or
 * an image's normalised pixel, from the table of the 256 pixel values per channel. */
#if FEWBIT_INPUT_FLOAT
#define FB_INPUT_VALUE(input, i) ((input)[i])
#else
#define FB_INPUT_VALUE(input, i) \
    fb_lut[((i) / ((size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH)) * 256u + (input)[i]]
#endif

/* The range of the support set's inputs (for a first layer that takes its range per batch). */
static void fb_image_range(const fewbit_input_t *images, int n, double *lo, double *hi) {
    size_t k;
    int j;
    float mn = 0.0f, mx = 0.0f;
    for (j = 0; j < n; j++) {
        const fewbit_input_t *image = images + (size_t)j * FEWBIT_INPUT_VALUES;
        for (k = 0; k < (size_t)FEWBIT_INPUT_VALUES; k++) {
            float v = FB_INPUT_VALUE(image, k);
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
    }
    *lo = mn;
    *hi = mx;
}

/* Sequential reader of a packed weight: which dense positions are kept, and their codes. */
typedef struct {
    uint32_t kept_i;     /* kept elements consumed */
    uint32_t next_kept;  /* dense position of the next kept element (indices / rice) */
    uint32_t after_prev; /* rice: previous kept position + 1 */
    uint32_t ubit;       /* rice: bit position in the unary stream */
} fb_reader;

static uint32_t fb_advance(const fb_stage *st, fb_reader *r) {
    if (r->kept_i >= st->kept) return 0xFFFFFFFFu;
    if (st->mask_format == FB_MASK_BITMAP) { /* the next set bit, whole zero bytes at a time */
        uint32_t pos = r->after_prev;
        while (pos < st->numel && !((st->mask[pos >> 3] >> (pos & 7u)) & 1u))
            pos = (pos & 7u) == 0 && st->mask[pos >> 3] == 0 ? pos + 8u : pos + 1u;
        r->after_prev = pos + 1u;
        return pos < st->numel ? pos : 0xFFFFFFFFu;
    }
    if (st->mask_format == FB_MASK_INDICES) return fb_bits(st->mask, r->kept_i * (uint32_t)st->index_bits, st->index_bits);
    {
        /* rice: quotient in unary (ones ended by a zero), remainder of k bits */
        uint32_t q = 0, gap, pos;
        const uint8_t *unary = st->mask + st->rice_unary_offset;
        while ((unary[r->ubit >> 3] >> (r->ubit & 7u)) & 1u) {
            q++;
            r->ubit++;
        }
        r->ubit++;
        gap = (q << st->rice_k) | (st->rice_k ? fb_bits(st->mask + 1, r->kept_i * (uint32_t)st->rice_k, st->rice_k) : 0u);
        pos = r->after_prev + gap;
        r->after_prev = pos + 1u;
        return pos;
    }
}

static void fb_reader_start(const fb_stage *st, fb_reader *r) {
    r->kept_i = 0;
    r->after_prev = 0;
    r->ubit = 0;
    r->next_kept = st->mask_format != FB_MASK_NONE ? fb_advance(st, r) : 0u;
}

/* Whether dense position `pos` is kept; consumes it from the reader when it is. */
static int fb_take(const fb_stage *st, fb_reader *r, uint32_t pos) {
    int kept;
    kept = st->mask_format == FB_MASK_NONE || pos == r->next_kept;
    return kept;
}

static void fb_consume(const fb_stage *st, fb_reader *r) {
    r->kept_i++;
    if (st->mask_format != FB_MASK_NONE) r->next_kept = fb_advance(st, r);
}

static int32_t fb_code(const fb_stage *st, uint32_t kept_i) {
    return (int32_t)fb_bits(st->codes, kept_i * (uint32_t)st->bits, st->bits) * st->code_step + st->code_min;
}

/* Writes `rows` output channels from `row0`: VALUE of kept elements, 0 elsewhere; row-major
 * [rows][fan], or [fan][rows] when `transposed`. VALUE sees `code` (the integer code), `fval` (a
 * float weight's value) and the row's `zp_row`, `scale_row`, `book`, `wenc`, all in locals: a
 * store through a byte pointer may alias anything, and locals keep the loops vectorizable. */
#define FB_ROW_CONSTS(row)                                                                                     \
    const int32_t zp_row = st->zp ? st->zp[st->zp_n > 1 ? (row) : 0] : 0;                                     \
    const float scale_row = st->scale ? st->scale[st->scale_n > 1 ? (row) : 0] : 0.0f;                        \
    const float *book = st->book;                                                                              \
    const int wenc = st->wenc;                                                                                 \
    (void)zp_row;                                                                                              \
    (void)scale_row;                                                                                           \
    (void)book;                                                                                                \
    (void)wenc
#define FB_UNPACK(NAME, TYPE, VALUE)                                                                          \
    static void NAME(const fb_stage *st, fb_reader *r, int row0, int rows, TYPE *dst, int transposed) {       \
        int c;                                                                                                \
        const int32_t code_step = st->code_step, code_min = st->code_min;                                     \
        uint32_t j, fan = (uint32_t)st->fan, pos = (uint32_t)row0 * fan;                                      \
        if (st->mask_format != FB_MASK_NONE) {                                                                \
            /* kept positions in order: zeros, then only the kept elements (work ~ kept, not size) */         \
            uint32_t end = pos + (uint32_t)rows * fan, row_start = pos;                                       \
            int row = row0;                                                                                   \
            size_t k;                                                                                         \
            for (k = 0; k < (size_t)rows * fan; k++) dst[k] = (TYPE)0;                                        \
            while (r->next_kept < end) {                                                                      \
                int32_t code = st->wenc == FB_ENC_FLOAT ? 0 : fb_code(st, r->kept_i);                         \
                float fval = st->wenc == FB_ENC_FLOAT ? st->fvals[r->kept_i] : 0.0f;                          \
                while (r->next_kept >= row_start + fan) { /* no division: rows advance in order */            \
                    row_start += fan;                                                                         \
                    row++;                                                                                    \
                }                                                                                             \
                {                                                                                             \
                FB_ROW_CONSTS(row);                                                                            \
                (void)fval;                                                                                    \
                j = r->next_kept - row_start;                                                                 \
                dst[transposed ? (size_t)j * (size_t)rows + (size_t)(row - row0)                              \
                               : (size_t)(row - row0) * fan + j] = (TYPE)(VALUE);                             \
                }                                                                                             \
                fb_consume(st, r);                                                                            \
            }                                                                                                 \
            return;                                                                                           \
        }                                                                                                     \
        for (c = 0; c < rows; c++) {                                                                          \
            int row = row0 + c;                                                                               \
            TYPE *out = transposed ? dst + c : dst + (size_t)c * fan;                                         \
            size_t step = transposed ? (size_t)rows : 1u;                                                     \
            const float fval = 0.0f;                                                                          \
            FB_ROW_CONSTS(row);                                                                                \
            (void)fval;                                                                                        \
            if (st->mask_format == FB_MASK_NONE && wenc != FB_ENC_FLOAT && (st->bits == 8 || st->bits == 4 || \
                st->bits == 2 || st->bits == 1) && (pos * (uint32_t)st->bits) % 8u == 0) {                  \
                /* dense codes from whole bytes: no per-element bit arithmetic */                             \
                const uint8_t *p = st->codes + (pos * (uint32_t)st->bits) / 8u;                               \
                uint32_t b = (uint32_t)st->bits, lanes = (1u << b) - 1u;                                      \
                uint32_t lp = b == 8 ? 0u : b == 4 ? 1u : b == 2 ? 2u : 3u; /* log2 of codes per byte */      \
                uint32_t in_byte = (1u << lp) - 1u;                                                           \
                if (step == 1 && b == 4 && fan % 2u == 0) { /* byte loops the compiler vectorizes */         \
                    for (j = 0; j < fan / 2u; j++) {                                                          \
                        int32_t lo_code = (int32_t)(p[j] & 15u) * code_step + code_min;                       \
                        int32_t hi_code = (int32_t)(p[j] >> 4) * code_step + code_min;                        \
                        int32_t code = lo_code;                                                               \
                        out[2u * j] = (TYPE)(VALUE);                                                          \
                        code = hi_code;                                                                       \
                        out[2u * j + 1u] = (TYPE)(VALUE);                                                     \
                    }                                                                                         \
                } else if (step == 1 && b == 2 && fan % 4u == 0) {                                            \
                    for (j = 0; j < fan / 4u; j++) {                                                          \
                        uint32_t byte = p[j], q;                                                              \
                        for (q = 0; q < 4u; q++) {                                                            \
                            int32_t code = (int32_t)((byte >> (2u * q)) & 3u) * code_step + code_min;         \
                            out[4u * j + q] = (TYPE)(VALUE);                                                  \
                        }                                                                                     \
                    }                                                                                         \
                } else if (step == 1 && b == 1 && fan % 8u == 0) {                                            \
                    for (j = 0; j < fan / 8u; j++) {                                                          \
                        uint32_t byte = p[j], q;                                                              \
                        for (q = 0; q < 8u; q++) {                                                            \
                            int32_t code = (int32_t)((byte >> q) & 1u) * code_step + code_min;                \
                            out[8u * j + q] = (TYPE)(VALUE);                                                  \
                        }                                                                                     \
                    }                                                                                         \
                } else if (step == 1 && b == 8) {                                                             \
                    for (j = 0; j < fan; j++) {                                                               \
                        int32_t code = (int32_t)p[j] * code_step + code_min;                                  \
                        out[j] = (TYPE)(VALUE);                                                               \
                    }                                                                                         \
                } else {                                                                                      \
                    for (j = 0; j < fan; j++) {                                                               \
                        uint32_t u = ((uint32_t)p[j >> lp] >> ((j & in_byte) * b)) & lanes;                   \
                        int32_t code = (int32_t)u * code_step + code_min;                                     \
                        out[j * step] = (TYPE)(VALUE);                                                        \
                    }                                                                                         \
                }                                                                                             \
                r->kept_i += fan;                                                                             \
                pos += fan;                                                                                   \
                continue;                                                                                     \
            }                                                                                                 \
            for (j = 0; j < fan; j++, pos++) {                                                                \
                TYPE v = (TYPE)0;                                                                             \
                if (fb_take(st, r, pos)) {                                                                    \
                    int32_t code = wenc == FB_ENC_FLOAT ? 0 : fb_code(st, r->kept_i);                         \
                    if (wenc == FB_ENC_FLOAT) v = (TYPE)st->fvals[r->kept_i];                                 \
                    else v = (TYPE)(VALUE);                                                                   \
                    fb_consume(st, r);                                                                        \
                }                                                                                             \
                out[j * step] = v;                                                                            \
            }                                                                                                 \
        }                                                                                                     \
    }

#if FEWBIT_INTEGER_BODY
/* ================================================================================= integer body */

/* floor(x + 0.5) without libm: |x| < 2**62 here. */
static int64_t fb_round_half_up(double x) {
    double t = x + 0.5;
    int64_t i = (int64_t)t;
    if ((double)i > t) i -= 1;
    return i;
}

static double fb_clamp_double(double x) {
    const double limit = 4611686018427387904.0; /* 2**62 */
    if (x > limit) return limit;
    if (x < -limit) return -limit;
    return x;
}

/* Products run on unsigned activation codes x signed 8-bit weights where the weights fit (the
 * zero point is subtracted once per output, as zero * sum of the row's weights), which compilers
 * map to byte dot-product instructions; on 16-bit centered values otherwise. */
#if FB_BYTE_PRODUCTS
typedef uint8_t fb_in_t;
typedef int8_t fb_w_t;
#else
typedef int16_t fb_in_t;
typedef int16_t fb_w_t;
#endif

FB_UNPACK(fb_unpack_int, fb_w_t, code - zp_row)

/* Products on a core with the Armv7E-M DSP instructions (Cortex-M4, M7, M33...): SMLAD adds two
 * 16 x 16-bit products to an accumulator in one instruction. Four codes and four weights are
 * loaded as one word each and widened to pairs of 16-bit lanes (UXTB16 / SXTB16 of the word and of
 * it rotated by 8: lanes (0, 2) and (1, 3)), so two SMLADs take four products. Written with the
 * ACLE intrinsics (CMSIS's __SMLAD), with plain C that computes the same where they are missing:
 * -DFEWBIT_DSP_KERNELS=1 runs these kernels on any compiler, =0 leaves them out. */
#ifndef FEWBIT_DSP_KERNELS
#if defined(__ARM_FEATURE_SIMD32) && FB_BYTE_PRODUCTS
#define FEWBIT_DSP_KERNELS 1
#else
#define FEWBIT_DSP_KERNELS 0
#endif
#endif
#if FEWBIT_DSP_KERNELS && !FB_BYTE_PRODUCTS
#undef FEWBIT_DSP_KERNELS
#define FEWBIT_DSP_KERNELS 0 /* weights of more than 8 bits take the 16-bit path */
#endif

#if FEWBIT_DSP_KERNELS
#if defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#define fb_smlad(a, b, acc) __smlad((int16x2_t)(a), (int16x2_t)(b), (acc))
#define fb_sxtb16(x) ((uint32_t)__sxtb16((int8x4_t)(x)))
#define fb_uxtb16(x) ((uint32_t)__uxtb16((uint8x4_t)(x)))
#if defined(__GNUC__) /* the rotation inside the instruction (ACLE has no such intrinsic) */
static inline uint32_t fb_sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t fb_uxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#endif
#else
static int32_t fb_lane(uint32_t x) { return (int32_t)(x & 0xFFFFu) - ((x & 0x8000u) ? 0x10000 : 0); }
static int32_t fb_smlad(uint32_t a, uint32_t b, int32_t acc) {
    return acc + fb_lane(a) * fb_lane(b) + fb_lane(a >> 16) * fb_lane(b >> 16);
}
static uint32_t fb_sxtb16(uint32_t x) {
    uint32_t lo = (x & 0xFFu) | ((x & 0x80u) ? 0xFF00u : 0u), hi = ((x >> 16) & 0xFFu) | ((x & 0x800000u) ? 0xFF00u : 0u);
    return lo | (hi << 16);
}
static uint32_t fb_uxtb16(uint32_t x) { return x & 0x00FF00FFu; }
#endif
#if !defined(__ARM_FEATURE_SIMD32) || !defined(__GNUC__)
#define fb_sxtb16_ror8(x) fb_sxtb16(((x) >> 8) | ((x) << 24))
#define fb_uxtb16_ror8(x) fb_uxtb16(((x) >> 8) | ((x) << 24))
#endif

static uint32_t fb_word(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* acc0[c], acc1[c] = p0 . w[c], p1 . w[c] for `gn` rows of `fan`: two rows and two pixels a step. */
static void fb_products2_dsp(const uint8_t *p0, const uint8_t *p1, const int8_t *w, int fan, int gn, int32_t *acc0,
                             int32_t *acc1) {
    int c, k, end = fan & ~3;
    for (c = 0; c < gn; c += 2) {
        const int8_t *w0 = w + (size_t)c * (size_t)fan;
        const int8_t *w1 = c + 1 < gn ? w0 + fan : w0; /* an odd last row: itself twice */
        const uint8_t *a = p0, *b = p1, *stop = p0 + end;
        int32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;
        const int8_t *u = w0, *v = w1;
        while (a < stop) {
            uint32_t x = fb_word(a), y = fb_word(b), wu = fb_word(u), wv = fb_word(v);
            uint32_t x02 = fb_uxtb16(x), x13 = fb_uxtb16_ror8(x), y02 = fb_uxtb16(y), y13 = fb_uxtb16_ror8(y);
            uint32_t lo = fb_sxtb16(wu), hi = fb_sxtb16_ror8(wu);
            a0 = fb_smlad(x13, hi, fb_smlad(x02, lo, a0));
            b0 = fb_smlad(y13, hi, fb_smlad(y02, lo, b0));
            lo = fb_sxtb16(wv);
            hi = fb_sxtb16_ror8(wv);
            a1 = fb_smlad(x13, hi, fb_smlad(x02, lo, a1));
            b1 = fb_smlad(y13, hi, fb_smlad(y02, lo, b1));
            a += 4;
            b += 4;
            u += 4;
            v += 4;
        }
        for (k = end; k < fan; k++) {
            a0 += (int32_t)p0[k] * w0[k];
            b0 += (int32_t)p1[k] * w0[k];
            a1 += (int32_t)p0[k] * w1[k];
            b1 += (int32_t)p1[k] * w1[k];
        }
        acc0[c] = a0;
        acc1[c] = b0;
        if (c + 1 < gn) {
            acc0[c + 1] = a1;
            acc1[c + 1] = b1;
        }
    }
}
#endif

/* acc[c] = patch . w[c] for `gn` rows of `fan` (four rows share each patch load) */
static void fb_products(const fb_in_t *patch, const fb_w_t *w, int fan, int gn, int transposed, int32_t *acc) {
    int c, k;
#if FEWBIT_DSP_KERNELS
    if (!transposed) { /* the pixel twice: the DSP kernel's second half goes unused */
        int32_t *spare = acc + gn;
        fb_products2_dsp(patch, patch, w, fan, gn, acc, spare);
        return;
    }
#endif
    if (transposed) { /* few inputs: accumulate across the output channels */
        for (c = 0; c < gn; c++) acc[c] = 0;
        for (k = 0; k < fan; k++) {
            int32_t v = patch[k];
            const fb_w_t *wk = w + (size_t)k * (size_t)gn;
            for (c = 0; c < gn; c++) acc[c] += v * wk[c];
        }
        return;
    }
    for (c = 0; c + 4 <= gn; c += 4) {
        const fb_w_t *w0 = w + (size_t)c * (size_t)fan, *w1 = w0 + fan, *w2 = w1 + fan, *w3 = w2 + fan;
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (k = 0; k < fan; k++) {
            int32_t v = patch[k];
            s0 += v * w0[k];
            s1 += v * w1[k];
            s2 += v * w2[k];
            s3 += v * w3[k];
        }
        acc[c] = s0;
        acc[c + 1] = s1;
        acc[c + 2] = s2;
        acc[c + 3] = s3;
    }
    for (; c < gn; c++) {
        const fb_w_t *wc = w + (size_t)c * (size_t)fan;
        int32_t s0 = 0;
        for (k = 0; k < fan; k++) s0 += (int32_t)patch[k] * wc[k];
        acc[c] = s0;
    }
}

/* The products of two pixels at once: each weight row is loaded once for both. */
static void fb_products2(const fb_in_t *p0, const fb_in_t *p1, const fb_w_t *w, int fan, int gn, int transposed,
                         int32_t *acc0, int32_t *acc1) {
    int c, k;
    if (transposed) { /* both pixels from each weight load */
        for (c = 0; c < gn; c++) acc0[c] = acc1[c] = 0;
        for (k = 0; k < fan; k++) {
            int32_t x = p0[k], y = p1[k];
            const fb_w_t *wk = w + (size_t)k * (size_t)gn;
            for (c = 0; c < gn; c++) {
                acc0[c] += x * wk[c];
                acc1[c] += y * wk[c];
            }
        }
        return;
    }
#if FEWBIT_DSP_KERNELS
    fb_products2_dsp(p0, p1, w, fan, gn, acc0, acc1);
    return;
#endif
    if (gn % 4) {
        fb_products(p0, w, fan, gn, transposed, acc0);
        fb_products(p1, w, fan, gn, transposed, acc1);
        return;
    }
    for (c = 0; c < gn; c += 4) {
        const fb_w_t *w0 = w + (size_t)c * (size_t)fan, *w1 = w0 + fan, *w2 = w1 + fan, *w3 = w2 + fan;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        for (k = 0; k < fan; k++) {
            int32_t x = p0[k], y = p1[k];
            a0 += x * (int32_t)w0[k];
            a1 += x * (int32_t)w1[k];
            a2 += x * (int32_t)w2[k];
            a3 += x * (int32_t)w3[k];
            b0 += y * (int32_t)w0[k];
            b1 += y * (int32_t)w1[k];
            b2 += y * (int32_t)w2[k];
            b3 += y * (int32_t)w3[k];
        }
        acc0[c] = a0;
        acc0[c + 1] = a1;
        acc0[c + 2] = a2;
        acc0[c + 3] = a3;
        acc1[c] = b0;
        acc1[c + 1] = b1;
        acc1[c + 2] = b2;
        acc1[c + 3] = b3;
    }
}

/* im2col row of output pixel (oy, ox) in (ky, kx, C) order, the zero point's code outside the image
 * (a real zero): codes as they are (byte products) or `code - zero` (16-bit products). */
static void fb_patch_int(const fb_stage *st, int zero, const uint8_t *in, int oy, int ox, fb_in_t *patch) {
    int ky, kx, ci;
    fb_in_t *p = patch, pad = FB_BYTE_PRODUCTS ? (fb_in_t)zero : (fb_in_t)0;
    int cin = st->cin, shift = FB_BYTE_PRODUCTS ? 0 : zero;
    for (ky = 0; ky < st->kh; ky++) {
        int y = oy * st->stride + ky - st->pad_h;
        if (y < 0 || y >= st->hin) {
            for (ci = 0; ci < st->kw * cin; ci++) *p++ = pad;
            continue;
        }
        for (kx = 0; kx < st->kw; kx++) {
            int x = ox * st->stride + kx - st->pad_w;
            if (x < 0 || x >= st->win) {
                for (ci = 0; ci < cin; ci++) p[ci] = pad;
            } else {
                const uint8_t *q = in + ((size_t)y * (size_t)st->win + (size_t)x) * (size_t)cin;
                for (ci = 0; ci < cin; ci++) p[ci] = (fb_in_t)((int)q[ci] - shift);
            }
            p += cin;
        }
    }
}

/* Byte products: subtract zero * (the row's weight sum) so the accumulators are sum (code - zero) * w. */
static void fb_unzero(int32_t *acc, const int32_t *rowsum, int gn, int zero) {
    int c;
    if (!FB_BYTE_PRODUCTS) return;
    for (c = 0; c < gn; c++) acc[c] -= zero * rowsum[c];
}

static void fb_row_sums(const fb_w_t *w, int fan, int gn, int transposed, int32_t *rowsum) {
    int c, k;
    for (c = 0; c < gn; c++) {
        int32_t sum = 0;
        if (transposed)
            for (k = 0; k < fan; k++) sum += w[(size_t)k * (size_t)gn + (size_t)c];
        else
            for (k = 0; k < fan; k++) sum += w[(size_t)c * (size_t)fan + (size_t)k];
        rowsum[c] = sum;
    }
}

/* The running extremes of the pooling window's accumulators: requantization is monotone in the
 * accumulator (increasing where M >= 0, decreasing where M < 0), so the pooled output is the
 * requantized largest accumulator, or the smallest: one requantization per pooled output. */
static void fb_window(const int32_t *acc, int gn, int first, int32_t *high, int32_t *low) {
    int c;
    if (first) {
        for (c = 0; c < gn; c++) high[c] = low[c] = acc[c];
        return;
    }
    for (c = 0; c < gn; c++) {
        high[c] = acc[c] > high[c] ? acc[c] : high[c];
        low[c] = acc[c] < low[c] ? acc[c] : low[c];
    }
}

/* clip(floor((acc * M + B + half) / 2**S) + zero, lo, hi) per channel, of the window extreme the sign
 * of M picks. The right shift of a negative number is implementation-defined in C99: every common
 * compiler makes it arithmetic (a floor division), which the first loop relies on and the compiler
 * vectorizes; the second is the portable form. */
static void fb_requant(const int32_t *high, const int32_t *low, const int32_t *mult, const int32_t *shift,
                       const int64_t *offset, const int64_t *half, int gn, int64_t zero, int64_t lo, int64_t hi,
                       int32_t *out) {
    int c;
    if ((((int64_t)-1) >> 1) == -1) {
        for (c = 0; c < gn; c++) {
            int64_t a = mult[c] >= 0 ? high[c] : low[c];
            int64_t v = ((a * mult[c] + offset[c] + half[c]) >> shift[c]) + zero;
            out[c] = (int32_t)(v < lo ? lo : v > hi ? hi : v);
        }
        return;
    }
    for (c = 0; c < gn; c++) {
        int64_t v = (int64_t)(mult[c] >= 0 ? high[c] : low[c]) * mult[c] + offset[c] + half[c];
        v = (v >= 0 ? (v >> shift[c]) : -(((-v) - 1) >> shift[c]) - 1) + zero;
        out[c] = (int32_t)(v < lo ? lo : v > hi ? hi : v);
    }
}

typedef struct {
    int32_t *mult;
    int32_t *shift;
    int64_t *offset;
    int64_t *half;
} fb_frozen;

static fb_frozen fb_frozen_of(unsigned char *arena, int stage) {
    fb_frozen f;
    size_t cout = (size_t)fb_stages[stage].cout;
    f.mult = (int32_t *)(void *)(arena + fb_frozen_offset[stage]);
    f.shift = f.mult + cout;
    f.offset = (int64_t *)(void *)(arena + fb_frozen_offset[stage] + FB_ALIGN8(8u * cout));
    f.half = f.offset + cout;
    return f;
}

/* (M, S, B) of m * acc + o (fewbit.runtime.fixedpoint.multiplier, step for step). */
static void fb_multiplier(double m, double o, int32_t *mult, int32_t *shift, int64_t *offset) {
    const double m_limit = 2147483647.0, b_limit = 2305843009213693952.0; /* 2**31 - 1, 2**61 */
    double t = 1.0;
    int s = 0;
    int64_t big;
    m = fb_clamp_double(m);
    o = fb_clamp_double(o);
    while (s < 62 && (m < 0 ? -m : m) * (t * 2.0) < m_limit && (o < 0 ? -o : o) * (t * 2.0) < b_limit) {
        t *= 2.0;
        s++;
    }
    big = fb_round_half_up(m * t);
    if (big > 2147483647) big = 2147483647;
    if (big < -2147483647) big = -2147483647;
    *mult = (int32_t)big;
    big = fb_round_half_up(o * t);
    if (big > (int64_t)2305843009213693952) big = (int64_t)2305843009213693952;
    if (big < -(int64_t)2305843009213693952) big = -(int64_t)2305843009213693952;
    *offset = big;
    *shift = s;
}

/* Per channel (a, b): the stage's output before ReLU is a * acc + b, from the support set's sums
 * (BatchNorm) or from its bias (fewbit.runtime.support_stats, step for step). */
static void fb_affine(const fb_stage *st, const fb_live *live, int c, int64_t count, const int64_t *sum1,
                      const int64_t *sum2, double *a, double *b) {
    double scale = (double)live->iq_scale * (double)st->scale[st->scale_n > 1 ? c : 0];
    if (st->gamma) {
        double mean = (double)sum1[c] / (double)count;
        double var = (double)sum2[c] / (double)count - mean * mean;
        double inv;
        if (var < 0.0) var = 0.0;
        inv = 1.0 / sqrt(var * scale * scale + st->eps);
        *a = fb_clamp_double(scale * inv * (double)st->gamma[c]);
        *b = (double)st->beta[c] - mean * *a;
    } else {
        *a = scale;
        *b = st->bias ? (double)st->bias[c] : 0.0;
    }
}

/* Freeze stage `s`: its requantization to the next stage's (live) input range or to the Q16 embedding. */
static void fb_freeze_stage(unsigned char *arena, int s, int64_t count, const int64_t *sum1, const int64_t *sum2) {
    const fb_stage *st = &fb_stages[s];
    fb_live *live = fb_live_of(arena, s);
    fb_frozen f = fb_frozen_of(arena, s);
    int c, last = (s == FB_NUM_STAGES - 1);
    double out_scale = 0.0;
    if (last) {
        live->out_zero = 0;
        live->out_lo = st->relu ? 0 : INT32_MIN;
        live->out_hi = INT32_MAX;
    } else {
        const fb_live *next = fb_live_of(arena, s + 1);
        int qmin = fb_stages[s + 1].iq_qmin;
        out_scale = (double)next->iq_scale;
        live->out_zero = next->iq_zero;
        live->out_lo = st->relu && next->iq_zero > qmin ? next->iq_zero : qmin;
        live->out_hi = fb_stages[s + 1].iq_qmax;
    }
    for (c = 0; c < st->cout; c++) {
        double a, b;
        fb_affine(st, live, c, count, sum1, sum2, &a, &b);
        if (last) { /* the embedding: Q16 */
            fb_multiplier(a * FB_EMBED_ONE, b * FB_EMBED_ONE, &f.mult[c], &f.shift[c], &f.offset[c]);
        } else {
            fb_multiplier(a / out_scale, b / out_scale, &f.mult[c], &f.shift[c], &f.offset[c]);
        }
        f.half[c] = f.shift[c] > 0 ? (int64_t)1 << (f.shift[c] - 1) : 0;
    }
}

/* Pooled output (py, px) of channels g0..g0+gn-1: codes (uint8) pixel-major, or in (C, H, W) order
 * when flattened into a linear layer, or, from the last stage, the Q16 embedding (int32, C, H, W). */
static void fb_write_pooled(const fb_stage *st, int last, void *out, int py, int px, int g0, int gn, const int32_t *best) {
    int c;
    if (last) {
        for (c = 0; c < gn; c++)
            ((int32_t *)out)[(size_t)(g0 + c) * (size_t)(st->hp * st->wp) + (size_t)(py * st->wp + px)] = best[c];
    } else if (st->chw_out) {
        for (c = 0; c < gn; c++)
            ((uint8_t *)out)[(size_t)(g0 + c) * (size_t)(st->hp * st->wp) + (size_t)(py * st->wp + px)] = (uint8_t)best[c];
    } else {
        uint8_t *o = (uint8_t *)out + (size_t)(py * st->wp + px) * (size_t)st->cout + (size_t)g0;
        for (c = 0; c < gn; c++) o[c] = (uint8_t)best[c];
    }
}

/* --------------------------------------------------------------------------------- sparse rows
 * A pruned layer (`sparse`: at most half its weights kept, each of at most 8 bits) is decoded once,
 * by fewbit_init, into a schedule in the arena: per output channel, its kept positions grouped by
 * weight value (chunks of at most FB_CHUNK positions, ascending, as byte offsets into the lanes
 * below), and the sum of its weights. Its
 * products are then sums of activation codes and one multiply per chunk, over FB_LANES output
 * pixels at once: their codes lie side by side as 16-bit lanes of 32-bit words (two pixels a
 * word), so one word add sums two pixels; a chunk sums at most 256 codes of 8 bits, which cannot
 * carry across lanes. Nothing is decoded per image or per output pixel. */
#define FB_CHUNK 256u

/* On a core with vectors (FEWBIT_VECTOR_LANES, fewbit_model.h) 16 pixels: the eight words of a
 * position are one load and one add (two with 128-bit vectors). Without them (a Cortex-M4) 8 pixels,
 * four words added one by one: more would not stay in its registers. */
#if FEWBIT_VECTOR_LANES
#define FB_LANES 16
#define FB_VECTOR_LANES 1
typedef uint32_t fb_lanes_v __attribute__((vector_size(32)));
#else
#define FB_LANES 8
#define FB_VECTOR_LANES 0
#endif
#define FB_LANE_WORDS (FB_LANES / 2)

static int32_t *fb_sched_rowsum(unsigned char *arena, int s) {
    return (int32_t *)(void *)(arena + fb_sched_offset[s]);
}

static uint16_t *fb_sched_stream(unsigned char *arena, int s) {
    return (uint16_t *)(void *)(arena + fb_sched_offset[s] + 4u * (size_t)fb_stages[s].cout);
}

static int32_t fb_i16(uint16_t v) { return (int32_t)v - ((v & 0x8000u) ? 0x10000 : 0); }

/* Stage s's schedule: [chunks] then per chunk [value, n, n positions] for each output channel. */
static void fb_schedule_build(unsigned char *arena, int s) {
    const fb_stage *st = &fb_stages[s];
    uint16_t *counts = (uint16_t *)(void *)(arena + FB_OFF_SCHED_TMP);
    uint32_t *cursor = (uint32_t *)(void *)(arena + FB_OFF_SCHED_TMP + 512u);
    int32_t *rowsum = fb_sched_rowsum(arena, s);
    uint16_t *stream = fb_sched_stream(arena, s);
    uint32_t at = 0, fan = (uint32_t)st->fan;
    fb_reader r, row_start;
    int c, u, codes = 1 << st->bits;
    fb_reader_start(st, &r);
    for (c = 0; c < st->cout; c++) {
        const int32_t zp_row = st->zp ? st->zp[st->zp_n > 1 ? c : 0] : 0;
        uint32_t end = (uint32_t)(c + 1) * fan, chunks = 0, head = at++;
        int32_t sum = 0;
        row_start = r;
        for (u = 0; u < codes; u++) counts[u] = 0;
        while (r.next_kept < end) { /* how many kept weights of each code (zeros are skipped) */
            u = (int)fb_bits(st->codes, r.kept_i * (uint32_t)st->bits, st->bits);
            if (u * st->code_step + st->code_min != zp_row) counts[u]++;
            fb_consume(st, &r);
        }
        for (u = 0; u < codes; u++) { /* the chunks' headers, in code order */
            int32_t value = u * st->code_step + st->code_min - zp_row;
            uint32_t left = counts[u];
            cursor[u] = at + 2u;
            sum += value * (int32_t)counts[u];
            while (left) {
                uint32_t n = left < FB_CHUNK ? left : FB_CHUNK;
                stream[at] = (uint16_t)(value & 0xFFFF);
                stream[at + 1u] = (uint16_t)n;
                at += 2u + n;
                left -= n;
                chunks++;
            }
        }
        stream[head] = (uint16_t)chunks;
        rowsum[c] = sum;
        r = row_start;
        for (u = 0; u < codes; u++) counts[u] = 0;
        while (r.next_kept < end) { /* the positions, each after its code's earlier ones */
            u = (int)fb_bits(st->codes, r.kept_i * (uint32_t)st->bits, st->bits);
            if (u * st->code_step + st->code_min != zp_row) {
                stream[cursor[u]++] = (uint16_t)((r.next_kept - (uint32_t)c * fan) * 4u * FB_LANE_WORDS);
                if (++counts[u] % FB_CHUNK == 0u) cursor[u] += 2u; /* over the next chunk's header */
            }
            fb_consume(st, &r);
        }
    }
}

/* The codes of FB_LANES output pixels (oy[p], ox[p]) in lanes: word k * FB_LANE_WORDS + j holds
 * pixel 2j's code at im2col position k in its low half, pixel 2j+1's in its high half; the zero
 * point's code outside the image. */
static void fb_patch_lanes(const fb_stage *st, int zero, const uint8_t *in, const int *oy, const int *ox, uint32_t *words) {
    int j, ky, kx, ci, cin = st->cin;
    for (j = 0; j < FB_LANE_WORDS; j++) {
        uint32_t *w = words + j;
        for (ky = 0; ky < st->kh; ky++) {
            int y0 = oy[2 * j] * st->stride + ky - st->pad_h, y1 = oy[2 * j + 1] * st->stride + ky - st->pad_h;
            for (kx = 0; kx < st->kw; kx++) {
                int x0 = ox[2 * j] * st->stride + kx - st->pad_w, x1 = ox[2 * j + 1] * st->stride + kx - st->pad_w;
                int in0 = y0 >= 0 && y0 < st->hin && x0 >= 0 && x0 < st->win;
                int in1 = y1 >= 0 && y1 < st->hin && x1 >= 0 && x1 < st->win;
                const uint8_t *a = in + ((size_t)(in0 ? y0 : 0) * (size_t)st->win + (size_t)(in0 ? x0 : 0)) * (size_t)cin;
                const uint8_t *b = in + ((size_t)(in1 ? y1 : 0) * (size_t)st->win + (size_t)(in1 ? x1 : 0)) * (size_t)cin;
                if (in0 && in1) {
                    for (ci = 0; ci < cin; ci++, w += FB_LANE_WORDS) *w = (uint32_t)a[ci] | ((uint32_t)b[ci] << 16);
                } else {
                    for (ci = 0; ci < cin; ci++, w += FB_LANE_WORDS)
                        *w = (uint32_t)(in0 ? a[ci] : zero) | ((uint32_t)(in1 ? b[ci] : zero) << 16);
                }
            }
        }
    }
}

/* acc[p * cout + c]: pixel p's accumulator of channel c, sum over k of (code - zero) * w[c][k]. */
static void fb_products_sparse(const uint16_t *stream, const int32_t *rowsum, const uint32_t *words, int cout, int zero,
                               int32_t *acc) {
    const uint16_t *q = stream;
    int c, j;
    for (c = 0; c < cout; c++) {
        int32_t a[FB_LANES];
        uint32_t chunks = *q++;
        for (j = 0; j < FB_LANES; j++) a[j] = -zero * rowsum[c];
        while (chunks--) {
            const int32_t value = fb_i16(q[0]);
            const uint32_t n = q[1];
            const uint16_t *pos = q + 2;
            uint32_t i;
#if FB_VECTOR_LANES
            uint32_t l[FB_LANE_WORDS];
            fb_lanes_v sums = {0}, more = {0};
            for (i = 0; i + 1 < n; i += 2) { /* two sums: half the dependency chain */
                fb_lanes_v w, v;
                memcpy(&w, (const unsigned char *)words + pos[i], sizeof w);
                memcpy(&v, (const unsigned char *)words + pos[i + 1], sizeof v);
                sums += w;
                more += v;
            }
            if (i < n) {
                fb_lanes_v w;
                memcpy(&w, (const unsigned char *)words + pos[i], sizeof w);
                sums += w;
            }
            sums += more;
            memcpy(l, &sums, sizeof l);
            for (j = 0; j < FB_LANE_WORDS; j++) {
                a[2 * j] += value * (int32_t)(l[j] & 0xFFFFu);
                a[2 * j + 1] += value * (int32_t)(l[j] >> 16);
            }
#else
            uint32_t l0 = 0, l1 = 0, l2 = 0, l3 = 0;
            for (i = 0; i < n; i++) {
                const uint32_t *w = (const uint32_t *)(const void *)((const unsigned char *)words + pos[i]);
                l0 += w[0];
                l1 += w[1];
                l2 += w[2];
                l3 += w[3];
            }
            a[0] += value * (int32_t)(l0 & 0xFFFFu);
            a[1] += value * (int32_t)(l0 >> 16);
            a[2] += value * (int32_t)(l1 & 0xFFFFu);
            a[3] += value * (int32_t)(l1 >> 16);
            a[4] += value * (int32_t)(l2 & 0xFFFFu);
            a[5] += value * (int32_t)(l2 >> 16);
            a[6] += value * (int32_t)(l3 & 0xFFFFu);
            a[7] += value * (int32_t)(l3 >> 16);
#endif
            q = pos + n;
        }
        for (j = 0; j < FB_LANES; j++) acc[(size_t)j * (size_t)cout + (size_t)c] = a[j];
    }
}

/* fb_stage_int for a sparse stage: output pixels in blocks of FB_LANES, taken in the order of
 * their pooling windows (or of the image, for statistics), every channel at once. */
static void fb_stage_sparse(unsigned char *arena, int s, const uint8_t *in, void *out, int64_t *sum1, int64_t *sum2) {
    const fb_stage *st = &fb_stages[s];
    const int cout = st->cout, pool_h = sum1 ? 1 : st->pool_h, pool_w = sum1 ? 1 : st->pool_w;
    const int window = pool_h * pool_w, cols = sum1 ? st->wout : st->wp;
    const long total = sum1 ? (long)st->hout * st->wout : (long)st->hp * st->wp * window;
    uint32_t *words = (uint32_t *)(void *)(arena + FB_OFF_PATCH);
    int32_t *best = (int32_t *)(void *)(arena + FB_OFF_BEST);
    int32_t *win_high = best + cout, *win_low = win_high + cout, *acc = win_low + cout;
    const int32_t *rowsum = fb_sched_rowsum(arena, s);
    const uint16_t *stream = fb_sched_stream(arena, s);
    fb_frozen f = fb_frozen_of(arena, s);
    const fb_live *live = fb_live_of(arena, s);
    int32_t *low = sum2 ? (int32_t *)(void *)(sum2 + cout) : 0, *high = low ? low + cout : 0;
    int oy[FB_LANES], ox[FB_LANES], p, c;
    long t0;
    for (t0 = 0; t0 < total; t0 += FB_LANES) {
        int n = total - t0 < FB_LANES ? (int)(total - t0) : FB_LANES;
        for (p = 0; p < FB_LANES; p++) { /* past the end: the last pixel again (its lanes are not read) */
            long t = t0 + (p < n ? p : n - 1), cell = t / window;
            int inner = (int)(t % window);
            oy[p] = (int)(cell / cols) * pool_h + inner / pool_w;
            ox[p] = (int)(cell % cols) * pool_w + inner % pool_w;
        }
        fb_patch_lanes(st, live->iq_zero, in, oy, ox, words);
        fb_products_sparse(stream, rowsum, words, cout, live->iq_zero, acc);
        for (p = 0; p < n; p++) {
            const int32_t *a = acc + (size_t)p * (size_t)cout;
            int inner = (int)((t0 + p) % window);
            if (sum1) {
                for (c = 0; c < cout; c++) {
                    sum1[c] += a[c];
                    sum2[c] += (int64_t)a[c] * a[c];
                    if (a[c] < low[c]) low[c] = a[c];
                    if (a[c] > high[c]) high[c] = a[c];
                }
                continue;
            }
            fb_window(a, cout, inner == 0, win_high, win_low);
            if (inner == window - 1) {
                long cell = (t0 + p) / window;
                fb_requant(win_high, win_low, f.mult, f.shift, f.offset, f.half, cout, live->out_zero, live->out_lo,
                           live->out_hi, best);
                fb_write_pooled(st, s == FB_NUM_STAGES - 1, out, (int)(cell / cols), (int)(cell % cols), 0, cout, best);
            }
        }
    }
}

/* Runs stage `s` on codes `in`. With sums: adds every output position's accumulator to sum1 and
 * its square to sum2 (no output). Otherwise writes codes (uint8) or, for the last stage, Q16
 * int32 to `out`, pooled. */
static void fb_stage_int(unsigned char *arena, int s, const uint8_t *in, void *out, int64_t *sum1, int64_t *sum2) {
    const fb_stage *st = &fb_stages[s];
    fb_w_t *wbuf = (fb_w_t *)(void *)(arena + FB_OFF_WEIGHTS);
    fb_in_t *patch = (fb_in_t *)(void *)(arena + FB_OFF_PATCH);
    int32_t *best = (int32_t *)(void *)(arena + FB_OFF_BEST);
    int32_t *acc = best + st->group, *acc1 = acc + st->group, *rowsum = acc1 + st->group;
    int32_t *win_high = rowsum + st->group, *win_low = win_high + st->group;
    fb_in_t *patch1 = patch + st->fan;
    fb_frozen f = fb_frozen_of(arena, s);
    const fb_live *live = fb_live_of(arena, s);
    int zero = live->iq_zero;
    int32_t *low = sum2 ? (int32_t *)(void *)(sum2 + st->cout) : 0, *high = low ? low + st->cout : 0;
    fb_reader r;
    int g0, c, py, px, dy, dx;
    int last = (s == FB_NUM_STAGES - 1), transposed = st->fan < FB_TRANSPOSE_BELOW;
    if (st->sparse) {
        fb_stage_sparse(arena, s, in, out, sum1, sum2);
        return;
    }
    fb_reader_start(st, &r);
    for (g0 = 0; g0 < st->cout; g0 += st->group) {
        int gn = st->cout - g0 < st->group ? st->cout - g0 : st->group;
        const int32_t *mult = f.mult + g0, *shift = f.shift + g0;
        const int64_t *offset = f.offset + g0, *half = f.half + g0;
        fb_unpack_int(st, &r, g0, gn, wbuf, transposed);
        if (FB_BYTE_PRODUCTS) fb_row_sums(wbuf, st->fan, gn, transposed, rowsum);
        if (sum1) {
            for (py = 0; py < st->hout; py++) {
                for (px = 0; px < st->wout; px += 2) {
                    int two = px + 1 < st->wout;
                    fb_patch_int(st, zero, in, py, px, patch);
                    if (two) {
                        fb_patch_int(st, zero, in, py, px + 1, patch1);
                        fb_products2(patch, patch1, wbuf, st->fan, gn, transposed, acc, acc1);
                    } else {
                        fb_products(patch, wbuf, st->fan, gn, transposed, acc);
                    }
                    fb_unzero(acc, rowsum, gn, zero);
                    if (two) fb_unzero(acc1, rowsum, gn, zero);
                    for (c = 0; c < gn; c++) {
                        sum1[g0 + c] += acc[c];
                        sum2[g0 + c] += (int64_t)acc[c] * acc[c];
                        if (acc[c] < low[g0 + c]) low[g0 + c] = acc[c];
                        if (acc[c] > high[g0 + c]) high[g0 + c] = acc[c];
                    }
                    for (c = 0; two && c < gn; c++) {
                        sum1[g0 + c] += acc1[c];
                        sum2[g0 + c] += (int64_t)acc1[c] * acc1[c];
                        if (acc1[c] < low[g0 + c]) low[g0 + c] = acc1[c];
                        if (acc1[c] > high[g0 + c]) high[g0 + c] = acc1[c];
                    }
                }
            }
            continue;
        }
        for (py = 0; py < st->hp; py++) {
            for (px = 0; px < st->wp; px++) {
                for (dy = 0; dy < st->pool_h; dy++) {
                    for (dx = 0; dx < st->pool_w; dx += 2) { /* two pixels of the window's row at a time */
                        fb_patch_int(st, zero, in, py * st->pool_h + dy, px * st->pool_w + dx, patch);
                        if (dx + 1 < st->pool_w) {
                            fb_patch_int(st, zero, in, py * st->pool_h + dy, px * st->pool_w + dx + 1, patch1);
                            fb_products2(patch, patch1, wbuf, st->fan, gn, transposed, acc, acc1);
                        } else {
                            fb_products(patch, wbuf, st->fan, gn, transposed, acc);
                        }
                        fb_unzero(acc, rowsum, gn, zero);
                        fb_window(acc, gn, dy == 0 && dx == 0, win_high, win_low);
                        if (dx + 1 < st->pool_w) {
                            fb_unzero(acc1, rowsum, gn, zero);
                            fb_window(acc1, gn, 0, win_high, win_low);
                        }
                    }
                }
                fb_requant(win_high, win_low, mult, shift, offset, half, gn, live->out_zero, live->out_lo, live->out_hi,
                           best);
                fb_write_pooled(st, last, out, py, px, g0, gn, best);
            }
        }
    }
}

/* The first layer's code of the float32 input value v: its input quantizer in float32, as numpy's
 * clip(rint(v / scale) + zero_point, qmin, qmax) (a NaN becomes qmin). */
static uint8_t fb_input_code(float v, float scale, float zero, float qmin, float qmax) {
    float t = fb_rintf(v / scale) + zero;
    if (!(t >= qmin)) t = qmin;
    if (t > qmax) t = qmax;
    return (uint8_t)t;
}

#if FEWBIT_INPUT_FLOAT
static void fb_build_codes(unsigned char *arena) { (void)arena; } /* series are quantized as they come */

/* The series (channel-major float32) as the first layer's codes, pixel-major. */
static void fb_input(unsigned char *arena, const fewbit_input_t *image, uint8_t *codes) {
    const fb_live *live = fb_live_of(arena, 0);
    const float scale = live->iq_scale, zero = (float)live->iq_zero;
    const float qmin = (float)fb_stages[0].iq_qmin, qmax = (float)fb_stages[0].iq_qmax;
    size_t ch, i, plane = (size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH;
    for (ch = 0; ch < (size_t)FEWBIT_INPUT_CHANNELS; ch++)
        for (i = 0; i < plane; i++)
            codes[FB_INPUT_CHW ? ch * plane + i : i * FEWBIT_INPUT_CHANNELS + ch] =
                fb_input_code(image[ch * plane + i], scale, zero, qmin, qmax);
}
#else
/* The first layer's code of each pixel value, per channel (its input quantizer applied to the
 * normalised values, in float32 as numpy does). */
static void fb_build_codes(unsigned char *arena) {
    uint8_t *codes = (uint8_t *)(void *)(arena + FB_OFF_CODES);
    const fb_live *live = fb_live_of(arena, 0);
    const float qmin = (float)fb_stages[0].iq_qmin, qmax = (float)fb_stages[0].iq_qmax;
    int i;
    for (i = 0; i < 256 * FEWBIT_INPUT_CHANNELS; i++)
        codes[i] = fb_input_code(fb_lut[i], live->iq_scale, (float)live->iq_zero, qmin, qmax);
}

/* The image (channel-major uint8) as the first layer's codes, pixel-major. */
static void fb_input(unsigned char *arena, const fewbit_input_t *image, uint8_t *codes) {
    const uint8_t *lut = (const uint8_t *)(const void *)(arena + FB_OFF_CODES);
    size_t ch, i, plane = (size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH;
    for (ch = 0; ch < (size_t)FEWBIT_INPUT_CHANNELS; ch++)
        for (i = 0; i < plane; i++)
            codes[FB_INPUT_CHW ? ch * plane + i : i * FEWBIT_INPUT_CHANNELS + ch] = lut[ch * 256u + image[ch * plane + i]];
}
#endif

/* Bytes of stage s's output codes (the next stage's input). */
static size_t fb_out_bytes(int s) { return (size_t)fb_stages[s].cout * (size_t)fb_stages[s].hp * (size_t)fb_stages[s].wp; }

/* Stages from..upto-1 on `in` (stage `from`'s input codes, left as they are); returns the codes
 * stage `upto` reads, or writes the embedding when upto is the last stage. */
static const uint8_t *fb_run_from(unsigned char *arena, const uint8_t *in, int from, int upto, fewbit_embedding_t *emb) {
    uint8_t *bufs[2];
    const uint8_t *a = in;
    int s, which = 0;
    bufs[0] = (uint8_t *)(void *)(arena + FB_OFF_ACT0);
    bufs[1] = (uint8_t *)(void *)(arena + FB_OFF_ACT1);
    for (s = from; s < upto; s++) {
        uint8_t *b = bufs[which] == a ? bufs[which ^ 1] : bufs[which];
        fb_stage_int(arena, s, a, s == FB_NUM_STAGES - 1 ? (void *)emb : (void *)b, 0, 0);
        which = b == bufs[0];
        a = b;
    }
    return a;
}

/* Stages 0..upto-1 on one image; returns the codes stage `upto` reads (or writes the embedding). */
static const uint8_t *fb_run(unsigned char *arena, const fewbit_input_t *image, int upto, fewbit_embedding_t *emb) {
    uint8_t *a = (uint8_t *)(void *)(arena + FB_OFF_ACT0);
    fb_input(arena, image, a);
    return fb_run_from(arena, a, 0, upto, emb);
}

/* While statistics are frozen, the support set's outputs of the deepest frozen stage that fits
 * FB_CACHE_BYTES are kept, so later stages (and the support embeddings) start there instead of
 * re-running the layers before. The first int32 of the region is that stage (-1: none). */
static int32_t *fb_cache_level(unsigned char *arena) { return (int32_t *)(void *)(arena + FB_OFF_CACHE); }

/* Support image i through stages 0..upto-1, from the cache when it holds an earlier stage. */
static const uint8_t *fb_support_run(unsigned char *arena, const fewbit_input_t *images, int i, int upto,
                                     fewbit_embedding_t *emb) {
    int32_t level = *fb_cache_level(arena);
    if (level >= 0 && level < upto) {
        const uint8_t *slot = (const uint8_t *)(const void *)(arena + FB_OFF_CACHE + 8) + (size_t)i * fb_out_bytes(level);
        return fb_run_from(arena, slot, level + 1, upto, emb);
    }
    return fb_run(arena, images + (size_t)i * FEWBIT_INPUT_VALUES, upto, emb);
}

static void fb_embed_support(unsigned char *arena, const fewbit_input_t *images, int i, fewbit_embedding_t *emb) {
    (void)fb_support_run(arena, images, i, FB_NUM_STAGES, emb);
}

/* After stage s is frozen: keep every support image's output of stage s when they fit (and when
 * each is no larger than the cached stage's, so slots are rewritten in order without overlap). */
static void fb_cache_stage(unsigned char *arena, const fewbit_input_t *images, int n, int s) {
    int32_t *level = fb_cache_level(arena);
    uint8_t *data = (uint8_t *)(void *)(arena + FB_OFF_CACHE + 8);
    size_t size = fb_out_bytes(s);
    int i;
    if (s + 1 >= FB_NUM_STAGES || (size_t)n * size > (size_t)FB_CACHE_BYTES) return;
    if (*level >= 0 && size > fb_out_bytes(*level)) return;
    for (i = 0; i < n; i++) {
        const uint8_t *in = fb_support_run(arena, images, i, s, 0);
        uint8_t *tmp = (uint8_t *)(void *)(arena + FB_OFF_ACT0);
        if (tmp == in) tmp = (uint8_t *)(void *)(arena + FB_OFF_ACT1);
        fb_stage_int(arena, s, in, tmp, 0, 0);
        memcpy(data + (size_t)i * size, tmp, size);
    }
    *level = s;
}

/* Input quantizers with constant ranges, and the code table when the first one is constant. */
static void fb_prepare(unsigned char *arena) {
    int s;
    for (s = 0; s < FB_NUM_STAGES; s++) {
        fb_live_of(arena, s)->iq_scale = fb_stages[s].iq_scale;
        fb_live_of(arena, s)->iq_zero = fb_stages[s].iq_zero;
    }
    for (s = 0; s < FB_NUM_STAGES; s++)
        if (fb_stages[s].sparse) fb_schedule_build(arena, s);
    if (!fb_stages[0].iq_dynamic) fb_build_codes(arena);
}

/* Freezes every stage from `n` support images, layer by layer (one image live at a time): ranges of
 * per-batch quantizers, BatchNorm statistics, then the requantization. */
static void fb_freeze(unsigned char *arena, const fewbit_input_t *images, int n) {
    int s, i, c;
    *fb_cache_level(arena) = -1;
    if (fb_stages[0].iq_dynamic) {
        double lo, hi;
        fb_live *live = fb_live_of(arena, 0);
        fb_image_range(images, n, &lo, &hi);
        fb_range_qparams(lo, hi, fb_stages[0].iq_qmin, fb_stages[0].iq_qmax, &live->iq_scale, &live->iq_zero);
        fb_build_codes(arena);
    }
    for (s = 0; s < FB_NUM_STAGES; s++) {
        const fb_stage *st = &fb_stages[s];
        int64_t *sum1 = (int64_t *)(void *)(arena + FB_OFF_SUMS), *sum2 = sum1 + st->cout;
        int32_t *low = (int32_t *)(void *)(sum2 + st->cout), *high = low + st->cout;
        int next_dynamic = s + 1 < FB_NUM_STAGES && fb_stages[s + 1].iq_dynamic;
        int64_t count = (int64_t)n * st->hout * st->wout;
        if (st->gamma || next_dynamic) {
            for (c = 0; c < st->cout; c++) {
                sum1[c] = sum2[c] = 0;
                low[c] = INT32_MAX;
                high[c] = INT32_MIN;
            }
            for (i = 0; i < n; i++) fb_stage_int(arena, s, fb_support_run(arena, images, i, s, 0), 0, sum1, sum2);
        }
        if (next_dynamic) { /* the range of this stage's outputs over the support set */
            double lo = 0.0, hi = 0.0;
            fb_live *next = fb_live_of(arena, s + 1);
            for (c = 0; c < st->cout; c++) {
                double a, b, y1, y2, c_lo, c_hi;
                fb_affine(st, fb_live_of(arena, s), c, count, sum1, sum2, &a, &b);
                y1 = a * (double)low[c] + b;
                y2 = a * (double)high[c] + b;
                c_lo = y1 < y2 ? y1 : y2;
                c_hi = y1 < y2 ? y2 : y1;
                if (st->relu) {
                    c_lo = c_lo > 0.0 ? c_lo : 0.0;
                    c_hi = c_hi > 0.0 ? c_hi : 0.0;
                }
                lo = c_lo < lo ? c_lo : lo;
                hi = c_hi > hi ? c_hi : hi;
            }
            fb_range_qparams(lo, hi, fb_stages[s + 1].iq_qmin, fb_stages[s + 1].iq_qmax, &next->iq_scale, &next->iq_zero);
        }
        fb_freeze_stage(arena, s, count, sum1, sum2);
        if (n > 0) fb_cache_stage(arena, images, n, s);
    }
}

static void fb_embed_raw(unsigned char *arena, const fewbit_input_t *image, fewbit_embedding_t *emb) {
    (void)fb_run(arena, image, FB_NUM_STAGES, emb);
}

static double fb_embedding_value(fewbit_embedding_t e) { return (double)e / FB_EMBED_ONE; }

#else
/* =================================================================================== float body */

static float fb_fake_quant(const fb_stage *st, const fb_live *live, float x) {
    float t = fb_rintf(x / live->iq_scale) + (float)live->iq_zero;
    if (t < (float)st->iq_qmin) t = (float)st->iq_qmin;
    if (t > (float)st->iq_qmax) t = (float)st->iq_qmax;
    return (t - (float)live->iq_zero) * live->iq_scale;
}

#define FB_FLOAT_VALUE                                                                                   \
    (wenc == FB_ENC_FLOAT ? fval : wenc == FB_ENC_CODEBOOK ? book[code] : (float)(code - zp_row) * scale_row)
FB_UNPACK(fb_unpack_float, float, FB_FLOAT_VALUE)

static void fb_products_float(const float *patch, const float *w, int fan, int gn, int transposed, float *acc) {
    int c, k;
    if (transposed) {
        for (c = 0; c < gn; c++) acc[c] = 0.0f;
        for (k = 0; k < fan; k++) {
            float v = patch[k];
            const float *wk = w + (size_t)k * (size_t)gn;
            for (c = 0; c < gn; c++) acc[c] += v * wk[c];
        }
        return;
    }
    for (c = 0; c < gn; c++) {
        const float *wc = w + (size_t)c * (size_t)fan;
        float s0 = 0.0f;
        for (k = 0; k < fan; k++) s0 += patch[k] * wc[k];
        acc[c] = s0;
    }
}

static void fb_patch_float(const fb_stage *st, const fb_live *live, const float *in, int oy, int ox, float *patch) {
    int ky, kx, ci, cin = st->cin;
    float *p = patch;
    for (ky = 0; ky < st->kh; ky++) {
        int y = oy * st->stride + ky - st->pad_h;
        if (y < 0 || y >= st->hin) {
            for (ci = 0; ci < st->kw * cin; ci++) *p++ = 0.0f;
            continue;
        }
        for (kx = 0; kx < st->kw; kx++) {
            int x = ox * st->stride + kx - st->pad_w;
            if (x < 0 || x >= st->win) {
                for (ci = 0; ci < cin; ci++) p[ci] = 0.0f;
            } else {
                const float *q = in + ((size_t)y * (size_t)st->win + (size_t)x) * (size_t)cin;
                if (st->has_iq)
                    for (ci = 0; ci < cin; ci++) p[ci] = fb_fake_quant(st, live, q[ci]);
                else
                    for (ci = 0; ci < cin; ci++) p[ci] = q[ci];
            }
            p += cin;
        }
    }
}

/* frozen BatchNorm of a float stage: mean and 1/std per channel */
static float *fb_frozen_of(unsigned char *arena, int stage) { return (float *)(void *)(arena + fb_frozen_offset[stage]); }

static void fb_freeze_stage(unsigned char *arena, int s, int64_t count, const double *sum1, const double *sum2) {
    const fb_stage *st = &fb_stages[s];
    float *f = fb_frozen_of(arena, s);
    int c;
    if (!st->gamma) return; /* only BatchNorm has statistics to freeze */
    for (c = 0; c < st->cout; c++) {
        double mean = sum1[c] / (double)count;
        double var = sum2[c] / (double)count - mean * mean;
        if (var < 0.0) var = 0.0;
        f[c] = (float)mean;
        f[st->cout + c] = (float)(1.0 / sqrt(var + st->eps));
    }
}

static void fb_stage_float(unsigned char *arena, int s, const float *in, float *out, double *sum1, double *sum2) {
    const fb_stage *st = &fb_stages[s];
    float *wbuf = (float *)(void *)(arena + FB_OFF_WEIGHTS);
    float *patch = (float *)(void *)(arena + FB_OFF_PATCH);
    float *best = (float *)(void *)(arena + FB_OFF_BEST);
    float *acc = best + st->group;
    const float *f = fb_frozen_of(arena, s);
    const fb_live *live = fb_live_of(arena, s);
    fb_reader r;
    int g0, c, py, px, dy, dx, transposed = st->fan < FB_TRANSPOSE_BELOW;
    fb_reader_start(st, &r);
    for (g0 = 0; g0 < st->cout; g0 += st->group) {
        int gn = st->cout - g0 < st->group ? st->cout - g0 : st->group;
        fb_unpack_float(st, &r, g0, gn, wbuf, transposed);
        if (sum1) {
            for (py = 0; py < st->hout; py++) {
                for (px = 0; px < st->wout; px++) {
                    fb_patch_float(st, live, in, py, px, patch);
                    fb_products_float(patch, wbuf, st->fan, gn, transposed, acc);
                    for (c = 0; c < gn; c++) {
                        double y = (double)acc[c];
                        if (st->bias) y += (double)st->bias[g0 + c];
                        sum1[g0 + c] += y;
                        sum2[g0 + c] += y * y;
                    }
                }
            }
            continue;
        }
        for (py = 0; py < st->hp; py++) {
            for (px = 0; px < st->wp; px++) {
                for (dy = 0; dy < st->pool_h; dy++) {
                    for (dx = 0; dx < st->pool_w; dx++) {
                        fb_patch_float(st, live, in, py * st->pool_h + dy, px * st->pool_w + dx, patch);
                        fb_products_float(patch, wbuf, st->fan, gn, transposed, acc);
                        for (c = 0; c < gn; c++) {
                            int ch = g0 + c;
                            float y = acc[c];
                            if (st->bias) y += st->bias[ch];
                            if (st->gamma) y = (y - f[ch]) * f[st->cout + ch] * st->gamma[ch] + st->beta[ch];
                            if (st->relu && y < 0.0f) y = 0.0f;
                            if ((dy == 0 && dx == 0) || y > best[c]) best[c] = y;
                        }
                    }
                }
                if (st->chw_out || s == FB_NUM_STAGES - 1) {
                    for (c = 0; c < gn; c++) out[(size_t)(g0 + c) * (size_t)(st->hp * st->wp) + (size_t)(py * st->wp + px)] = best[c];
                } else {
                    float *o = out + (size_t)(py * st->wp + px) * (size_t)st->cout + (size_t)g0;
                    for (c = 0; c < gn; c++) o[c] = best[c];
                }
            }
        }
    }
}

/* The input (channel-major) as float32 values, pixel-major: a series' values as they are, an
 * image's pixels normalised through the table. */
static void fb_input(const fewbit_input_t *image, float *x) {
    size_t ch, i, plane = (size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH;
    for (ch = 0; ch < (size_t)FEWBIT_INPUT_CHANNELS; ch++)
        for (i = 0; i < plane; i++)
#if FEWBIT_INPUT_FLOAT
            x[FB_INPUT_CHW ? ch * plane + i : i * FEWBIT_INPUT_CHANNELS + ch] = image[ch * plane + i];
#else
            x[FB_INPUT_CHW ? ch * plane + i : i * FEWBIT_INPUT_CHANNELS + ch] = fb_lut[ch * 256u + image[ch * plane + i]];
#endif
}

static const float *fb_run(unsigned char *arena, const fewbit_input_t *image, int upto, fewbit_embedding_t *emb) {
    float *a = (float *)(void *)(arena + FB_OFF_ACT0), *b = (float *)(void *)(arena + FB_OFF_ACT1);
    int s;
    fb_input(image, a);
    for (s = 0; s < upto; s++) {
        float *out = (s == FB_NUM_STAGES - 1) ? emb : b, *t;
        fb_stage_float(arena, s, a, out, 0, 0);
        t = a;
        a = b;
        b = t;
    }
    return a;
}

static void fb_prepare(unsigned char *arena) {
    int s;
    for (s = 0; s < FB_NUM_STAGES; s++) {
        fb_live_of(arena, s)->iq_scale = fb_stages[s].iq_scale;
        fb_live_of(arena, s)->iq_zero = fb_stages[s].iq_zero;
    }
}

/* Freezes every stage from `n` support images, layer by layer (one image live at a time). */
static void fb_freeze(unsigned char *arena, const fewbit_input_t *images, int n) {
    int s, i, c;
    float *act0 = (float *)(void *)(arena + FB_OFF_ACT0), *act1 = (float *)(void *)(arena + FB_OFF_ACT1);
    if (fb_stages[0].iq_dynamic) {
        double lo, hi;
        fb_live *live = fb_live_of(arena, 0);
        fb_image_range(images, n, &lo, &hi);
        fb_range_qparams(lo, hi, fb_stages[0].iq_qmin, fb_stages[0].iq_qmax, &live->iq_scale, &live->iq_zero);
    }
    for (s = 0; s < FB_NUM_STAGES; s++) {
        const fb_stage *st = &fb_stages[s];
        if (st->gamma) {
            double *sum1 = (double *)(void *)(arena + FB_OFF_SUMS), *sum2 = sum1 + st->cout;
            for (c = 0; c < st->cout; c++) sum1[c] = sum2[c] = 0.0;
            for (i = 0; i < n; i++)
                fb_stage_float(arena, s, fb_run(arena, images + (size_t)i * FEWBIT_INPUT_VALUES, s, 0), 0, sum1, sum2);
            fb_freeze_stage(arena, s, (int64_t)n * st->hout * st->wout, sum1, sum2);
        }
        if (s + 1 < FB_NUM_STAGES && fb_stages[s + 1].iq_dynamic) { /* the range of this stage's outputs */
            float lo = 0.0f, hi = 0.0f;
            size_t k, size = (size_t)st->cout * (size_t)st->hp * (size_t)st->wp;
            fb_live *next = fb_live_of(arena, s + 1);
            for (i = 0; i < n; i++) {
                const float *in = fb_run(arena, images + (size_t)i * FEWBIT_INPUT_VALUES, s, 0);
                float *out = in == act0 ? act1 : act0;
                fb_stage_float(arena, s, in, out, 0, 0);
                for (k = 0; k < size; k++) {
                    lo = out[k] < lo ? out[k] : lo;
                    hi = out[k] > hi ? out[k] : hi;
                }
            }
            fb_range_qparams(lo, hi, fb_stages[s + 1].iq_qmin, fb_stages[s + 1].iq_qmax, &next->iq_scale, &next->iq_zero);
        }
    }
}

static void fb_embed_raw(unsigned char *arena, const fewbit_input_t *image, fewbit_embedding_t *emb) {
    (void)fb_run(arena, image, FB_NUM_STAGES, emb);
}

static double fb_embedding_value(fewbit_embedding_t e) { return (double)e; }

static void fb_embed_support(unsigned char *arena, const fewbit_input_t *images, int i, fewbit_embedding_t *emb) {
    fb_embed_raw(arena, images + (size_t)i * FEWBIT_INPUT_VALUES, emb);
}

#endif /* FEWBIT_INTEGER_BODY */

/* The number of ways of a support set's labels (each of 0..ways-1 present), or FEWBIT_ERR_ARGUMENT. */
static int fb_check_support(fewbit_ctx *ctx, const fewbit_input_t *support, const uint8_t *labels, int n) {
    int i, ways = 0, seen[FEWBIT_MAX_WAYS];
    if (!ctx || !ctx->arena || !support || !labels || n < 2 || n > FEWBIT_MAX_SUPPORT) return FEWBIT_ERR_ARGUMENT;
    for (i = 0; i < FEWBIT_MAX_WAYS; i++) seen[i] = 0;
    for (i = 0; i < n; i++) {
        if (labels[i] >= FEWBIT_MAX_WAYS) return FEWBIT_ERR_ARGUMENT;
        seen[labels[i]] = 1;
        if (labels[i] + 1 > ways) ways = labels[i] + 1;
    }
    for (i = 0; i < ways; i++)
        if (!seen[i]) return FEWBIT_ERR_ARGUMENT;
    return ways < 2 ? FEWBIT_ERR_ARGUMENT : ways;
}

