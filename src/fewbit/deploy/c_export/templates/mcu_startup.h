/* mcu_startup.h: what mcu_startup.c gives the bare-metal image's main(). */
#ifndef FEWBIT_MCU_STARTUP_H
#define FEWBIT_MCU_STARTUP_H

#include <stdint.h>

/* Instructions per timer tick: the 25 MHz board timer under `-icount shift=0` (1 ns each). */
#define FB_INSTRUCTIONS_PER_TICK 40u

void fb_puts(const char *s);
void fb_put_u64(uint64_t v);
void fb_put_i32(int32_t v);
void fb_exit(int code);
uint32_t fb_ticks(void);
uint32_t fb_stack_bytes(void);
uint32_t fb_stack_peak(void);

#endif
