"""The C export on an emulated Cortex-M4F (`make qemu`, fewbit.deploy.c_export.mcu): the image boots,
adapts, classifies as the numpy runtime does, fits the modelled part, exits by itself, and a too
small stack or arena stops it loudly. Skipped without arm-none-eabi-gcc and qemu-system-arm
(.ci/run installs them)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fewbit.deploy import export
from fewbit.deploy.c_export import export_c, mcu
from fewbit.errors import ConfigError
from fewbit.meta import MetaConfig
from tests.deploy.helpers import compressed_conv1d, compressed_conv4, series_preprocessing

needs_mcu = pytest.mark.skipif(bool(mcu.missing_tools()), reason=f"missing: {', '.join(mcu.missing_tools()) or 'none'}")
PART_RAM, PART_FLASH = 256 * 1024, 1024 * 1024


def _image(tmp_path: Path, spec: str, *, width: int = 64, algorithm: str = "protonet") -> dict:
    kw: dict = {"algorithm": algorithm}
    if algorithm != "protonet":  # head fine-tuning: 5 SGD steps on the support set
        kw = {"meta": MetaConfig(algorithm=algorithm, scope="head", inner_steps=5, inner_lr=0.4)}
    export(compressed_conv4(spec, ways=0 if algorithm == "protonet" else 5, width=width), tmp_path / "m.fewbit", **kw)
    return export_c(tmp_path / "m.fewbit", tmp_path / "c", max_ways=5, max_support=25, mcu=True)


@needs_mcu
def test_conv4_w4a8_and_the_sparse_2_bit_model_run_on_the_emulated_part(tmp_path: Path) -> None:
    reports = {}
    for spec in ("quant:w4a8", "prune:0.75,quant:w2a8"):
        folder = tmp_path / spec.replace(":", "_").replace(",", "_")
        folder.mkdir()
        report = reports[spec] = _image(folder, spec)
        assert report["mcu_predictions_match"], (report["mcu_predictions"], spec)  # equal to numpy's, query for query
        assert report["mcu_task"] == {"ways": 5, "support": 5, "queries": 10}
        total = report["mcu_static_ram_bytes"] + report["mcu_arena_bytes"] + report["mcu_stack_bytes"]
        assert report["mcu_total_ram_bytes"] == total <= PART_RAM and report["mcu_fits"]
        assert report["weight_bytes"] < report["mcu_flash_bytes"] <= PART_FLASH
        assert 0 < report["mcu_stack_bytes"] < report["mcu_stack_region_bytes"]
        assert report["mcu_instructions_adapt"] > report["mcu_instructions_classify"] > 10**6
        symbols = subprocess.run(["arm-none-eabi-nm", str(folder / "c" / "mcu.elf")], capture_output=True, text=True)
        assert " malloc" not in symbols.stdout and "_sbrk" not in symbols.stdout  # nothing allocates
        shipped = json.loads((folder / "c" / "fewbit_report.json").read_text())
        assert shipped["mcu_instructions_classify"] == report["mcu_instructions_classify"]
    dense, sparse = reports["quant:w4a8"], reports["prune:0.75,quant:w2a8"]
    # the small model exists for small devices: no slower than w4a8 on the M4, in less flash
    assert sparse["mcu_instructions_classify"] < dense["mcu_instructions_classify"]
    assert sparse["mcu_instructions_adapt"] < dense["mcu_instructions_adapt"]
    assert sparse["mcu_flash_bytes"] < dense["mcu_flash_bytes"]


@needs_mcu
def test_conv1d_w4a8_adapts_to_series_on_the_emulated_part(tmp_path: Path) -> None:
    """3-channel series of 512 steps, the 1-D Conv-4 at w4a8: 5-way 1-shot adaptation and the
    queries on the emulated M4 give the numpy runtime's predictions, in 256 KB of SRAM in all."""
    model = compressed_conv1d("quant:w4a8:lsq", ways=0, channels=3, length=512)
    export(model, tmp_path / "m.fewbit", algorithm="protonet", preprocessing=series_preprocessing(3, 512))
    report = export_c(tmp_path / "m.fewbit", tmp_path / "c", max_ways=5, max_support=25, mcu=True)
    print("\n" + mcu.figures_text(report))
    assert report["integer_body"] and report["mcu_task"] == {"ways": 5, "support": 5, "queries": 10}
    assert report["mcu_predictions_match"], report["mcu_predictions"]  # equal to numpy's, query for query
    total = report["mcu_static_ram_bytes"] + report["mcu_arena_bytes"] + report["mcu_stack_bytes"]
    assert report["mcu_total_ram_bytes"] == total <= PART_RAM and report["mcu_fits"]
    assert report["weight_bytes"] < report["mcu_flash_bytes"] <= PART_FLASH
    task_bytes = 5 * (1 + 4 * 3 * 512) + 10 * 4 * 3 * 512  # float32 series (the support set's labels aligned to 4)
    assert 0 <= report["mcu_task_flash_bytes"] - task_bytes < 4
    assert report["mcu_instructions_adapt"] > report["mcu_instructions_classify"] > 10**6


