"""Export a `.fewbit` artifact as a self-contained C99 library that adapts on the device.

    report = fewbit.deploy.export_c("model.fewbit", "model_c/")
    print(report["flash_bytes"], report["arena_bytes"], report["fits"])
    # then: make -C model_c && model_c/example support.bin query.bin

The folder holds `fewbit_model.h` (the API), `fewbit_model.c` (the packed weights as `const`
arrays, so they stay in flash, and the kernels), `example_main.c` and a `Makefile`. Nothing is
allocated: the caller passes one arena of `FEWBIT_ARENA_BYTES`, a size computed here from the
architecture, `max_ways` and `max_support`.

Inputs enter as the artifact's kind says (`fewbit.deploy.c_export.inputs`): an image as uint8
pixels, normalised inside; a series as the float32 values its preprocessing prepared, the very
values the numpy runtime takes. What runs on the device is the artifact's network with BatchNorm
statistics taken from the support set and frozen, each image (or series) then embedded on its own
(`norm_stats: support`, `fewbit.runtime.support_stats`): a per-image API in a few hundred KB cannot hold a batch. The
numpy runtime runs the same mode (`fewbit.runtime.adapt(..., norm_stats="support")`), so the two
can be compared: on an integer body (integer weights, static activation quantization of at most
8 bits) every layer is int8 x low-bit weights with int32 accumulators and fixed-point
requantization (`fewbit.runtime.fixedpoint`), and the Q16 embeddings agree bit for bit; a body
with float parts runs in float32 and agrees to rounding. Head fine-tuning and distances are float.

`make -C model_c qemu` builds the same code into a bare-metal image for a Cortex-M4F and runs it on
QEMU's mps2-an386 board; `export_c(..., mcu=True)` does so and reports the flash, SRAM, stack and
instructions measured there (`fewbit.deploy.c_export.mcu`). Pruned layers run from a schedule of
their kept weights that `fewbit_init` decodes once; dense byte products use the Cortex-M4's SMLAD.

Work is bounded before it starts: the export refuses (ConfigError, one line) what the C runtime
cannot reproduce, such as layers beyond conv/linear/batchnorm/relu/maxpool/flatten, activation
ranges taken per batch, body adaptation, or integer sums that could overflow for `max_support`.
"""

from fewbit.deploy.c_export.elf import elf_alloc_bytes
from fewbit.deploy.c_export.export import CTarget, export_c, report_text, stage_geometry
from fewbit.deploy.c_export.inputs import CInput, c_input, write_task_files
from fewbit.deploy.c_export.pixels import input_to_pixels, pixels_to_input

__all__ = [
    "CInput",
    "CTarget",
    "c_input",
    "elf_alloc_bytes",
    "export_c",
    "input_to_pixels",
    "pixels_to_input",
    "report_text",
    "stage_geometry",
    "write_task_files",
]
