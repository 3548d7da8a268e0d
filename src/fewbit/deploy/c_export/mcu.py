"""The C export on an emulated Cortex-M4F: the bare-metal image's files, and its figures measured.

`make -C DIR qemu` in an exported folder cross-compiles the model, `mcu_startup.c` (vector table,
reset, MPU guards, semihosting) and `mcu_main.c` with Debian's `gcc-arm-none-eabi` and newlib
into an image for QEMU's `mps2-an386` board (a Cortex-M4F), linked into the memory of the
modelled part (`mcu.ld`: the export's target, 1 MB flash at 0x0 and 256 KB SRAM at 0x20000000 by
default, an nRF52840's or an STM32F427's), and runs it: it adapts to the embedded task, classifies
its queries and prints `fewbit-mcu KEY VALUE` lines over semihosting, then exits by itself.

Instructions are counted with QEMU's `-icount shift=0` (the virtual clock advances 1 ns per
executed guest instruction) read through the board's 25 MHz timer: one tick is 40 instructions,
so each figure is exact to 40. Debian's QEMU has the TCG plugin interface but ships no plugins
(and no header to build one), so icount is what a clean install offers. Milliseconds are an
estimate: instructions x `CPI` / `CLOCK_HZ`.

    report = export_c("model.fewbit", "model_c", mcu=True)
    report["mcu_total_ram_bytes"], report["mcu_instructions_classify"], report["mcu_predictions_match"]
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

import fewbit.runtime as rt
from fewbit.deploy.c_export.elf import elf_sections
from fewbit.deploy.c_export.inputs import CInput, PixelInput, c_input
from fewbit.deploy.c_export.literals import c_token, comment_text
from fewbit.deploy.c_export.pixels import input_to_pixels
from fewbit.errors import ConfigError, DataError
from fewbit.runtime.images import list_images, load_image, load_image_folder
from fewbit.runtime.series import SeriesPreprocessing

PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "make")
STACK_BYTES = 4096  # the image's stack; its measured peak is reported
CLOCK_HZ = 168_000_000  # an STM32F407/F427-class Cortex-M4F
CPI = 1.25  # cycles per instruction assumed: Thumb-2 on a Cortex-M4 runs at about 1 to 1.5
BOARD = "QEMU mps2-an386 (Cortex-M4F)"
RUN_SECONDS = 900  # an image that runs longer than this is stopped


def missing_tools() -> list[str]:
    """The tools `make qemu` needs that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    """ConfigError (one line naming the Debian packages) when the cross compiler or QEMU is missing."""
    missing = missing_tools()
    if missing:
        raise ConfigError(
            f"--mcu needs {', '.join(missing)}: install the Debian packages {PACKAGES} "
            f"(apt-get install {PACKAGES})"
        )


