/* -------------------------------------------------------------------------------------------
 * Head fine-tuning (fewbit_adapt_head): `steps` SGD steps of size FB_HEAD_LR on the support
 * cross-entropy, over the support embeddings (frozen statistics), in float. The head starts from
 * the artifact's own head (re-quantized on use as the layer does, gradients straight through),
 * from zeros, or from the prototypes (W = 2c, b = -|c|^2), as fewbit.runtime.adapt does.
 * ----------------------------------------------------------------------------------------- */

static float fb_head_rint(float x) {
    const float big = 8388608.0f;
    if (x >= big || x <= -big) return x;
    return x >= 0.0f ? (x + big) - big : (x - big) + big;
}

/* The embedding as the head's float32 input. */
static void fb_head_input(const fewbit_embedding_t *emb, float *x) {
    int d;
    for (d = 0; d < FEWBIT_EMBED_DIM; d++) {
#if FEWBIT_INTEGER_BODY
        x[d] = (float)((double)emb[d] / FB_EMBED_ONE);
#else
        x[d] = emb[d];
#endif
    }
}

/* The own head's activation quantizer, when it has one, on `count` inputs (the weight's gradient is
 * taken at the quantized input, straight through). */
static void fb_head_quantize(const fewbit_ctx *ctx, float *x, size_t count) {
#if FB_HEAD_HAS_IQ
    const float *scale = (const float *)(const void *)(ctx->arena + FB_OFF_HEAD_IQ);
    const int32_t *zero = (const int32_t *)(const void *)(scale + 1);
    size_t i;
    if (!ctx->own_head) return;
    for (i = 0; i < count; i++) {
        float t = fb_head_rint(x[i] / *scale) + (float)*zero;
        if (t < (float)FB_HEAD_IQ_QMIN) t = (float)FB_HEAD_IQ_QMIN;
        if (t > (float)FB_HEAD_IQ_QMAX) t = (float)FB_HEAD_IQ_QMAX;
        x[i] = (t - (float)*zero) * *scale;
    }
#else
    (void)ctx;
    (void)x;
    (void)count;
#endif
}

#if FB_HAS_OWN_HEAD
/* The weight the layer computes with (`fewbit.runtime.requant.requantize`: none, fixed grid, min-max
 * observer, codebook). */
static void fb_head_requantize(const float *w, float *out, int ways) {
    int n = ways * FEWBIT_EMBED_DIM, i, r;
    for (i = 0; i < n; i++) out[i] = fb_head_mask_of(i) ? w[i] : 0.0f;
#if FB_HEAD_RULE == FB_RULE_FIXED
    for (i = 0; i < n; i++) {
        int row = i / FEWBIT_EMBED_DIM;
        float scale = fb_head_scale[FB_HEAD_SCALE_N > 1 ? row : 0];
        float zp = (float)fb_head_zp[FB_HEAD_ZP_N > 1 ? row : 0];
        float q;
#if FB_HEAD_ONE_BIT
        q = out[i] >= 0.0f ? 1.0f : -1.0f;
        out[i] = q * scale;
#else
        q = fb_head_rint(out[i] / scale) + zp;
        if (q < (float)FB_HEAD_QMIN) q = (float)FB_HEAD_QMIN;
        if (q > (float)FB_HEAD_QMAX) q = (float)FB_HEAD_QMAX;
        out[i] = (q - zp) * scale;
#endif
    }
#elif FB_HEAD_RULE == FB_RULE_MINMAX
    {
        int rows = FB_HEAD_PER_CHANNEL ? ways : 1, len = n / rows;
        for (r = 0; r < rows; r++) {
            float *row = out + r * len, lo = 0.0f, hi = 0.0f, scale, zp = 0.0f;
#if FB_HEAD_SYMMETRIC && FB_HEAD_BITS == 1
            float sum = 0.0f;
            for (i = 0; i < len; i++) sum += row[i] < 0.0f ? -row[i] : row[i];
            scale = sum / (float)len;
            if (scale < 1e-8f) scale = 1e-8f;
            for (i = 0; i < len; i++) row[i] = (row[i] >= 0.0f ? 1.0f : -1.0f) * scale;
            (void)lo;
            (void)hi;
            (void)zp;
#else
            for (i = 0; i < len; i++) {
#if FB_HEAD_SYMMETRIC
                float m = row[i] < 0.0f ? -row[i] : row[i];
                if (m > hi) hi = m;
#else
                if (row[i] < lo) lo = row[i];
                if (row[i] > hi) hi = row[i];
#endif
            }
#if FB_HEAD_SYMMETRIC
            scale = (hi > 1e-8f ? hi : 1e-8f) / (float)FB_HEAD_QMAX;
            (void)lo;
#else
            scale = (hi - lo) / (float)(FB_HEAD_QMAX - FB_HEAD_QMIN);
            if (scale < 1e-8f) scale = 1e-8f;
            zp = fb_head_rint(-lo / scale);
            if (zp < (float)FB_HEAD_QMIN) zp = (float)FB_HEAD_QMIN;
            if (zp > (float)FB_HEAD_QMAX) zp = (float)FB_HEAD_QMAX;
#endif
            for (i = 0; i < len; i++) {
                float q = fb_head_rint(row[i] / scale) + zp;
                if (q < (float)FB_HEAD_QMIN) q = (float)FB_HEAD_QMIN;
                if (q > (float)FB_HEAD_QMAX) q = (float)FB_HEAD_QMAX;
#if FB_HEAD_SYMMETRIC
                row[i] = q * scale;
#else
                row[i] = (q - zp) * scale;
#endif
            }
#endif
        }
    }
#elif FB_HEAD_RULE == FB_RULE_CODEBOOK
    for (i = 0; i < n; i++) { /* the nearest centroid (the first of equally near ones) */
        int k, best = 0;
        float dist = out[i] - fb_head_book[0];
        if (dist < 0.0f) dist = -dist;
        for (k = 1; k < FB_HEAD_BOOK_N; k++) {
            float e = out[i] - fb_head_book[k];
            if (e < 0.0f) e = -e;
            if (e < dist) {
                dist = e;
                best = k;
            }
        }
        out[i] = fb_head_book[best];
    }
#endif
    for (i = 0; i < n; i++)
        if (!fb_head_mask_of(i)) out[i] = 0.0f;
    (void)r;
}
#endif

