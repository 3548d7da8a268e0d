/* mcu_startup.c: start-up for the bare-metal image `make qemu` runs on QEMU's mps2-an386 board
 * (a Cortex-M4F). Vector table, reset (FPU on, .data copied, .bss zeroed, the stack painted, MPU
 * guards below the stack and after the arena), semihosting output and exit, and a timer that
 * counts instructions under `-icount shift=0`. No libc start-up files, no heap, no stdio.
 *
 * main() runs in thread mode on the process stack (PSP); faults run on a small stack of their
 * own (MSP), so a stack that overflows into its guard still gets its fault reported.
 */
#include <stdint.h>

#include "mcu_startup.h"

#ifndef FB_STACK_BYTES
#define FB_STACK_BYTES 4096
#endif
#define FB_HANDLER_STACK_BYTES 1024
#define FB_PAINT 0xC5C5C5C5u

uint64_t fb_stack[FB_STACK_BYTES / 8] __attribute__((section(".stack")));
uint8_t fb_stack_guard[32] __attribute__((section(".stack_guard"), aligned(32)));
uint8_t fb_arena_guard[32] __attribute__((section(".arena_guard"), aligned(32)));
static uint64_t fb_handler_stack[FB_HANDLER_STACK_BYTES / 8] __attribute__((section(".handler_stack")));

extern uint32_t fb_data_start, fb_data_end, fb_data_load, fb_bss_start, fb_bss_end;
int main(void);
void fb_reset(void);
void fb_fault(void);

/* ------------------------------------------------------------------------------ semihosting */

static int fb_semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void fb_puts(const char *s) { (void)fb_semihost(0x04, s); } /* SYS_WRITE0 */

void fb_put_u64(uint64_t v) {
    char buf[24];
    int i = 23;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    fb_puts(buf + i);
}

void fb_put_i32(int32_t v) {
    if (v < 0) {
        fb_puts("-");
        fb_put_u64((uint64_t)(-(int64_t)v));
    } else {
        fb_put_u64((uint64_t)v);
    }
}