def stroke_task(
    input_shape: Sequence[int], *, ways: int = 5, shots: int = 1, queries: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A task drawn without files: (support uint8 `[ways*shots, C, H, W]`, labels, queries uint8
    `[ways*queries, C, H, W]`). Each class is three bright strokes on a dark ground (ink high, as
    the Omniglot models see glyphs), each image shifted by up to a pixel with a little noise."""
    channels, height, width = (int(v) for v in input_shape)
    rng = np.random.default_rng(seed)
    support, labels, query = [], [], []
    for c in range(ways):
        proto = np.zeros((height, width), np.float32)
        for _ in range(3):
            r = int(rng.integers(min(3, height - 1), max(4, height - 3)))
            c0 = int(rng.integers(min(3, width - 1), max(4, width - 3)))
            length = int(rng.integers(max(1, min(height, width) // 4), max(2, min(height, width) // 2)))
            if rng.random() < 0.5:
                proto[r, c0 : c0 + length] = 1
            else:
                proto[r : r + length, c0] = 1
        for i in range(shots + queries):
            shifted = np.roll(proto, tuple(int(v) for v in rng.integers(-1, 2, 2)), axis=(0, 1))
            noisy = np.clip(shifted + 0.1 * rng.random((height, width), dtype=np.float32), 0, 1)
            pixels = np.repeat(np.rint(noisy * 255).astype(np.uint8)[None], channels, axis=0)
            if i < shots:
                support.append(pixels)
                labels.append(c)
            else:
                query.append(pixels)
    return np.stack(support), np.asarray(labels, np.int64), np.stack(query)


def series_task(
    preprocessing: SeriesPreprocessing, *, ways: int = 5, shots: int = 1, queries: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A task of series drawn without files: (support float32 `[ways*shots, C, 1, L]`, labels,
    queries float32 `[ways*queries, C, 1, L]`), prepared by `preprocessing` as the model's inputs are.
    Each class is, per channel, two sine waves of its own frequencies (1 to 8 periods a window) and
    phases; each series shifts them by up to a twentieth of the window, scales them by 0.8 to 1.2
    and adds noise of a third of a wave's amplitude."""
    channels, length = preprocessing.channels, preprocessing.length
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64) / length
    support, labels, query = [], [], []
    for c in range(ways):
        freq = rng.uniform(1, 8, (channels, 2))
        phase = rng.uniform(0, 2 * np.pi, (channels, 2))
        for i in range(shots + queries):
            shift = rng.uniform(-0.05, 0.05)
            waves = np.sin(2 * np.pi * freq[:, :, None] * (t + shift) + phase[:, :, None]).sum(axis=1)
            series = rng.uniform(0.8, 1.2) * waves + 0.33 * rng.standard_normal((channels, length))
            (support if i < shots else query).append(series.astype(np.float32))
            if i < shots:
                labels.append(c)
    return preprocessing.prepare(support), np.asarray(labels, np.int64), preprocessing.prepare(query)


