"""Shared test helpers: fixture builders for Omniglot-layout data and an isolated fewbit cache."""

from __future__ import annotations

import io
import os
import random
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

# The real Omniglot zips live beside the repository (../shared/data/omniglot); tests that use them
# carry @pytest.mark.omniglot and take the `shared_omniglot` fixture, which skips when it is absent.
SHARED_OMNIGLOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "omniglot"
ALPHABET_NAMES = ("Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta", "Theta")


def character_strokes(rng: random.Random, size: int = 105) -> list[list[tuple[int, int]]]:
    """A character: 2-4 random strokes of three points each."""
    margin = max(2, size // 10)
    return [[(rng.randint(margin, size - margin), rng.randint(margin, size - margin)) for _ in range(3)]
            for _ in range(rng.randint(2, 4))]


def draw_character(rng: random.Random, size: int = 105,
                   strokes: list[list[tuple[int, int]]] | None = None) -> Image.Image:
    """A stroke drawing in the Omniglot convention (1-bit, black strokes on white): `strokes` drawn
    by a hand that wanders a few pixels, or a random character when none are given."""
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    wobble = max(1, size // 8)
    for stroke in strokes or character_strokes(rng, size):
        points = [(x + rng.randint(-wobble, wobble), y + rng.randint(-wobble, wobble)) for x, y in stroke]
        draw.line(points, fill=0, width=max(1, size // 30))
    return im.convert("1")


def png_bytes(im: Image.Image) -> bytes:
    """`im` encoded as PNG."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def omniglot_files(
    *,
    alphabets: int | Sequence[str] = 3,
    characters: int = 4,
    drawings: int = 20,
    seed: int = 0,
    size: int = 105,
) -> dict[str, bytes]:
    """`<Alphabet>/characterNN/<id>_<drawer>.png` -> PNG bytes, for an Omniglot-layout fixture."""
    names = ALPHABET_NAMES[:alphabets] if isinstance(alphabets, int) else tuple(alphabets)
    rng = random.Random(seed)
    files = {}
    char_id = 100
    for alphabet in names:
        for c in range(1, characters + 1):
            char_id += 1
            strokes = character_strokes(rng, size)  # every drawing of a character draws its strokes
            for d in range(1, drawings + 1):
                name = f"{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"
                files[name] = png_bytes(draw_character(rng, size, strokes))
    return files


def make_omniglot_folder(
    path: Path,
    *,
    root: str = "images_background_small1",
    alphabets: int | Sequence[str] = 3,
    characters: int = 4,
    drawings: int = 20,
    seed: int = 0,
) -> Path:
    """Write an Omniglot-layout folder `path/root/<Alphabet>/...`; returns `path/root`."""
    base = path / root if root else path
    files = omniglot_files(alphabets=alphabets, characters=characters, drawings=drawings, seed=seed)
    for name, data in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base


def make_omniglot_zip(
    path: Path,
    *,
    root: str = "images_background_small1",
    alphabets: int | Sequence[str] = 3,
    characters: int = 4,
    drawings: int = 20,
    seed: int = 0,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write an Omniglot-layout zip at `path` with members `root/<Alphabet>/...` (directory entries too)."""
    files = omniglot_files(alphabets=alphabets, characters=characters, drawings=drawings, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        prefix = f"{root}/" if root else ""
        character_dirs = {prefix + n.rsplit("/", 1)[0] for n in files}
        dirs = sorted(character_dirs | {d.rsplit("/", 1)[0] for d in character_dirs})
        if prefix:
            zf.writestr(prefix, b"")
        for d in dirs:
            zf.writestr(d + "/", b"")
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def zip_folder(folder: Path, zip_path: Path, *, arcroot: str = "") -> Path:
    """Zip every file under `folder` into `zip_path`, under `arcroot/` when given."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            zf.write(file, f"{arcroot}/{rel}" if arcroot else rel)
    return zip_path


def make_oneshot_runs(
    path: Path,
    *,
    runs: int = 2,
    ways: int = 20,
    noise: float = 0.0,
    wrong_answers: bool = False,
    seed: int = 0,
) -> Path:
    """Write official-layout one-shot runs `path/runNN/` whose queries are copies of support images.

    Query m copies the support image of a random class, with a fraction `noise` of its pixels
    flipped; with `wrong_answers` class_labels.txt names another class (every answer is wrong).
    Returns `path`.
    """
    rng = random.Random(seed)
    for r in range(1, runs + 1):
        run = f"run{r:02d}"
        (path / run / "training").mkdir(parents=True, exist_ok=True)
        (path / run / "test").mkdir(parents=True, exist_ok=True)
        supports = [draw_character(rng) for _ in range(ways)]
        for k, im in enumerate(supports, start=1):
            im.save(path / run / "training" / f"class{k:02d}.png")
        targets = list(range(ways))
        rng.shuffle(targets)
        lines = []
        for m, k in enumerate(targets, start=1):
            query = supports[k].copy()
            pixels = query.load()
            for _ in range(int(noise * query.width * query.height)):
                x, y = rng.randrange(query.width), rng.randrange(query.height)
                pixels[x, y] = 255 - pixels[x, y]
            query.save(path / run / "test" / f"item{m:02d}.png")
            listed = (k + 1) % ways if wrong_answers else k
            lines.append(f"{run}/test/item{m:02d}.png {run}/training/class{listed + 1:02d}.png")
        (path / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fewbit_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the fewbit cache at a fresh temporary folder, so no test touches the user's cache."""
    cache = tmp_path / "fewbit-cache"
    monkeypatch.setenv("FEWBIT_CACHE", str(cache))
    return cache


@pytest.fixture
def shared_omniglot() -> Path:
    """The folder of the real Omniglot zips; skips the test when it is absent."""
    if not (SHARED_OMNIGLOT / "images_background_small1.zip").is_file():
        pytest.skip(f"real Omniglot data not found at {SHARED_OMNIGLOT.resolve()}")
    return SHARED_OMNIGLOT


@pytest.fixture(name="make_omniglot_zip")
def _make_omniglot_zip_fixture() -> Callable[..., Path]:
    """`make_omniglot_zip` for tests that take it as a fixture rather than importing conftest."""
    return make_omniglot_zip


@pytest.fixture(name="make_omniglot_folder")
def _make_omniglot_folder_fixture() -> Callable[..., Path]:
    """`make_omniglot_folder` as a fixture."""
    return make_omniglot_folder


@pytest.fixture(name="make_oneshot_runs")
def _make_oneshot_runs_fixture() -> Callable[..., Path]:
    """`make_oneshot_runs` as a fixture."""
    return make_oneshot_runs


@pytest.fixture(name="zip_folder")
def _zip_folder_fixture() -> Callable[..., Path]:
    """`zip_folder` as a fixture."""
    return zip_folder


@pytest.fixture(autouse=True, scope="session")
def _isolated_session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test shares one fresh fewbit cache for the session, never the user's own."""
    cache = tmp_path_factory.mktemp("fewbit-session-cache")
    old = os.environ.get("FEWBIT_CACHE")
    os.environ["FEWBIT_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("FEWBIT_CACHE", None)
    else:
        os.environ["FEWBIT_CACHE"] = old
