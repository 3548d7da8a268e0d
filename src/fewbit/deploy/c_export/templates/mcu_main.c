/* mcu_main.c: the bare-metal image of `make qemu`. It adapts to the task embedded in flash
 * (mcu_task.S), classifies its queries, and prints over semihosting, one `fewbit-mcu KEY VALUE`
 * line each: every query's label, the instructions of init, adaptation and each classification
 * (timer ticks under QEMU's `-icount shift=0`), and the stack's high-water mark; it exits 0.
 *
 * The support set and one query at a time are copied into RAM first, as a device holds the
 * images or series it captured. Exit codes: 1 an API call failed, 2 the arena is refused, 3 a fault (the
 * stack or a write past the arena hit an MPU guard), 4 the task file does not fit the model.
 */
#include <string.h>

#include "fewbit_model.h"
#include "mcu_startup.h"

#ifndef FB_MCU_ARENA_BYTES
#define FB_MCU_ARENA_BYTES FEWBIT_ARENA_BYTES
#endif
#define FB_RECORD (1 + FEWBIT_INPUT_BYTES)
#define FB_SUPPORT_N (FB_MCU_SUPPORT_BYTES / FB_RECORD)

#if FB_MCU_SUPPORT_BYTES % FB_RECORD != 0 || FB_SUPPORT_N < 2 || FB_SUPPORT_N > FEWBIT_MAX_SUPPORT
#error "SUPPORT must hold 2..FEWBIT_MAX_SUPPORT records of 1 label byte + one input (FEWBIT_INPUT_BYTES)"
#endif

extern const uint8_t fb_task_support[], fb_task_support_end[], fb_task_query[], fb_task_query_end[];

/* the arena, rounded up to the 32 bytes of the MPU guard that follows it */
static uint64_t arena[(FB_MCU_ARENA_BYTES + 31u) / 32u * 4u] __attribute__((section(".arena"), aligned(32)));
static fewbit_input_t support[FB_SUPPORT_N * FEWBIT_INPUT_VALUES];
static uint8_t labels[FB_SUPPORT_N];
static fewbit_input_t image[FEWBIT_INPUT_VALUES];

static void line(const char *key, uint64_t value) {
    fb_puts("fewbit-mcu ");
    fb_puts(key);
    fb_puts(" ");
    fb_put_u64(value);
    fb_puts("\n");
}

int main(void) {
    fewbit_ctx ctx;
    float scores[FEWBIT_MAX_WAYS];
    uint32_t t0, t_init, t_adapt, t_class = 0, t_first = 0;
    int i, rc, queries;
    if ((size_t)(fb_task_support_end - fb_task_support) != (size_t)FB_MCU_SUPPORT_BYTES ||
        (size_t)(fb_task_query_end - fb_task_query) % FEWBIT_INPUT_BYTES != 0) {
        fb_puts("fewbit-mcu ERROR the task files changed since the build, or QUERY is not whole inputs\n");
        return 4;
    }
    queries = (int)((size_t)(fb_task_query_end - fb_task_query) / FEWBIT_INPUT_BYTES);
    for (i = 0; i < FB_SUPPORT_N; i++) {
        labels[i] = fb_task_support[(size_t)i * FB_RECORD];
        memcpy(support + (size_t)i * FEWBIT_INPUT_VALUES, fb_task_support + (size_t)i * FB_RECORD + 1, FEWBIT_INPUT_BYTES);
    }
    t0 = fb_ticks();
    rc = fewbit_init(&ctx, arena, FB_MCU_ARENA_BYTES);
    t_init = fb_ticks() - t0;
    if (rc == FEWBIT_ERR_ARENA) {
        fb_puts("fewbit-mcu ERROR fewbit_init refused the arena: ");
        fb_put_u64(FB_MCU_ARENA_BYTES);
        fb_puts(" B given, FEWBIT_ARENA_BYTES = ");
        fb_put_u64(FEWBIT_ARENA_BYTES);
        fb_puts(" B needed\n");
        return 2;
    }
    if (rc != FEWBIT_OK) return 1;
    t0 = fb_ticks();
#if FEWBIT_HEAD_FINETUNE
    rc = fewbit_adapt_head(&ctx, support, labels, FB_SUPPORT_N, -1);
#else
    rc = fewbit_adapt_prototypes(&ctx, support, labels, FB_SUPPORT_N);
#endif
    t_adapt = fb_ticks() - t0;
    if (rc != FEWBIT_OK) {
        fb_puts("fewbit-mcu ERROR adaptation failed: labels must cover 0..ways-1\n");
        return 1;
    }
    for (i = 0; i < queries; i++) {
        uint32_t t;
        int label;
        memcpy(image, fb_task_query + (size_t)i * FEWBIT_INPUT_BYTES, FEWBIT_INPUT_BYTES);
        t0 = fb_ticks();
        label = fewbit_classify(&ctx, image, scores);
        t = fb_ticks() - t0;
        if (label < 0) return 1;
        t_class += t;
        if (i == 0) t_first = t;
        line("label", (uint64_t)label);
    }
    line("support", FB_SUPPORT_N);
    line("queries", (uint64_t)queries);
    line("ways", (uint64_t)ctx.ways);
    line("arena_bytes", FEWBIT_ARENA_BYTES);
    line("instructions_init", (uint64_t)t_init * FB_INSTRUCTIONS_PER_TICK);
    line("instructions_adapt", (uint64_t)t_adapt * FB_INSTRUCTIONS_PER_TICK);
    line("instructions_classify_first", (uint64_t)t_first * FB_INSTRUCTIONS_PER_TICK);
    line("instructions_classify_all", (uint64_t)t_class * FB_INSTRUCTIONS_PER_TICK);
    line("stack_bytes", fb_stack_bytes());
    line("stack_peak", fb_stack_peak());
    fb_puts("fewbit-mcu done\n");
    return 0;
}
