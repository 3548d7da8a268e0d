"""The C export: compiled with -Werror, run, and compared with the numpy runtime in support-set mode.

Integer bodies must give bit-identical Q16 embeddings; float parts (a float body, a fine-tuned
head) may differ in rounding, so there predictions must agree on >= 99.5% of the queries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.deploy import export
from fewbit.deploy.c_export import (
    CTarget,
    c_input,
    elf_alloc_bytes,
    export_c,
    input_to_pixels,
    pixels_to_input,
    write_task_files,
)
from fewbit.errors import ConfigError
from fewbit.meta import MetaConfig
from fewbit.runtime.support_stats import SupportStatistics
from tests.deploy.helpers import (
    compressed_conv1d,
    compressed_conv4,
    compressed_mlp,
    glyphs,
    series,
    series_preprocessing,
)

CC = shutil.which("cc") or shutil.which("gcc")
STRICT = "-std=c99 -Wall -Wextra -Werror -O2"
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def _task(ways: int, shots: int, queries: int, seed: int) -> tuple[np.ndarray, ...]:
    """uint8 pixels of a task: (support, support labels, queries, query labels)."""
    x, y = glyphs(ways, shots + queries, seed=seed)
    pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    first = np.arange(len(y)) % (shots + queries) < shots
    return pixels[first], y[first], pixels[~first], y[~first]


def _build(model: torch.nn.Module, folder: Path, algorithm: str, cflags: str = STRICT, **kw: object) -> dict:
    if algorithm != "protonet" and "meta" not in kw:  # the C runtime adapts the head: 5 steps of 0.4
        kw["meta"] = MetaConfig(algorithm=algorithm, scope="head", inner_steps=5, inner_lr=0.4)
        algorithm = None  # type: ignore[assignment]
    export(model, folder / "m.fewbit", algorithm=algorithm, **kw)  # type: ignore[arg-type]
    report = export_c(folder / "m.fewbit", folder / "c", max_ways=10, max_support=25)
    done = subprocess.run(["make", "-s", "-C", str(folder / "c"), f"CFLAGS={cflags}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return report


def _series_task(ways: int, shots: int, queries: int, seed: int) -> tuple[np.ndarray, ...]:
    """float32 series of a task, 3 channels x 128 steps: (support, support labels, queries, query labels)."""
    x, y = series(ways, shots + queries, seed=seed)
    first = np.arange(len(y)) % (shots + queries) < shots
    return x[first], y[first], x[~first], y[~first]


def _run(folder: Path, support: np.ndarray, labels: np.ndarray, queries: np.ndarray, *extra: str) -> list[str]:
    form = c_input(_numpy(folder).preprocessing)  # uint8 pixels, or a series model's float32 values
    write_task_files(folder / "task", support, labels, queries, form)
    files = [str(folder / "task" / "support.bin"), str(folder / "task" / "query.bin")]
    done = subprocess.run(
        [str(folder / "c" / "example"), *files, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout.strip().splitlines()


def _numpy(folder: Path) -> rt.RuntimeModel:
    return rt.load(folder / "m.fewbit")


def _embeddings(folder: Path, *task: np.ndarray, kind: type = int) -> np.ndarray:
    return np.array([[kind(v) for v in line.split()] for line in _run(folder, *task, "--embeddings")])


@needs_cc
@pytest.mark.slow
def test_conv4_w4a8_embeddings_are_bit_exact_on_1000_queries(tmp_path: Path) -> None:
    # 32 channels instead of 64: the same arithmetic at a quarter of the time
    report = _build(compressed_conv4("quant:w4a8", ways=0, width=32), tmp_path, "protonet")
    assert report["integer_body"] and report["method"] == "prototypes"
    model = _numpy(tmp_path)
    support, labels, queries, truth = _task(10, 1, 100, seed=1)  # 10 ways x 100 = 1,000 queries
    x = pixels_to_input(queries, model.preprocessing)
    stats = SupportStatistics(model, pixels_to_input(support, model.preprocessing))
    assert stats.integer
    np.testing.assert_array_equal(_embeddings(tmp_path, support, labels, queries), stats.embed_fixed(x))
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    adapted = rt.adapt(model, pixels_to_input(support, model.preprocessing), labels, norm_stats="support")
    pred_np = adapted.predict(x)
    assert len(pred_c) == 1000 and (pred_c == pred_np).mean() >= 0.995
    assert (pred_c == truth).mean() > 0.5  # and it classifies: 10 ways, chance is 0.1


@needs_cc
@pytest.mark.parametrize(
    ("spec", "arch", "algorithm"),
    [
        ("prune:0.75,quant:w2a8", "conv4", "protonet"),  # Rice-coded masks
        (
            "quant:w4a8",
            "conv4-wide",
            "protonet",
        ),  # 25 support images: the first stages' activations do not fit the cache
        ("prune:0.5,quant:w3a8:asym", "mlp", "maml"),  # asymmetric 3-bit, an own head re-quantized by min-max
        ("quant:w8a8", "mlp", "finetune"),  # a new head from zeros on 8-bit weights
        ("prune:0.9,quant:w1a8", "mlp", "anil"),  # 1-bit sign codes, index-list masks
    ],
)
def test_integer_bodies_match_numpy_bit_for_bit(spec: str, arch: str, algorithm: str, tmp_path: Path) -> None:
    wide = arch == "conv4-wide"
    model = (
        compressed_conv4(spec, ways=5, width=64 if wide else 16)
        if arch.startswith("conv4")
        else compressed_mlp(spec, ways=5)
    )
    report = _build(model, tmp_path, algorithm)
    assert report["integer_body"]
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _task(5, 5 if wide else 2, 10 if wide else 40, seed=2)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    emb_c = _embeddings(tmp_path, support, labels, queries)
    np.testing.assert_array_equal(emb_c, SupportStatistics(runtime, sx).embed_fixed(qx))
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    pred_np = rt.adapt(runtime, sx, labels, norm_stats="support").predict(qx)
    assert (pred_c == pred_np).mean() >= 0.995


@needs_cc
@pytest.mark.parametrize("spec", ["quant:w4a8", "prune:0.75,quant:w4a8:asym"])
def test_the_cortex_m_dsp_kernels_match_numpy_on_this_host(spec: str, tmp_path: Path) -> None:
    """The SMLAD products (and the sparse rows beside them) with their plain-C intrinsics, on the host."""
    flags = STRICT + " -DFEWBIT_DSP_KERNELS=1"
    report = _build(compressed_conv4(spec, ways=0, width=16), tmp_path, "protonet", cflags=flags)
    assert report["integer_body"]
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _task(5, 2, 8, seed=7)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    np.testing.assert_array_equal(
        _embeddings(tmp_path, support, labels, queries), SupportStatistics(runtime, sx).embed_fixed(qx)
    )


@needs_cc
@pytest.mark.parametrize(
    ("spec", "algorithm", "flags"),
    [
        ("quant:w4a8:lsq", "protonet", ""),
        ("quant:w2a8:lsq", "protonet", " -DFEWBIT_DSP_KERNELS=1"),  # the SMLAD kernels' plain-C twins
        ("prune:0.75,quant:w2a8:lsq", "protonet", ""),  # 75% sparse: the schedule of kept weights
        ("prune:2:4@features.[123].*,quant:w4a8", "protonet", ""),  # N:M
        ("slim:quant:w2a8", "protonet", ""),  # half the channels pruned and slimmed away
        ("quant:w4a8", "maml", ""),  # the head fine-tuned in C
    ],
)
def test_conv1d_integer_bodies_match_numpy_bit_for_bit(spec: str, algorithm: str, flags: str, tmp_path: Path) -> None:
    """The 1-D Conv-4 on series (`1 x 3` kernels padded `[0, 1]`, `1 x 2` pools): float32 values in,
    quantized by the first layer as numpy does; Q16 embeddings equal on 100 series of 3 x 128."""
    model = compressed_conv1d(spec, ways=0 if algorithm == "protonet" else 5)
    report = _build(model, tmp_path, algorithm, cflags=STRICT + flags, preprocessing=series_preprocessing())
    assert report["integer_body"]
    header = (tmp_path / "c" / "fewbit_model.h").read_text()
    assert "#define FEWBIT_INPUT_FLOAT 1" in header and "Series are float" in header
    stages = re.findall(r"^    \{(.*)\},$", (tmp_path / "c" / "fewbit_model.c").read_text(), re.M)
    assert len(stages) == 4 and all(row.split(", ")[7:9] == ["0", "1"] for row in stages)  # pad_h, pad_w
    if spec.startswith("prune:0.75"):
        assert any(row.split(", ")[-1] == "1" for row in stages)  # a stage runs from its schedule
    runtime = _numpy(tmp_path)
    support, labels, queries, truth = _series_task(5, 1, 20, seed=2)  # 5-way 1-shot, 100 queries
    np.testing.assert_array_equal(
        _embeddings(tmp_path, support, labels, queries), SupportStatistics(runtime, support).embed_fixed(queries)
    )
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    pred_np = rt.adapt(runtime, support, labels, norm_stats="support").predict(queries)
    assert len(pred_c) == 100 and (pred_c == pred_np).mean() >= 0.995
    if algorithm == "protonet":
        assert (pred_c == truth).mean() > 0.5  # and it classifies the waves: chance is 0.2


@needs_cc
@pytest.mark.parametrize("spec", ["cluster:16", None])
def test_conv1d_float_bodies_agree_with_numpy(spec: str | None, tmp_path: Path) -> None:
    report = _build(compressed_conv1d(spec, ways=0), tmp_path, "protonet", preprocessing=series_preprocessing())
    assert not report["integer_body"]
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _series_task(5, 1, 20, seed=3)
    emb_c = _embeddings(tmp_path, support, labels, queries, kind=float)
    emb_np = SupportStatistics(runtime, support).embed(queries)
    np.testing.assert_allclose(emb_c, emb_np, rtol=1e-4, atol=1e-4 * np.abs(emb_np).max())
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    pred_np = rt.adapt(runtime, support, labels, norm_stats="support").predict(queries)
    assert (pred_c == pred_np).mean() >= 0.995


def _uncalibrated(arch: str, spec: str, ways: int) -> torch.nn.Module:
    """A compressed model whose activation quantizers take each batch's range (as meta-training leaves it)."""
    from fewbit.compress import compress_
    from fewbit.models import conv4, mlp

    torch.manual_seed(0)
    model = conv4(ways=ways, width=16) if arch == "conv4" else mlp(ways=ways, in_features=784, hidden=(64, 32))
    return compress_(model, spec).eval()