void fb_exit(int code) {
    uint32_t args[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit, SYS_EXIT_EXTENDED */
    for (;;) (void)fb_semihost(0x20, args);
}

/* ------------------------------------------------------------------------------------ timer */

/* CMSDK APB timer 0 of the MPS2 board: counts down at its 25 MHz clock. Under `-icount shift=0`
 * QEMU's virtual clock advances 1 ns per executed instruction, so one tick is 40 instructions. */
#define FB_TIMER ((volatile uint32_t *)0x40000000u)

static void fb_timer_start(void) {
    FB_TIMER[2] = 0xFFFFFFFFu; /* RELOAD */
    FB_TIMER[1] = 0xFFFFFFFFu; /* VALUE */
    FB_TIMER[0] = 1u;          /* CTRL: enable */
}

uint32_t fb_ticks(void) { return 0xFFFFFFFFu - FB_TIMER[1]; }

/* --------------------------------------------------------------------------------- the stack */

uint32_t fb_stack_bytes(void) { return (uint32_t)sizeof fb_stack; }

/* The stack's high-water mark: bytes below its top that were ever written (the paint is gone). */
uint32_t fb_stack_peak(void) {
    const uint32_t *w = (const uint32_t *)(const void *)fb_stack;
    uint32_t i, n = (uint32_t)(sizeof fb_stack / 4u);
    for (i = 0; i < n && w[i] == FB_PAINT; i++) {
    }
    return (n - i) * 4u;
}

/* ---------------------------------------------------------------------------------- the MPU */

#define FB_SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define FB_SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define FB_SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define FB_SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define FB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define FB_MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define FB_MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define FB_MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)

/* A 32-byte region no access may touch (AP = 0, XN): a write there faults at once. */
static void fb_guard(int region, const void *base) {
    FB_MPU_RBAR = ((uint32_t)base & ~31u) | 0x10u | (uint32_t)region; /* VALID, REGION */
    FB_MPU_RASR = (1u << 28) | (4u << 1) | 1u;                         /* XN, SIZE 2**(4+1), ENABLE */
}

static int fb_in(uint32_t address, const void *base) {
    return address - (uint32_t)base < 32u;
}

/* The 4 KB below the stack's guard (the stack and its guard open RAM, so this is no RAM of the
 * part's), no access either: a frame larger than the 32-byte guard (a kernel's locals run to
 * hundreds of bytes) that jumps over it still faults instead of reaching memory that reads as 0. */
#define FB_BELOW_RAM(guard) (((uint32_t)(guard) & ~4095u) - 4096u)
static void fb_guard_below(int region, const void *guard) {
    FB_MPU_RBAR = FB_BELOW_RAM(guard) | 0x10u | (uint32_t)region; /* VALID, REGION */
    FB_MPU_RASR = (1u << 28) | (11u << 1) | 1u;                   /* XN, SIZE 2**(11+1), ENABLE */
}

static int fb_in_stack_guard(uint32_t address) {
    return fb_in(address, fb_stack_guard) || address - FB_BELOW_RAM(fb_stack_guard) < 4096u;
}

/* Every fault: say which, where, and stop the run with exit code 3. */
void fb_fault(void) {
    uint32_t cfsr = FB_SCB_CFSR, at = FB_SCB_MMFAR;
    int mm_valid = (cfsr & 0x80u) != 0;
    if (mm_valid && fb_in_stack_guard(at))
        fb_puts("fewbit-mcu FAULT stack overflow: the stack ran into its MPU guard; raise STACK_BYTES\n");
    else if (mm_valid && fb_in(at, fb_arena_guard))
        fb_puts("fewbit-mcu FAULT arena overrun: a write ran past the arena into its MPU guard\n");
    else if (cfsr & 0x10u)
        fb_puts("fewbit-mcu FAULT stack overflow: exception stacking hit the MPU guard; raise STACK_BYTES\n");
    else
        fb_puts("fewbit-mcu FAULT\n");
    fb_puts("fewbit-mcu cfsr ");
    fb_put_u64(cfsr);
    fb_puts(" mmfar ");
    fb_put_u64(at);
    fb_puts(" bfar ");
    fb_put_u64(FB_SCB_BFAR);
    fb_puts("\n");
    fb_exit(3);
}

/* ------------------------------------------------------------------------------------ reset */

void fb_reset(void) {
    uint32_t *p;
    const uint32_t *q;
    FB_CPACR |= 0xFu << 20; /* CP10, CP11: the FPU (the code is compiled for hard float) */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (p = &fb_data_start, q = &fb_data_load; p < &fb_data_end;) *p++ = *q++;
    for (p = &fb_bss_start; p < &fb_bss_end;) *p++ = 0u;
    for (p = (uint32_t *)(void *)fb_stack; p < (uint32_t *)(void *)(fb_stack + FB_STACK_BYTES / 8);) *p++ = FB_PAINT;
    fb_guard(0, fb_stack_guard);
    fb_guard(1, fb_arena_guard);
    fb_guard_below(2, fb_stack_guard);
    FB_MPU_CTRL = 0x5u;             /* ENABLE, PRIVDEFENA: the default map elsewhere */
    FB_SCB_SHCSR |= 0x7u << 16;      /* MemManage, BusFault, UsageFault enabled */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    fb_timer_start();
    /* main() on the process stack, faults on this (main) stack */
    __asm__ volatile("msr psp, %0\n\t"
                     "movs r0, #2\n\t"
                     "msr control, r0\n\t"
                     "isb" ::"r"(fb_stack + FB_STACK_BYTES / 8)
                     : "r0", "memory");
    fb_exit(main());
}

typedef void (*fb_vector)(void);

__attribute__((section(".vectors"), used)) static const fb_vector fb_vectors[16] = {
    (fb_vector)(void *)(fb_handler_stack + FB_HANDLER_STACK_BYTES / 8), /* initial MSP */
    fb_reset,
    fb_fault, /* NMI */
    fb_fault, /* HardFault */
    fb_fault, /* MemManage */
    fb_fault, /* BusFault */
    fb_fault, /* UsageFault */
    0, 0, 0, 0,
    fb_fault, /* SVCall */
    fb_fault, /* DebugMonitor */
    0,
    fb_fault, /* PendSV */
    fb_fault, /* SysTick */
};