static void fb_head_logits(fewbit_ctx *ctx, const float *x, float *logits) {
    const float *w = (const float *)(const void *)(ctx->arena + FB_OFF_HEAD_WQ);
    const float *b = (const float *)(const void *)(ctx->arena + FB_OFF_HEAD_B);
    int c, d;
    for (c = 0; c < ctx->ways; c++) {
        float s = 0.0f;
        for (d = 0; d < FEWBIT_EMBED_DIM; d++) s += x[d] * w[c * FEWBIT_EMBED_DIM + d];
        logits[c] = s + b[c];
    }
}

/* The weight products use: the re-quantized own head, or the plain head's own values. */
static void fb_head_effective(fewbit_ctx *ctx) {
    const float *w = (const float *)(const void *)(ctx->arena + FB_OFF_HEAD_W);
    float *wq = (float *)(void *)(ctx->arena + FB_OFF_HEAD_WQ);
    int i;
#if FB_HAS_OWN_HEAD
    if (ctx->own_head) {
        fb_head_requantize(w, wq, ctx->ways);
        return;
    }
#endif
    for (i = 0; i < ctx->ways * FEWBIT_EMBED_DIM; i++) wq[i] = w[i];
}

static void fb_head_scores(fewbit_ctx *ctx, const fewbit_embedding_t *emb, float *scores) {
    float *x = (float *)(void *)(ctx->arena + FB_OFF_HEAD_X);
    fb_head_input(emb, x);
    fb_head_quantize(ctx, x, FEWBIT_EMBED_DIM);
    fb_head_logits(ctx, x, scores);
}