@needs_cc
@pytest.mark.parametrize(("arch", "algorithm"), [("conv4", "protonet"), ("mlp", "maml"), ("conv4", "anil")])
def test_ranges_taken_from_the_support_set_match_numpy_bit_for_bit(arch: str, algorithm: str, tmp_path: Path) -> None:
    """Uncalibrated activation quantizers: layer by layer, each takes the support set's range."""
    report = _build(_uncalibrated(arch, "quant:w4a8", 5), tmp_path, algorithm)
    layers = rt.load(tmp_path / "m.fewbit").manifest["architecture"]["layers"]
    assert report["integer_body"] and all(q["dynamic"] for q in (layer.get("input_quant") for layer in layers) if q)
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _task(5, 2, 30, seed=8)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    emb_c = _embeddings(tmp_path, support, labels, queries)
    np.testing.assert_array_equal(emb_c, SupportStatistics(runtime, sx).embed_fixed(qx))
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    pred_np = rt.adapt(runtime, sx, labels, norm_stats="support").predict(qx)
    assert (pred_c == pred_np).mean() >= 0.995


@needs_cc
@pytest.mark.parametrize(
    ("spec", "algorithm", "adaptation"),
    [
        ("quant:w4", "protonet", None),  # float activations: a float32 body
        ("cluster:16", "maml", {"steps": 3, "lr": 0.05}),  # codebook weights, the head snapped to its codebook
        ("quant:w4:lsq", "maml", {"steps": 3, "lr": 0.05}),  # a learned grid: the head's fixed rule
        (None, "finetune", {"head_init": "prototypes", "steps": 5}),
    ],
)
def test_float_parts_agree_on_predictions(
    spec: str | None, algorithm: str, adaptation: dict | None, tmp_path: Path
) -> None:
    report = _build(compressed_mlp(spec, ways=5), tmp_path, algorithm, adaptation=adaptation)
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _task(5, 2, 60, seed=3)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    if not report["integer_body"]:
        emb_c = _embeddings(tmp_path, support, labels, queries, kind=float)
        emb_np = SupportStatistics(runtime, sx).embed(qx)
        np.testing.assert_allclose(emb_c, emb_np, rtol=1e-4, atol=1e-4 * np.abs(emb_np).max())
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    pred_np = rt.adapt(runtime, sx, labels, norm_stats="support").predict(qx)
    assert (pred_c == pred_np).mean() >= 0.995


@needs_cc
@pytest.mark.slow
def test_sanitizers_find_nothing_in_adaptation_and_classification(tmp_path: Path) -> None:
    flags = "-std=c99 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all"
    for name, model, algorithm in [
        ("protonet", compressed_conv4("prune:0.75,quant:w2a8", ways=0, width=8), "protonet"),
        ("head", compressed_conv4("quant:w4a8", ways=5, width=8), "maml"),
        ("float", compressed_mlp("prune:0.5,quant:w4", ways=5), "finetune"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        _build(model, folder, algorithm, cflags=flags)
        support, labels, queries, _ = _task(5, 2, 4, seed=4)
        assert len(_run(folder, support, labels, queries)) == 20
        assert len(_run(folder, support, labels, queries, "--embeddings")) == 20


ARM = shutil.which("arm-none-eabi-gcc")


@pytest.mark.skipif(ARM is None, reason="arm-none-eabi-gcc is not installed")
@pytest.mark.parametrize("spec", ["quant:w4a8", "prune:0.75,quant:w2a8"])
def test_cross_compiles_for_cortex_m4(spec: str, tmp_path: Path) -> None:
    export(compressed_conv4(spec, ways=0), tmp_path / "m.fewbit", algorithm="protonet")
    report = export_c(tmp_path / "m.fewbit", tmp_path / "c", compile_check=False)
    obj = tmp_path / "fewbit_model.o"
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffp-contract=off"]
    done = subprocess.run(
        [ARM, *STRICT.split(), *flags, "-c", "-o", str(obj), str(tmp_path / "c" / "fewbit_model.c")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in size.splitlines()[1].split()[:3])
    print(f"\n{spec}: arm-none-eabi-size text={text} data+bss={data + bss} arena={report['arena_bytes']}")
    assert report["weight_bytes"] < text < 1024 * 1024  # the const weights live in text (flash)
    assert data + bss < 1024  # no RAM besides the caller's arena
    assert elf_alloc_bytes(obj.read_bytes()) >= text


def test_report_contract_and_fit(tmp_path: Path) -> None:
    export(compressed_conv4("quant:w4a8", ways=0), tmp_path / "m.fewbit", algorithm="protonet")
    report = export_c(tmp_path / "m.fewbit", tmp_path / "c", compile_check=CC is not None)
    assert {"flash_bytes", "weight_bytes", "arena_bytes", "fits", "target"} <= set(report)
    assert report["weight_bytes"] <= 64 * 1024  # issue 14: Conv-4 w4a8 weights in 64 KB of flash
    assert report["arena_bytes"] <= 256 * 1024 and report["fits"]
    if CC is not None:
        assert report["flash_bytes"] > report["weight_bytes"]
    saved = json.loads((tmp_path / "c" / "fewbit_report.json").read_text())
    assert saved == {"producer": saved["producer"], **{k: v for k, v in report.items() if k != "out"}}
    header = (tmp_path / "c" / "fewbit_model.h").read_text()
    assert f"#define FEWBIT_ARENA_BYTES {report['arena_bytes']}u" in header
    assert "fewbit_adapt_head" in header and "#define FEWBIT_HEAD_FINETUNE 0" in header
    small = export_c(tmp_path / "m.fewbit", tmp_path / "c2", target=CTarget(ram_bytes=16 * 1024), compile_check=False)
    assert not small["fits"]
    source = (tmp_path / "c" / "fewbit_model.c").read_text()
    assert "malloc(" not in source and "<stdio.h>" not in source and "static const uint8_t fb_s1_codes" in source


def test_what_the_c_runtime_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    from fewbit.meta.base import MetaConfig

    body = MetaConfig(algorithm="maml", scope="bias_norm")
    export(compressed_mlp("quant:w4a8", ways=5), tmp_path / "b.fewbit", algorithm="maml", meta=body)
    with pytest.raises(ConfigError, match="head only"):
        export_c(tmp_path / "b.fewbit", tmp_path / "b", compile_check=False)
    export(compressed_conv4("quant:w8a8", ways=0), tmp_path / "w8.fewbit", algorithm="protonet")
    with pytest.raises(ConfigError, match="max_support"):
        export_c(tmp_path / "w8.fewbit", tmp_path / "w8", max_support=60000, compile_check=False)
    with pytest.raises(ConfigError, match="max_ways"):
        export_c(tmp_path / "w8.fewbit", tmp_path / "w8", max_ways=1, compile_check=False)


@needs_cc
def test_cosine_prototypes_match_numpy_and_centred_ones_are_refused(tmp_path: Path) -> None:
    """Meta-Baseline's rule (scale x cosine to the class means; the shipped models') runs in C;
    SimpleShot's centred, normalised embeddings are refused."""
    model = compressed_conv4("quant:w4a8", ways=0)
    report = _build(model, tmp_path, "metabaseline")
    assert report["integer_body"]
    runtime = _numpy(tmp_path)
    assert runtime.adaptation["metric"] == "cosine"
    support, labels, queries, _ = _task(5, 1, 40, seed=5)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    lines = [line.split() for line in _run(tmp_path, support, labels, queries, "--scores")]
    adapted = rt.adapt(runtime, sx, labels, norm_stats="support")
    scores_c = np.array([[float(v) for v in line[1:]] for line in lines])
    np.testing.assert_allclose(scores_c, adapted.logits(qx), rtol=1e-4, atol=1e-4)  # scale x cosine, not distances
    assert np.abs(scores_c).max() <= runtime.adaptation["scale"] * (1 + 1e-6)
    assert ([int(line[0]) for line in lines] == adapted.predict(qx)).mean() >= 0.995
    export(model, tmp_path / "s.fewbit", algorithm="simpleshot")
    with pytest.raises(ConfigError, match="centres or normalises"):
        export_c(tmp_path / "s.fewbit", tmp_path / "s", compile_check=False)


def test_pixels_round_trip_through_the_preprocessing() -> None:
    pre = {"mean": 0.5, "std": 0.25}
    pixels = np.random.default_rng(0).integers(0, 256, (3, 1, 5, 5)).astype(np.uint8)
    x = pixels_to_input(pixels, pre)
    np.testing.assert_array_equal(input_to_pixels(x, pre), pixels)
    with pytest.raises(ValueError, match="8-bit pixels"):
        input_to_pixels(x + np.float32(1e-3), pre)


@needs_cc
@pytest.mark.slow
def test_cli_c_export_matches_fewbit_adapt_from_the_command_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """`fewbit adapt --norm-stats support --raw-out` and the exported example print the same labels."""
    from PIL import Image

    from fewbit.cli import main

    export(compressed_conv4("quant:w4a8", ways=0, width=16), tmp_path / "m.fewbit", algorithm="protonet")
    assert main(["export", str(tmp_path / "m.fewbit"), "--format", "c", "--out", str(tmp_path / "c"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] and report["arena_bytes"] > 0
    support, labels, queries, truth = _task(3, 1, 5, seed=6)
    names = ["a", "b", "c"]
    for root, images, ys in ((tmp_path / "s", support, labels), (tmp_path / "q", queries, truth)):
        for i, (img, label) in enumerate(zip(images, ys)):
            (root / names[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0]).save(root / names[label] / f"{i:03d}.png")  # light ink on dark: kept
    argv = ["adapt", str(tmp_path / "m.fewbit"), "--support", str(tmp_path / "s"), "--query", str(tmp_path / "q")]
    assert main([*argv, "--norm-stats", "support", "--raw-out", str(tmp_path / "raw"), "--json"]) == 0
    adapted = json.loads(capsys.readouterr().out)
    assert adapted["norm_stats"] == "support"
    subprocess.run(["make", "-s", "-C", str(tmp_path / "c")], check=True, capture_output=True)
    done = subprocess.run(
        [str(tmp_path / "c" / "example"), str(tmp_path / "raw" / "support.bin"), str(tmp_path / "raw" / "query.bin")],
        capture_output=True,
        text=True,
        check=True,
    )
    classes = (tmp_path / "raw" / "classes.txt").read_text(encoding="utf-8").splitlines()  # label i: line i + 1
    assert classes == names
    assert [classes[int(v)] for v in done.stdout.split()] == [p["label"] for p in adapted["predictions"]]


@needs_cc
@pytest.mark.slow
def test_a_meta_trained_run_exports_to_c_and_matches_numpy(tmp_path: Path) -> None:
    """`fewbit train` leaves activation ranges uncalibrated: the C code takes them from the support set."""
    from fewbit.cli import main

    run = tmp_path / "run"
    argv = ["train", "--dataset", "glyphs", "--algorithm", "anil", "--backbone", "conv4", "--compress", "quant:w4a8"]
    argv += ["--ways", "5", "--shots", "1", "--queries", "2", "--meta-batch", "2", "--steps", "2", "--quiet"]
    assert main([*argv, "--out", str(run), "--device", "cpu"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "m.fewbit")]) == 0
    assert main(["export", str(run), "--format", "c", "--out", str(tmp_path / "c"), "--max-support", "25"]) == 0
    subprocess.run(["make", "-s", "-C", str(tmp_path / "c"), f"CFLAGS={STRICT}"], check=True, capture_output=True)
    runtime = _numpy(tmp_path)
    support, labels, queries, _ = _task(5, 1, 20, seed=9)
    sx = pixels_to_input(support, runtime.preprocessing)
    qx = pixels_to_input(queries, runtime.preprocessing)
    np.testing.assert_array_equal(
        _embeddings(tmp_path, support, labels, queries), SupportStatistics(runtime, sx).embed_fixed(qx)
    )
    pred_c = np.array([int(v) for v in _run(tmp_path, support, labels, queries)])
    assert (pred_c == rt.adapt(runtime, sx, labels, norm_stats="support").predict(qx)).mean() >= 0.995
