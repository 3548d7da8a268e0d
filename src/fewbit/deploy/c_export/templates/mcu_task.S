/* mcu_task.S: the task the bare-metal image adapts to and classifies, as bytes in flash:
 * FB_MCU_SUPPORT (1 label byte + the input, per image or series) and FB_MCU_QUERY (the input, per
 * image or series), the formats of `fewbit adapt --raw-out` and of the example program (set by
 * `make qemu SUPPORT=... QUERY=...`). */
    .section .fewbit_task, "a"
    .balign 4
    .global fb_task_support
fb_task_support:
    .incbin FB_MCU_SUPPORT
    .global fb_task_support_end
fb_task_support_end:
    .balign 4
    .global fb_task_query
fb_task_query:
    .incbin FB_MCU_QUERY
    .global fb_task_query_end
fb_task_query_end:
