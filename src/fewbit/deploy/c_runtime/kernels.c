/* ---------------------------------------------------------------------------------------------
 * fewbit C runtime (kernels and API). Appended by the exporter after the model's tables; see
 * fewbit_model.h for the API. C99, no dynamic allocation, no stdio; sqrt (and exp when the
 * head is fine-tuned) from libm.
 *
 * Layout: activations are channel-major (C, H, W), the order PyTorch flattens in, so a flatten
 * is free and a linear layer is a 1x1 convolution of a 1x1 image. Weights stay packed in flash
 * (const arrays); each layer unpacks `group` output channels at a time into the arena.
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

/* Sequential reader of a packed weight: which dense positions are kept, and their codes. */
typedef struct {
    uint32_t kept_i;     /* kept elements consumed */
    uint32_t next_kept;  /* dense position of the next kept element (indices / rice) */
    uint32_t after_prev; /* rice: previous kept position + 1 */
    uint32_t ubit;       /* rice: bit position in the unary stream */
} fb_reader;

static uint32_t fb_advance(const fb_stage *st, fb_reader *r) {
    if (r->kept_i >= st->kept) return 0xFFFFFFFFu;
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
    r->next_kept = (st->mask_format == FB_MASK_INDICES || st->mask_format == FB_MASK_RICE) ? fb_advance(st, r) : 0u;
}

/* Whether dense position `pos` is kept; consumes it from the reader when it is. */
static int fb_take(const fb_stage *st, fb_reader *r, uint32_t pos) {
    int kept;
    switch (st->mask_format) {
    case FB_MASK_NONE: kept = 1; break;
    case FB_MASK_BITMAP: kept = (st->mask[pos >> 3] >> (pos & 7u)) & 1; break;
    default: kept = (pos == r->next_kept); break;
    }
    return kept;
}

static void fb_consume(const fb_stage *st, fb_reader *r) {
    r->kept_i++;
    if (st->mask_format == FB_MASK_INDICES || st->mask_format == FB_MASK_RICE) r->next_kept = fb_advance(st, r);
}