int fewbit_adapt_head(fewbit_ctx *ctx, const fewbit_input_t *support, const uint8_t *labels, int n, int steps) {
    float *w, *b, *gw, *gb, *xs, *logits;
    fewbit_embedding_t *emb;
    int i, c, d, step, ways = fb_check_support(ctx, support, labels, n);
    int moves = 1;
    (void)fb_head_rint; /* used only by some head configurations */
    if (ways < 0) return ways;
    if (steps < 0) steps = FB_HEAD_STEPS;
    fewbit_freeze_statistics(ctx, support, n);
    w = (float *)(void *)(ctx->arena + FB_OFF_HEAD_W);
    b = (float *)(void *)(ctx->arena + FB_OFF_HEAD_B);
    gw = (float *)(void *)(ctx->arena + FB_OFF_HEAD_GW);
    gb = (float *)(void *)(ctx->arena + FB_OFF_HEAD_GB);
    xs = (float *)(void *)(ctx->arena + FB_OFF_HEAD_XS);
    logits = (float *)(void *)(ctx->arena + FB_OFF_HEAD_LOGITS);
    emb = (fewbit_embedding_t *)(void *)(ctx->arena + FB_OFF_EMBED);
    ctx->ways = ways;
    ctx->own_head = 0;
#if FB_HAS_OWN_HEAD
    if (FB_HEAD_INIT == FB_INIT_OWN && ways == FB_HEAD_WAYS) {
        ctx->own_head = 1;
        moves = FB_HEAD_MOVES;
    }
#endif
    for (i = 0; i < n; i++) {
        fb_embed_support(ctx->arena, support, i, emb);
        fb_head_input(emb, xs + (size_t)i * FEWBIT_EMBED_DIM);
    }
#if FB_HEAD_HAS_IQ
    {
        float *scale = (float *)(void *)(ctx->arena + FB_OFF_HEAD_IQ);
        int32_t *zero = (int32_t *)(void *)(scale + 1);
#if FB_HEAD_IQ_DYNAMIC /* the range of the support embeddings */
        double lo = 0.0, hi = 0.0;
        for (i = 0; i < n * FEWBIT_EMBED_DIM; i++) {
            lo = xs[i] < lo ? xs[i] : lo;
            hi = xs[i] > hi ? xs[i] : hi;
        }
        fb_range_qparams(lo, hi, FB_HEAD_IQ_QMIN, FB_HEAD_IQ_QMAX, scale, zero);
#else
        *scale = FB_HEAD_IQ_SCALE;
        *zero = FB_HEAD_IQ_ZERO;
#endif
    }
#endif
    fb_head_quantize(ctx, xs, (size_t)n * FEWBIT_EMBED_DIM);
#if FB_HAS_OWN_HEAD
    if (ctx->own_head) {
        for (i = 0; i < ways * FEWBIT_EMBED_DIM; i++) w[i] = fb_head_w0[i];
        for (c = 0; c < ways; c++) b[c] = fb_head_b0[c];
    } else
#endif
    if (FB_HEAD_INIT == FB_INIT_ZEROS) {
        for (i = 0; i < ways * FEWBIT_EMBED_DIM; i++) w[i] = 0.0f;
        for (c = 0; c < ways; c++) b[c] = 0.0f;
    } else { /* prototypes: W = 2c, b = -|c|^2 (float32, as numpy) */
        int count[FEWBIT_MAX_WAYS];
        for (c = 0; c < ways; c++) {
            count[c] = 0;
            for (d = 0; d < FEWBIT_EMBED_DIM; d++) w[c * FEWBIT_EMBED_DIM + d] = 0.0f;
        }
        for (i = 0; i < n; i++) {
            count[labels[i]]++;
            for (d = 0; d < FEWBIT_EMBED_DIM; d++) w[labels[i] * FEWBIT_EMBED_DIM + d] += xs[i * FEWBIT_EMBED_DIM + d];
        }
        for (c = 0; c < ways; c++) {
            float norm = 0.0f;
            for (d = 0; d < FEWBIT_EMBED_DIM; d++) {
                float p = w[c * FEWBIT_EMBED_DIM + d] / (float)count[c];
                norm += p * p;
                w[c * FEWBIT_EMBED_DIM + d] = 2.0f * p;
            }
            b[c] = -norm;
        }
    }
    for (step = 0; step < steps && moves; step++) {
        fb_head_effective(ctx);
        for (i = 0; i < ways * FEWBIT_EMBED_DIM; i++) gw[i] = 0.0f;
        for (c = 0; c < ways; c++) gb[c] = 0.0f;
        for (i = 0; i < n; i++) {
            const float *x = xs + (size_t)i * FEWBIT_EMBED_DIM;
            double top, sum = 0.0;
            fb_head_logits(ctx, x, logits);
            top = logits[0];
            for (c = 1; c < ways; c++)
                if (logits[c] > top) top = logits[c];
            for (c = 0; c < ways; c++) sum += exp((double)logits[c] - top);
            for (c = 0; c < ways; c++) {
                double p = exp((double)logits[c] - top) / sum - (c == labels[i] ? 1.0 : 0.0);
                float g = (float)(p / (double)n);
                gb[c] += g;
                for (d = 0; d < FEWBIT_EMBED_DIM; d++) gw[c * FEWBIT_EMBED_DIM + d] += g * x[d];
            }
        }
        for (i = 0; i < ways * FEWBIT_EMBED_DIM; i++) {
#if FB_HAS_OWN_HEAD
            if (ctx->own_head && !fb_head_mask_of(i)) continue; /* pruned weights get no gradient */
#endif
            w[i] = w[i] - FB_HEAD_LR * gw[i];
        }
        for (c = 0; c < ways; c++) b[c] = b[c] - FB_HEAD_LR * gb[c];
#if FB_HAS_OWN_HEAD
        if (ctx->own_head) { /* back on the layer's grid after each step, as the numpy runtime and PyTorch do */
            float *wq = (float *)(void *)(ctx->arena + FB_OFF_HEAD_WQ);
            fb_head_requantize(w, wq, ctx->ways);
            for (i = 0; i < ways * FEWBIT_EMBED_DIM; i++) w[i] = wq[i];
        }
#endif
    }
    fb_head_effective(ctx);
    ctx->mode = FB_MODE_HEAD;
    return FEWBIT_OK;
}