def default_task(
    model: Any, *, ways: int = 5, shots: int = 1, queries: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The task the bare-metal image embeds unless given one, in the model's C inputs: strokes
    (`stroke_task`) for an image model, sine waves (`series_task`) for a series model."""
    if isinstance(model.prep, SeriesPreprocessing):
        return series_task(model.prep, ways=ways, shots=shots, queries=queries, seed=seed)
    return stroke_task(model.input_shape, ways=ways, shots=shots, queries=queries, seed=seed)


def folder_task(model: Any, task_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The task in `task_dir/support` (one folder per class) and `task_dir/query` (class folders or
    images), read as `fewbit adapt` reads them, as uint8 pixels."""

    if not isinstance(c_input(model.preprocessing), PixelInput):
        raise ConfigError("--mcu TASK_DIR reads image folders; a series model's emulated run adapts to the task "
                          "the export draws (--mcu without a folder) or one given to export_c(task=...)")
    root = Path(task_dir)
    support = load_image_folder(root / "support", model.preprocessing, what="support")
    query_dir = root / "query"
    if not query_dir.is_dir():
        raise DataError(f"--mcu {root}: no query folder {query_dir}")
    if any(p.is_dir() and not p.name.startswith(".") for p in query_dir.iterdir()):
        qx = load_image_folder(query_dir, model.preprocessing, what="query").x
    else:
        files, _ = list_images(query_dir)
        if not files:
            raise DataError(f"--mcu {root}: {query_dir} holds no images")
        qx = np.stack([load_image(p, model.preprocessing) for p in files])
    try:
        return (
            input_to_pixels(support.x, model.preprocessing),
            np.asarray(support.labels, np.int64),
            input_to_pixels(qx, model.preprocessing),
        )
    except ValueError as exc:
        raise DataError(f"--mcu {root}: {exc}") from None


def image_files(
    target: Any, task: tuple[Any, Any, Any], input_shape: Sequence[int], max_ways: int, max_support: int,
    form: CInput | None = None,
) -> dict[str, str | bytes]:
    """The bare-metal image's files: sources, the linker script of the target's memory, the task
    (in the C program's inputs `form`, an `inputs.CInput`: uint8 pixels unless said otherwise)."""
    form = form or PixelInput()
    support, labels, query = (np.asarray(v) for v in task)
    shape = tuple(int(v) for v in input_shape)
    if support.shape[1:] != shape or query.shape[1:] != shape or len(labels) != len(support):
        raise ConfigError(f"C export: the task's inputs must be {form.ctype} {list(shape)} with one label per "
                          "support input")
    ways = int(labels.max()) + 1 if len(labels) else 0
    if not (2 <= len(support) <= max_support and 2 <= ways <= max_ways and len(query) >= 1):
        raise ConfigError(
            f"C export: the task needs 2..{max_support} support examples of 2..{max_ways} classes and a query"
        )
    if sorted(set(labels.tolist())) != list(range(ways)):
        raise ConfigError("C export: the task's support labels must cover 0..ways-1")
    raw = np.frombuffer(form.to_bytes(support), np.uint8).reshape(len(labels), -1)
    records = np.concatenate([labels.astype(np.uint8)[:, None], raw], 1)
    linker = _template("mcu.ld.in")
    for key, value in {
        "@PART@": comment_text(part_name(target)),
        "@FLASH_BYTES@": c_token(int(target.flash_bytes), "flash bytes"),
        "@RAM_BYTES@": c_token(int(target.ram_bytes), "RAM bytes"),
    }.items():
        linker = linker.replace(key, value)
    return {
        "mcu_main.c": _template("mcu_main.c"),
        "mcu_startup.c": _template("mcu_startup.c"),
        "mcu_startup.h": _template("mcu_startup.h"),
        "mcu_task.S": _template("mcu_task.S"),
        "mcu.ld": linker,
        "mcu_support.bin": records.tobytes(),
        "mcu_query.bin": form.to_bytes(query),
    }


def part_name(target: Any) -> str:
    """The modelled part, in words."""
    return f"Cortex-M4F, {target.describe()}"


def run_image(folder: str | Path, *make_args: str, timeout: float = RUN_SECONDS) -> tuple[int, dict[str, Any], str]:
    """`make -C folder qemu [make_args]`: (exit code, the `fewbit-mcu` figures and labels, output)."""
    build = subprocess.run(
        ["make", "-s", "-C", str(folder), "mcu.elf", *make_args], capture_output=True, text=True, timeout=600
    )
    if build.returncode != 0:
        raise ConfigError(f"C export: the bare-metal image does not build: {build.stderr.strip()[-400:]}")
    done = subprocess.run(
        ["make", "-s", "-C", str(folder), "qemu-run", *make_args], capture_output=True, text=True, timeout=timeout
    )
    figures: dict[str, Any] = {"labels": []}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"fewbit-mcu ([a-z_]+) (\d+)", line.strip())
        if match is None:
            continue
        key, value = match.group(1), int(match.group(2))
        if key == "label":
            figures["labels"].append(value)
        else:
            figures[key] = value
    # make reports the image's own exit code as its error; QEMU's exit code is the image's
    code = done.returncode
    if code != 0:
        found = re.search(r"Error (\d+)", done.stderr)
        code = int(found.group(1)) if found else code
    return code, figures, done.stdout + done.stderr


def memory(elf: bytes) -> dict[str, int]:
    """The linked image's memory by section: flash (text, rodata and the data's load image; the
    embedded task, test input, apart), static RAM (data, bss, the MPU guards and the fault handlers'
    stack), the arena and the stack region."""
    sections = {s["name"]: s for s in elf_sections(elf)}
    ram = [s for s in sections.values() if s["alloc"] and 0x20000000 <= s["addr"] < 0x40000000]
    flash = sum(s["size"] for s in sections.values() if s["alloc"] and not s["nobits"] and s["name"] != ".task")
    static = sum(s["size"] for s in ram if s["name"] not in (".arena", ".stack"))
    return {
        "flash": flash,
        "task": sections[".task"]["size"] if ".task" in sections else 0,
        "static_ram": static,
        "arena": sections[".arena"]["size"] if ".arena" in sections else 0,
        "stack_region": sections[".stack"]["size"] if ".stack" in sections else 0,
    }


