/* ========================================================================================== API */

int fewbit_init(fewbit_ctx *ctx, void *arena, size_t arena_bytes) {
    if (!ctx || !arena) return FEWBIT_ERR_ARGUMENT;
    if (arena_bytes < FEWBIT_ARENA_BYTES) return FEWBIT_ERR_ARENA;
    if ((uintptr_t)arena % 8u) return FEWBIT_ERR_ARENA; /* the arena must be 8-byte aligned */
    ctx->arena = (unsigned char *)arena;
    ctx->frozen = 0;
    ctx->ways = 0;
    ctx->mode = 0;
    fb_prepare(ctx->arena);
#if FB_NEEDS_SUPPORT == 0
    fb_freeze(ctx->arena, 0, 0); /* no statistics and no range depends on the support set */
    ctx->frozen = 1;
#endif
    return FEWBIT_OK;
}

int fewbit_freeze_statistics(fewbit_ctx *ctx, const fewbit_input_t *images, int n) {
    if (!ctx || !ctx->arena || !images || n < 1 || n > FEWBIT_MAX_SUPPORT) return FEWBIT_ERR_ARGUMENT;
    fb_freeze(ctx->arena, images, n);
    ctx->frozen = 1;
    return FEWBIT_OK;
}

int fewbit_embed(fewbit_ctx *ctx, const fewbit_input_t *image, fewbit_embedding_t *out_embedding) {
    if (!ctx || !ctx->arena || !image || !out_embedding) return FEWBIT_ERR_ARGUMENT;
    if (!ctx->frozen) return FEWBIT_ERR_STATE;
    fb_embed_raw(ctx->arena, image, out_embedding);
    return FEWBIT_OK;
}

int fewbit_adapt_prototypes(fewbit_ctx *ctx, const fewbit_input_t *support, const uint8_t *labels, int n) {
    fewbit_embedding_t *emb;
    double *protos;
    int32_t *counts;
    int i, d, c, ways = fb_check_support(ctx, support, labels, n);
    if (ways < 0) return ways;
    fewbit_freeze_statistics(ctx, support, n);
    emb = (fewbit_embedding_t *)(void *)(ctx->arena + FB_OFF_EMBED);
    protos = (double *)(void *)(ctx->arena + FB_OFF_PROTOS);
    counts = (int32_t *)(void *)(ctx->arena + FB_OFF_COUNTS);
    for (c = 0; c < ways; c++) {
        counts[c] = 0;
        for (d = 0; d < FEWBIT_EMBED_DIM; d++) protos[c * FEWBIT_EMBED_DIM + d] = 0.0;
    }
    for (i = 0; i < n; i++) {
        fb_embed_support(ctx->arena, support, i, emb);
        counts[labels[i]]++;
        for (d = 0; d < FEWBIT_EMBED_DIM; d++) protos[labels[i] * FEWBIT_EMBED_DIM + d] += fb_embedding_value(emb[d]);
    }
    for (c = 0; c < ways; c++)
        for (d = 0; d < FEWBIT_EMBED_DIM; d++) protos[c * FEWBIT_EMBED_DIM + d] /= (double)counts[c];
    ctx->ways = ways;
    ctx->mode = FB_MODE_PROTOTYPES;
    return FEWBIT_OK;
}

int fewbit_classify(fewbit_ctx *ctx, const fewbit_input_t *image, float *scores) {
    fewbit_embedding_t *emb;
    int c, d, best = 0;
    double best_score = 0.0;
    if (!ctx || !ctx->arena || !image || !scores) return FEWBIT_ERR_ARGUMENT;
    if (!ctx->frozen || ctx->ways < 2) return FEWBIT_ERR_STATE;
    emb = (fewbit_embedding_t *)(void *)(ctx->arena + FB_OFF_EMBED);
    fb_embed_raw(ctx->arena, image, emb);
#if FEWBIT_HEAD_FINETUNE
    if (ctx->mode == FB_MODE_HEAD) {
        fb_head_scores(ctx, emb, scores);
        for (c = 1; c < ctx->ways; c++)
            if (scores[c] > scores[best]) best = c;
        return best;
    }
#endif
    {
        /* minus squared distances to the prototypes, or scale x cosine similarity (Meta-Baseline),
           compared in double (as numpy does) */
        const double *protos = (const double *)(const void *)(ctx->arena + FB_OFF_PROTOS);
#if FEWBIT_PROTO_COSINE
        double qq = 0.0;
        for (d = 0; d < FEWBIT_EMBED_DIM; d++) qq += fb_embedding_value(emb[d]) * fb_embedding_value(emb[d]);
#endif
        for (c = 0; c < ctx->ways; c++) {
            double score;
#if FEWBIT_PROTO_COSINE
            double dot = 0.0, pp = 0.0;
            for (d = 0; d < FEWBIT_EMBED_DIM; d++) {
                double p = protos[c * FEWBIT_EMBED_DIM + d];
                dot += fb_embedding_value(emb[d]) * p;
                pp += p * p;
            }
            double nq = sqrt(qq) > 1e-12 ? sqrt(qq) : 1e-12, np_ = sqrt(pp) > 1e-12 ? sqrt(pp) : 1e-12;
            score = FEWBIT_COSINE_SCALE * dot / (nq * np_);
#else
            double dist = 0.0;
            for (d = 0; d < FEWBIT_EMBED_DIM; d++) {
                double diff = fb_embedding_value(emb[d]) - protos[c * FEWBIT_EMBED_DIM + d];
                dist += diff * diff;
            }
            score = -dist;
#endif
            scores[c] = (float)score;
            if (c == 0 || score > best_score) {
                best = c;
                best_score = score;
            }
        }
    }
    return best;
}