static int32_t fb_code(const fb_stage *st, uint32_t kept_i) {
    return (int32_t)fb_bits(st->codes, kept_i * (uint32_t)st->bits, st->bits) * st->code_step + st->code_min;
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


/* `rows` output channels from `row0` unpacked to `code - zero_point` (0 where pruned). */
static void fb_unpack_int(const fb_stage *st, fb_reader *r, int row0, int rows, fb_weight_t *dst) {
    int c;
    uint32_t j, pos = (uint32_t)row0 * (uint32_t)st->fan;
    for (c = 0; c < rows; c++) {
        int32_t zp = st->zp ? st->zp[st->zp_n > 1 ? row0 + c : 0] : 0;
        for (j = 0; j < (uint32_t)st->fan; j++, pos++) {
            int32_t v = 0;
            if (fb_take(st, r, pos)) {
                v = fb_code(st, r->kept_i) - zp;
                fb_consume(st, r);
            }
            *dst++ = (fb_weight_t)v;
        }
    }
}

static int32_t fb_dot(const int16_t *x, const fb_weight_t *w, int n) {
    int32_t s = 0;
    int i;
    for (i = 0; i < n; i++) s += (int32_t)x[i] * (int32_t)w[i];
    return s;
}

/* Four output channels at once: the patch is loaded once for four weight rows. */
static void fb_dot4(const int16_t *x, const fb_weight_t *w, int n, int32_t *out) {
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const fb_weight_t *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
    int i;
    for (i = 0; i < n; i++) {
        int32_t v = x[i];
        s0 += v * w[i];
        s1 += v * w1[i];
        s2 += v * w2[i];
        s3 += v * w3[i];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* im2col row of output pixel (oy, ox): (ci, ky, kx) order, `code - zero` (0 outside the image). */
static void fb_patch_int(const fb_stage *st, const uint8_t *in, int oy, int ox, int16_t *patch) {
    int ci, ky, kx, k = 0;
    int zero = st->iq_zero;
    for (ci = 0; ci < st->cin; ci++) {
        const uint8_t *plane = in + (size_t)ci * (size_t)st->hin * (size_t)st->win;
        for (ky = 0; ky < st->kh; ky++) {
            int y = oy * st->stride + ky - st->pad;
            for (kx = 0; kx < st->kw; kx++) {
                int x = ox * st->stride + kx - st->pad;
                patch[k++] = (y >= 0 && y < st->hin && x >= 0 && x < st->win)
                                 ? (int16_t)((int)plane[y * st->win + x] - zero)
                                 : (int16_t)0;
            }
        }
    }
}

static int64_t fb_round_shift(int64_t v, int s) {
    if (s == 0) return v;
    v += (int64_t)1 << (s - 1);
    return v >= 0 ? (v >> s) : -(((-v) - 1) >> s) - 1; /* floor division by 2**s */
}

typedef struct {
    int32_t *mult;
    int32_t *shift;
    int64_t *offset;
} fb_frozen;

static fb_frozen fb_frozen_of(unsigned char *arena, int stage) {
    fb_frozen f;
    f.mult = (int32_t *)(void *)(arena + fb_frozen_offset[stage]);
    f.shift = f.mult + fb_stages[stage].cout;
    f.offset = (int64_t *)(void *)(arena + fb_frozen_offset[stage] + FB_ALIGN8(8u * (size_t)fb_stages[stage].cout));
    return f;
}

static int32_t fb_requant(const fb_stage *st, const fb_frozen *f, int c, int32_t acc) {
    int64_t v = fb_round_shift((int64_t)acc * f->mult[c] + f->offset[c], f->shift[c]) + st->out_zero;
    if (v < st->out_lo) v = st->out_lo;
    if (v > st->out_hi) v = st->out_hi;
    return (int32_t)v;
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

/* Freeze stage `s`: from support sums (BatchNorm) or from its bias. */
static void fb_freeze_stage(unsigned char *arena, int s, int64_t count, const int64_t *sum1, const int64_t *sum2) {
    const fb_stage *st = &fb_stages[s];
    fb_frozen f = fb_frozen_of(arena, s);
    int c;
    for (c = 0; c < st->cout; c++) {
        double scale = (double)st->iq_scale * (double)st->scale[st->scale_n > 1 ? c : 0];
        double a, b, m, o;
        if (st->gamma) {
            double mean = (double)sum1[c] / (double)count;
            double var = (double)sum2[c] / (double)count - mean * mean;
            double inv;
            if (var < 0.0) var = 0.0;
            inv = 1.0 / sqrt(var * scale * scale + st->eps);
            a = fb_clamp_double(scale * inv * (double)st->gamma[c]);
            b = (double)st->beta[c] - mean * a;
        } else {
            a = scale;
            b = st->bias ? (double)st->bias[c] : 0.0;
        }
        if (st->out_scale > 0.0) {
            m = a / st->out_scale;
            o = b / st->out_scale;
        } else { /* the embedding: Q16 */
            m = a * FB_EMBED_ONE;
            o = b * FB_EMBED_ONE;
        }
        fb_multiplier(m, o, &f.mult[c], &f.shift[c], &f.offset[c]);
    }
}

/* Runs stage `s` on codes `in`. STATS: adds to sum1/sum2 every output position (no output).
 * Otherwise writes codes (uint8) or, for the last stage, Q16 int32 to `out`. */
static void fb_stage_int(unsigned char *arena, int s, const uint8_t *in, void *out, int64_t *sum1, int64_t *sum2) {
    const fb_stage *st = &fb_stages[s];
    fb_weight_t *wbuf = (fb_weight_t *)(void *)(arena + FB_OFF_WEIGHTS);
    int16_t *patch = (int16_t *)(void *)(arena + FB_OFF_PATCH);
    int32_t *best = (int32_t *)(void *)(arena + FB_OFF_BEST);
    int32_t acc[4];
    fb_frozen f = fb_frozen_of(arena, s);
    fb_reader r;
    int g0, c, py, px, dy, dx;
    int last = (s == FB_NUM_STAGES - 1);
    fb_reader_start(st, &r);
    for (g0 = 0; g0 < st->cout; g0 += st->group) {
        int gn = st->cout - g0 < st->group ? st->cout - g0 : st->group;
        fb_unpack_int(st, &r, g0, gn, wbuf);
        if (sum1) {
            for (py = 0; py < st->hout; py++) {
                for (px = 0; px < st->wout; px++) {
                    fb_patch_int(st, in, py, px, patch);
                    for (c = 0; c < gn; c++) {
                        int32_t a = fb_dot(patch, wbuf + (size_t)c * (size_t)st->fan, st->fan);
                        sum1[g0 + c] += a;
                        sum2[g0 + c] += (int64_t)a * a;
                    }
                }
            }
            continue;
        }
        for (py = 0; py < st->hp; py++) {
            for (px = 0; px < st->wp; px++) {
                for (c = 0; c < gn; c++) best[c] = INT32_MIN;
                for (dy = 0; dy < st->pool; dy++) {
                    for (dx = 0; dx < st->pool; dx++) {
                        fb_patch_int(st, in, py * st->pool + dy, px * st->pool + dx, patch);
                        for (c = 0; c + 4 <= gn; c += 4) {
                            int k;
                            fb_dot4(patch, wbuf + (size_t)c * (size_t)st->fan, st->fan, acc);
                            for (k = 0; k < 4; k++) {
                                int32_t v = fb_requant(st, &f, g0 + c + k, acc[k]);
                                if (v > best[c + k]) best[c + k] = v;
                            }
                        }
                        for (; c < gn; c++) {
                            int32_t v = fb_requant(st, &f, g0 + c, fb_dot(patch, wbuf + (size_t)c * (size_t)st->fan, st->fan));
                            if (v > best[c]) best[c] = v;
                        }
                    }
                }
                for (c = 0; c < gn; c++) {
                    size_t at = (size_t)(g0 + c) * (size_t)st->hp * (size_t)st->wp + (size_t)py * (size_t)st->wp + (size_t)px;
                    if (last) ((int32_t *)out)[at] = best[c];
                    else ((uint8_t *)out)[at] = (uint8_t)best[c];
                }
            }
        }
    }
}

static void fb_input(const uint8_t *image, uint8_t *codes) {
    size_t i, plane = (size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH;
    for (i = 0; i < (size_t)FEWBIT_INPUT_BYTES; i++) codes[i] = fb_lut[(i / plane) * 256u + image[i]];
}

/* Stages 0..upto-1 on one image; returns the activations stage `upto` reads (or the embedding). */
static const void *fb_run(unsigned char *arena, const uint8_t *image, int upto, fewbit_embedding_t *emb) {
    uint8_t *a = (uint8_t *)(void *)(arena + FB_OFF_ACT0), *b = (uint8_t *)(void *)(arena + FB_OFF_ACT1);
    int s;
    fb_input(image, a);
    for (s = 0; s < upto; s++) {
        void *out = (s == FB_NUM_STAGES - 1) ? (void *)emb : (void *)b;
        uint8_t *t;
        fb_stage_int(arena, s, a, out, 0, 0);
        t = a;
        a = b;
        b = t;
    }
    return a;
}

static void fb_stats_stage(unsigned char *arena, int s, const uint8_t *images, int n) {
    int64_t *sum1 = (int64_t *)(void *)(arena + FB_OFF_SUMS);
    int64_t *sum2 = sum1 + fb_stages[s].cout;
    int i, c;
    for (c = 0; c < fb_stages[s].cout; c++) sum1[c] = sum2[c] = 0;
    for (i = 0; i < n; i++) {
        const uint8_t *in = (const uint8_t *)fb_run(arena, images + (size_t)i * FEWBIT_INPUT_BYTES, s, 0);
        fb_stage_int(arena, s, in, 0, sum1, sum2);
    }
    fb_freeze_stage(arena, s, (int64_t)n * fb_stages[s].hout * fb_stages[s].wout, sum1, sum2);
}

static void fb_embed_raw(unsigned char *arena, const uint8_t *image, fewbit_embedding_t *emb) {
    (void)fb_run(arena, image, FB_NUM_STAGES, emb);
}

static double fb_embedding_value(fewbit_embedding_t e) { return (double)e / FB_EMBED_ONE; }

#else
/* =================================================================================== float body */

static float fb_rintf(float x) { /* round half to even, as numpy's rint */
    const float big = 8388608.0f; /* 2**23: floats this large are integers */
    if (x >= big || x <= -big) return x;
    return x >= 0.0f ? (x + big) - big : (x - big) + big;
}

static float fb_fake_quant(const fb_stage *st, float x) {
    float t = fb_rintf(x / st->iq_scale) + (float)st->iq_zero;
    if (t < (float)st->iq_qmin) t = (float)st->iq_qmin;
    if (t > (float)st->iq_qmax) t = (float)st->iq_qmax;
    return (t - (float)st->iq_zero) * st->iq_scale;
}

static void fb_unpack_float(const fb_stage *st, fb_reader *r, int row0, int rows, float *dst) {
    int c;
    uint32_t j, pos = (uint32_t)row0 * (uint32_t)st->fan;
    for (c = 0; c < rows; c++) {
        int row = row0 + c;
        for (j = 0; j < (uint32_t)st->fan; j++, pos++) {
            float v = 0.0f;
            if (fb_take(st, r, pos)) {
                if (st->wenc == FB_ENC_FLOAT) {
                    v = st->fvals[r->kept_i];
                } else if (st->wenc == FB_ENC_CODEBOOK) {
                    v = st->book[fb_code(st, r->kept_i)];
                } else {
                    int32_t zp = st->zp ? st->zp[st->zp_n > 1 ? row : 0] : 0;
                    v = (float)(fb_code(st, r->kept_i) - zp) * st->scale[st->scale_n > 1 ? row : 0];
                }
                fb_consume(st, r);
            }
            *dst++ = v;
        }
    }
}

static float fb_dotf(const float *x, const float *w, int n) {
    float s = 0.0f;
    int i;
    for (i = 0; i < n; i++) s += x[i] * w[i];
    return s;
}

static void fb_patch_float(const fb_stage *st, const float *in, int oy, int ox, float *patch) {
    int ci, ky, kx, k = 0;
    for (ci = 0; ci < st->cin; ci++) {
        const float *plane = in + (size_t)ci * (size_t)st->hin * (size_t)st->win;
        for (ky = 0; ky < st->kh; ky++) {
            int y = oy * st->stride + ky - st->pad;
            for (kx = 0; kx < st->kw; kx++) {
                int x = ox * st->stride + kx - st->pad;
                float v = 0.0f;
                if (y >= 0 && y < st->hin && x >= 0 && x < st->win) {
                    v = plane[y * st->win + x];
                    if (st->has_iq) v = fb_fake_quant(st, v);
                }
                patch[k++] = v;
            }
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
    const float *f = fb_frozen_of(arena, s);
    fb_reader r;
    int g0, c, py, px, dy, dx;
    fb_reader_start(st, &r);
    for (g0 = 0; g0 < st->cout; g0 += st->group) {
        int gn = st->cout - g0 < st->group ? st->cout - g0 : st->group;
        fb_unpack_float(st, &r, g0, gn, wbuf);
        if (sum1) {
            for (py = 0; py < st->hout; py++) {
                for (px = 0; px < st->wout; px++) {
                    fb_patch_float(st, in, py, px, patch);
                    for (c = 0; c < gn; c++) {
                        double y = (double)fb_dotf(patch, wbuf + (size_t)c * (size_t)st->fan, st->fan);
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
                for (dy = 0; dy < st->pool; dy++) {
                    for (dx = 0; dx < st->pool; dx++) {
                        fb_patch_float(st, in, py * st->pool + dy, px * st->pool + dx, patch);
                        for (c = 0; c < gn; c++) {
                            int ch = g0 + c;
                            float y = fb_dotf(patch, wbuf + (size_t)c * (size_t)st->fan, st->fan);
                            if (st->bias) y += st->bias[ch];
                            if (st->gamma) y = (y - f[ch]) * f[st->cout + ch] * st->gamma[ch] + st->beta[ch];
                            if (st->relu && y < 0.0f) y = 0.0f;
                            if ((dy == 0 && dx == 0) || y > best[c]) best[c] = y;
                        }
                    }
                }
                for (c = 0; c < gn; c++)
                    out[(size_t)(g0 + c) * (size_t)st->hp * (size_t)st->wp + (size_t)py * (size_t)st->wp + (size_t)px] = best[c];
            }
        }
    }
}

static void fb_input(const uint8_t *image, float *x) {
    size_t i, plane = (size_t)FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH;
    for (i = 0; i < (size_t)FEWBIT_INPUT_BYTES; i++) x[i] = fb_lut[(i / plane) * 256u + image[i]];
}

static const float *fb_run(unsigned char *arena, const uint8_t *image, int upto, fewbit_embedding_t *emb) {
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

static void fb_stats_stage(unsigned char *arena, int s, const uint8_t *images, int n) {
    double *sum1 = (double *)(void *)(arena + FB_OFF_SUMS);
    double *sum2 = sum1 + fb_stages[s].cout;
    int i, c;
    for (c = 0; c < fb_stages[s].cout; c++) sum1[c] = sum2[c] = 0.0;
    for (i = 0; i < n; i++) fb_stage_float(arena, s, fb_run(arena, images + (size_t)i * FEWBIT_INPUT_BYTES, s, 0), 0, sum1, sum2);
    fb_freeze_stage(arena, s, (int64_t)n * fb_stages[s].hout * fb_stages[s].wout, sum1, sum2);
}

static void fb_embed_raw(unsigned char *arena, const uint8_t *image, fewbit_embedding_t *emb) {
    (void)fb_run(arena, image, FB_NUM_STAGES, emb);
}

static double fb_embedding_value(fewbit_embedding_t e) { return (double)e; }

#endif /* FEWBIT_INTEGER_BODY */

/* The number of ways of a support set's labels (each of 0..ways-1 present), or FEWBIT_ERR_ARGUMENT. */
static int fb_check_support(fewbit_ctx *ctx, const uint8_t *support, const uint8_t *labels, int n) {
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