def measure(out: str | Path, model: Any, task: tuple[Any, Any, Any], target: Any) -> dict[str, Any]:
    """Build and run the image in `out` on QEMU; its figures as `mcu_*` report keys, and whether its
    predictions equal the numpy runtime's (support-set statistics) on the embedded task. Flash is
    the image's without the embedded task (`mcu_task_flash_bytes`); total SRAM is static RAM +
    arena + the stack's measured peak."""

    code, figures, output = run_image(out)
    if code != 0 or "instructions_adapt" not in figures:
        tail = " ".join(output.strip().splitlines()[-3:])
        raise ConfigError(f"C export: the emulated Cortex-M4 run failed (exit {code}): {tail[-300:]}")
    mem = memory((Path(out) / "mcu.elf").read_bytes())
    support, labels, query = task
    form = c_input(model.preprocessing)
    adapted = rt.adapt(model, form.to_model(np.asarray(support), model.preprocessing), np.asarray(labels),
                       norm_stats="support")
    expected = adapted.predict(form.to_model(np.asarray(query), model.preprocessing)).tolist()
    classify = figures["instructions_classify_all"] / max(1, figures["queries"])
    total = mem["static_ram"] + mem["arena"] + figures["stack_peak"]
    return {
        "mcu_part": part_name(target),
        "mcu_board": BOARD,
        "mcu_flash_bytes": mem["flash"],
        "mcu_task_flash_bytes": mem["task"],
        "mcu_static_ram_bytes": mem["static_ram"],
        "mcu_arena_bytes": mem["arena"],
        "mcu_stack_bytes": figures["stack_peak"],
        "mcu_stack_region_bytes": mem["stack_region"],
        "mcu_total_ram_bytes": total,
        "mcu_fits": total <= target.ram_bytes and mem["flash"] <= target.flash_bytes,
        "mcu_task": {"ways": figures["ways"], "support": figures["support"], "queries": figures["queries"]},
        "mcu_instructions_init": figures["instructions_init"],
        "mcu_instructions_adapt": figures["instructions_adapt"],
        "mcu_instructions_classify": int(round(classify)),
        "mcu_instruction_counting": "QEMU -icount shift=0, 25 MHz board timer (exact to 40 instructions)",
        "mcu_clock_hz": CLOCK_HZ,
        "mcu_cpi": CPI,
        "mcu_ms_adapt": figures["instructions_adapt"] * CPI / CLOCK_HZ * 1e3,
        "mcu_ms_classify": classify * CPI / CLOCK_HZ * 1e3,
        "mcu_predictions": figures["labels"],
        "mcu_predictions_match": figures["labels"] == expected,
    }


def figures_text(report: Mapping[str, Any]) -> str:
    """The measured figures, for people."""
    task = report["mcu_task"]
    return (
        f"on {report['mcu_board']} as a {report['mcu_part']}: {report['mcu_flash_bytes']:,} B flash "
        f"(+ {report['mcu_task_flash_bytes']:,} B of embedded task), "
        f"{report['mcu_total_ram_bytes']:,} B SRAM in all ({report['mcu_static_ram_bytes']:,} static + "
        f"{report['mcu_arena_bytes']:,} arena + {report['mcu_stack_bytes']:,} peak stack)"
        f"{'' if report['mcu_fits'] else ': does NOT fit'}\n"
        f"{task['ways']}-way task of {task['support']} support examples: adapt {report['mcu_instructions_adapt']:,} "
        f"instructions ({report['mcu_ms_adapt']:.1f} ms), classify {report['mcu_instructions_classify']:,} "
        f"({report['mcu_ms_classify']:.1f} ms) at {report['mcu_clock_hz'] / 1e6:.0f} MHz and {report['mcu_cpi']} "
        f"cycles per instruction; predictions {'equal' if report['mcu_predictions_match'] else 'DIFFER from'} "
        "the numpy runtime's"
    )


def _template(name: str) -> str:
    return resources.files("fewbit.deploy.c_export").joinpath("templates", name).read_text()