@needs_mcu
def test_a_too_small_stack_or_arena_stops_the_image_loudly(tmp_path: Path) -> None:
    export(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path / "m.fewbit", algorithm="protonet")
    export_c(tmp_path / "m.fewbit", tmp_path / "c", max_ways=5, max_support=25, compile_check=False)
    code, figures, output = mcu.run_image(tmp_path / "c")
    assert code == 0 and "done" in output and len(figures["labels"]) == 10
    code, figures, output = mcu.run_image(tmp_path / "c", "STACK_BYTES=256")
    assert code == 3 and "FAULT stack overflow" in output and not figures["labels"]  # the MPU guard, at once
    code, _, output = mcu.run_image(tmp_path / "c", "ARENA_BYTES=4096")
    assert code == 2 and "refused the arena" in output


@needs_mcu
def test_a_frame_larger_than_the_guard_still_faults(tmp_path: Path) -> None:
    """At the default limits a kernel's frame (hundreds of bytes) jumps over the 32-byte guard of a
    256-byte stack: the no-access region below RAM still stops it (it read zeros and hung before)."""
    export(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path / "m.fewbit", algorithm="protonet")
    export_c(tmp_path / "m.fewbit", tmp_path / "c", compile_check=False)
    code, figures, output = mcu.run_image(tmp_path / "c", "STACK_BYTES=256")
    assert code == 3 and "FAULT stack overflow" in output and not figures["labels"], output


@needs_mcu
def test_head_fine_tuning_runs_on_the_emulated_part_and_its_extra_ram(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "h").mkdir()
    protos = _image(tmp_path / "p", "quant:w4a8", width=16)
    head = _image(tmp_path / "h", "quant:w4a8", width=16, algorithm="maml")
    assert head["method"] == "head" and head["mcu_predictions_match"]
    assert head["mcu_arena_bytes"] > protos["mcu_arena_bytes"]  # the head, its gradient, the support embeddings
    assert head["mcu_total_ram_bytes"] <= PART_RAM


@needs_mcu
def test_cli_mcu_reads_a_task_folder_and_prints_the_contract(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from PIL import Image

    from fewbit.cli import main

    export(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path / "m.fewbit", algorithm="protonet")
    support, labels, queries = mcu.stroke_task((1, 28, 28), ways=3, shots=1, queries=2, seed=4)
    for part, images, ys in (("support", support, labels), ("query", queries, np.repeat(np.arange(3), 2))):
        for i, (img, y) in enumerate(zip(images, ys)):
            (tmp_path / "task" / part / f"class{y}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(tmp_path / "task" / part / f"class{y}" / f"{i}.png")
    argv = ["export", str(tmp_path / "m.fewbit"), "--format", "c", "--out", str(tmp_path / "c"), "--json"]
    assert main([*argv, "--max-ways", "5", "--max-support", "25", "--mcu", str(tmp_path / "task")]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("mcu_flash_bytes", "mcu_static_ram_bytes", "mcu_stack_bytes", "mcu_total_ram_bytes",
                "mcu_instructions_adapt", "mcu_instructions_classify"):
        assert isinstance(report[key], int) and report[key] > 0
    assert report["mcu_predictions_match"] is True and report["mcu_task"]["queries"] == 6


def test_without_the_toolchain_mcu_is_one_line_naming_the_packages(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    export(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path / "m.fewbit", algorithm="protonet")
    with pytest.raises(ConfigError, match="qemu-system-arm") as info:
        export_c(tmp_path / "m.fewbit", tmp_path / "c", mcu=True, compile_check=False)
    assert "\n" not in str(info.value) and "gcc-arm-none-eabi libnewlib-arm-none-eabi" in str(info.value)
    assert not (tmp_path / "c").exists()  # refused before any work


def test_the_image_declares_the_targets_memory_and_embeds_the_task(tmp_path: Path) -> None:
    from fewbit.deploy.c_export import CTarget

    export(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path / "m.fewbit", algorithm="protonet")
    task = mcu.stroke_task((1, 28, 28), ways=4, shots=2, queries=3, seed=1)
    target = CTarget(ram_bytes=192 * 1024, flash_bytes=512 * 1024)
    export_c(tmp_path / "m.fewbit", tmp_path / "c", task=task, target=target, compile_check=False)
    linker = (tmp_path / "c" / "mcu.ld").read_text()
    assert "LENGTH = 524288" in linker and "LENGTH = 196608" in linker
    support = (tmp_path / "c" / "mcu_support.bin").read_bytes()
    assert len(support) == 8 * (1 + 784) and support[0] == 0 and support[2 * 785] == 1
    assert (tmp_path / "c" / "mcu_query.bin").read_bytes() == task[2].tobytes()
    with pytest.raises(ConfigError, match="cover 0..ways-1"):
        export_c(tmp_path / "m.fewbit", tmp_path / "d", task=(task[0], task[1] * 2, task[2]), compile_check=False)
