/* example: adapt to a support set and print one predicted label per query.
 *
 *   ./example SUPPORT QUERY [--embeddings]
 *
 * SUPPORT holds records of 1 label byte + one input (FEWBIT_INPUT_BYTES bytes); QUERY holds records
 * of one input each. An input is FEWBIT_INPUT_VALUES values of fewbit_input_t, channel-major:
 * uint8 pixels for an image model, float32 (this machine's byte order) for a series model. With
 * --embeddings the embedding of each query is printed instead of its label (integers for an
 * integer body, floats otherwise).
 */
#include <stdio.h>
#include <string.h>

#include "fewbit_model.h"

static uint64_t arena[(FEWBIT_ARENA_BYTES + 7) / 8];
static fewbit_input_t support[FEWBIT_MAX_SUPPORT * FEWBIT_INPUT_VALUES];
static uint8_t labels[FEWBIT_MAX_SUPPORT];
static fewbit_input_t image[FEWBIT_INPUT_VALUES];

int main(int argc, char **argv) {
    fewbit_ctx ctx;
    FILE *f;
    int n = 0, rc, embeddings = argc > 3 && strcmp(argv[3], "--embeddings") == 0;
    int with_scores = argc > 3 && strcmp(argv[3], "--scores") == 0;
    float scores[FEWBIT_MAX_WAYS];
    fewbit_embedding_t emb[FEWBIT_EMBED_DIM];
    if (argc < 3) {
        fprintf(stderr, "usage: %s SUPPORT QUERY [--scores | --embeddings]\n", argv[0]);
        return 2;
    }
    if (fewbit_init(&ctx, arena, sizeof arena) != FEWBIT_OK) return 1;
    f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "example: cannot open %s\n", argv[1]);
        return 2;
    }
    while (n < FEWBIT_MAX_SUPPORT && fread(&labels[n], 1, 1, f) == 1) {
        if (fread(support + (size_t)n * FEWBIT_INPUT_VALUES, 1, FEWBIT_INPUT_BYTES, f) != FEWBIT_INPUT_BYTES) {
            fprintf(stderr, "example: %s ends inside an input\n", argv[1]);
            return 2;
        }
        n++;
    }
    fclose(f);
#if FEWBIT_HEAD_FINETUNE
    rc = fewbit_adapt_head(&ctx, support, labels, n, -1);
#else
    rc = fewbit_adapt_prototypes(&ctx, support, labels, n);
#endif
    if (rc != FEWBIT_OK) {
        fprintf(stderr, "example: adaptation failed (%d): labels must cover 0..ways-1, at most %d images\n", rc,
                FEWBIT_MAX_SUPPORT);
        return 2;
    }
    f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "example: cannot open %s\n", argv[2]);
        return 2;
    }
    while (fread(image, 1, FEWBIT_INPUT_BYTES, f) == FEWBIT_INPUT_BYTES) {
        if (embeddings) {
            int d;
            fewbit_embed(&ctx, image, emb);
            for (d = 0; d < FEWBIT_EMBED_DIM; d++)
#if FEWBIT_INTEGER_BODY
                printf(d ? " %ld" : "%ld", (long)emb[d]);
#else
                printf(d ? " %.9g" : "%.9g", (double)emb[d]);
#endif
            printf("\n");
        } else if (with_scores) {
            int c, best = fewbit_classify(&ctx, image, scores);
            printf("%d", best);
            for (c = 0; c < ctx.ways; c++) printf(" %.9g", (double)scores[c]);
            printf("\n");
        } else {
            printf("%d\n", fewbit_classify(&ctx, image, scores));
        }
    }
    fclose(f);
    return 0;
}
