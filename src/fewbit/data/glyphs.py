"""The "glyphs" dataset: Omniglot-like few-shot images drawn, with no download, from the fonts matplotlib ships.

A class is one Unicode character that at least `MIN_FONTS` of matplotlib's font files draw (DejaVu,
STIX, Computer Modern); its alphabet is its Unicode block (a few small blocks are merged). Each
"drawing" is the character in one of those fonts, centred and scaled into the frame by its ink
bounding box, then bent by a random affine map, a smooth elastic field and a stroke-width change.
Characters a reader could not tell apart once so normalised (accented and compatibility variants,
look-alikes such as Latin A / Greek Alpha / Cyrillic A, blank glyphs) are left out.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont

from fewbit.data.cache import cached_arrays
from fewbit.data.dataset import ImageDataset
from fewbit.data.options import InkOptions
from fewbit.data.registry import register_source
from fewbit.data.sources import ImageSource, ink_preprocessing
from fewbit.data.splits import split_by_alphabet
from fewbit.errors import DataError

NAME = "glyphs"
VERSION = "glyphs-1"  # bump when the class selection or the drawing recipe changes: it keys the cache
MIN_FONTS = 6  # a character must be drawn by this many font files to become a class
MIN_ALPHABET_CLASSES = 10  # smaller alphabets are left out, so 5-way tasks within one alphabet work
CANONICAL_SIZE = 28  # look-alikes are found by comparing renderings at this size
DUPLICATE_DISTANCE = 0.15  # distance (`image_distances`) under which two classes are one in the same font
DUPLICATE_DISTANCE_ANY = 0.04  # ... or in any pairing of their two reference fonts
SUPERSAMPLE = 2  # drawings are sampled at this multiple of the image size, then box-averaged down

# The font files drawn from, in the order fonts are listed in a class.
FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "STIXNonUni.ttf",
    "STIXNonUniBol.ttf",
    "STIXNonUniIta.ttf",
    "STIXNonUniBolIta.ttf",
    "STIXSizOneSymReg.ttf",
    "STIXSizOneSymBol.ttf",
    "STIXSizTwoSymReg.ttf",
    "STIXSizTwoSymBol.ttf",
    "STIXSizThreeSymReg.ttf",
    "STIXSizThreeSymBol.ttf",
    "STIXSizFourSymReg.ttf",
    "STIXSizFourSymBol.ttf",
    "STIXSizFiveSymReg.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
    "cmsy10.ttf",
    "cmex10.ttf",
)
# Look-alikes are compared in the first two of these (upright, regular weight) a class has, else its first font.
REFERENCE_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneral.ttf",
    "DejaVuSansMono.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmmi10.ttf",
    "cmsy10.ttf",
)

# Unicode blocks (first, last code point) -> alphabet; small neighbouring blocks share an alphabet.
_BLOCKS: tuple[tuple[int, int, str], ...] = (
    (0x0000, 0x007F, "Basic Latin"),
    (0x0080, 0x00FF, "Latin-1 Supplement"),
    (0x0100, 0x017F, "Latin Extended"),  # Latin Extended-A
    (0x0180, 0x024F, "Latin Extended-B"),
    (0x0250, 0x02AF, "IPA Extensions"),
    (0x02B0, 0x02FF, "Spacing Modifier Letters"),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x04FF, "Cyrillic"),
    (0x0500, 0x052F, "Cyrillic Supplement"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x10A0, 0x10CF, "Georgian Asomtavruli"),
    (0x10D0, 0x10FF, "Georgian Mkhedruli"),
    (0x1D00, 0x1DBF, "Phonetic Extensions"),  # with Phonetic Extensions Supplement
    (0x1E00, 0x1EFF, "Latin Extended"),  # Latin Extended Additional
    (0x2000, 0x206F, "Punctuation"),  # General Punctuation
    (0x20A0, 0x20CF, "Currency Symbols"),
    (0x2100, 0x214F, "Letterlike Symbols"),
    (0x2150, 0x218F, "Number Forms"),
    (0x2190, 0x21FF, "Arrows"),
    (0x2200, 0x22FF, "Mathematical Operators"),
    (0x2300, 0x23FF, "Miscellaneous Technical"),
    (0x2400, 0x243F, "Control Pictures"),
    (0x2460, 0x24FF, "Enclosed Alphanumerics"),
    (0x2500, 0x257F, "Box Drawing"),
    (0x2580, 0x259F, "Block Elements"),
    (0x25A0, 0x25FF, "Geometric Shapes"),
    (0x2600, 0x26FF, "Miscellaneous Symbols"),
    (0x2700, 0x27BF, "Dingbats"),
    (0x27C0, 0x27EF, "Supplemental Mathematical"),  # Miscellaneous Mathematical Symbols-A
    (0x27F0, 0x27FF, "Arrows"),  # Supplemental Arrows-A
    (0x2800, 0x28FF, "Braille Patterns"),
    (0x2900, 0x297F, "Arrows"),  # Supplemental Arrows-B
    (0x2980, 0x29FF, "Supplemental Mathematical"),  # Miscellaneous Mathematical Symbols-B
    (0x2A00, 0x2AFF, "Supplemental Mathematical"),  # Supplemental Mathematical Operators
    (0x2B00, 0x2BFF, "Miscellaneous Symbols and Arrows"),
    (0x2C60, 0x2C7F, "Latin Extended"),  # Latin Extended-C
    (0x2D00, 0x2D2F, "Georgian Nuskhuri"),
    (0x2E00, 0x2E7F, "Punctuation"),  # Supplemental Punctuation
    (0xA640, 0xA69F, "Cyrillic Supplement"),  # Cyrillic Extended-B
    (0xA700, 0xA71F, "Spacing Modifier Letters"),  # Modifier Tone Letters
    (0xA720, 0xA7FF, "Latin Extended"),  # Latin Extended-D
)
_BLOCK_STARTS = [b[0] for b in _BLOCKS]


@dataclasses.dataclass(frozen=True)
class GlyphClass:
    """One class: a character, its alphabet, and the font files (of `FONT_FILES`) that draw it."""

    codepoint: int
    alphabet: str
    fonts: tuple[str, ...]

    @property
    def name(self) -> str:
        """The class name, e.g. `Greek/U+03B1`."""
        return f"{self.alphabet}/U+{self.codepoint:04X}"


@functools.lru_cache(maxsize=1)
def font_dir() -> Path:
    """The folder of TrueType fonts that matplotlib ships."""
    import matplotlib  # deferred: heavy, and only the font files are wanted (registering glyphs must be cheap)

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def alphabet_of(codepoint: int) -> str | None:
    """The alphabet (Unicode block, small blocks merged) of `codepoint`, or None outside the known blocks."""
    i = bisect.bisect_right(_BLOCK_STARTS, codepoint) - 1
    if i >= 0 and codepoint <= _BLOCKS[i][1]:
        return _BLOCKS[i][2]
    return None


@functools.lru_cache(maxsize=1)
def _coverage() -> dict[int, dict[str, int]]:
    """`{character: {font file: code point to render it with}}` over the fonts present."""
    from fontTools import agl
    from fontTools.ttLib import TTFont

    folder = font_dir()
    present = [f for f in FONT_FILES if (folder / f).is_file()]
    if len(present) < MIN_FONTS:
        raise DataError(f"{NAME}: found {len(present)} of matplotlib's fonts in {folder}; reinstall matplotlib")
    coverage: dict[int, dict[str, int]] = {}
    for file in present:
        cmap = TTFont(folder / file, lazy=True).getBestCmap() or {}
        tex_encoded = file.startswith("cm")  # Computer Modern maps TeX slots; its glyph names say the character
        for code in sorted(cmap):
            char = agl.toUnicode(cmap[code]) if tex_encoded else chr(code)
            if len(char) == 1:
                coverage.setdefault(ord(char), {}).setdefault(file, code)
    return coverage


def _is_candidate(codepoint: int) -> bool:
    """A visible character that is not a variant (accented, compatibility form) of another one."""
    char = chr(codepoint)
    if unicodedata.category(char)[0] in "MZC":  # marks, separators, controls, private use
        return False
    return unicodedata.normalize("NFKD", char) == char and alphabet_of(codepoint) is not None


PROBE_SIZE = 64  # font size at which a glyph's extent is measured


@functools.lru_cache(maxsize=512)
def _font(file: str, size: int) -> ImageFont.FreeTypeFont:
    """A font object, kept for reuse (sizes are quantised, see `_render`)."""
    return ImageFont.truetype(str(font_dir() / file), size, layout_engine=ImageFont.Layout.BASIC)


def _extent(file: str, code: int) -> int:
    """The longest side of character `code`'s box in `file` at `PROBE_SIZE`, in pixels (0 when blank)."""
    left, top, right, bottom = _font(file, PROBE_SIZE).getbbox(chr(code))
    if bottom <= top or right <= left:  # a blank glyph's box is its advance, zero high
        return 0
    return max(right - left, bottom - top)


def _is_blank(file: str, code: int) -> bool:
    """Blank or nearly so: a box under 4% of the em (a dot is about 15%)."""
    return _extent(file, code) < 0.04 * PROBE_SIZE


def _render(file: str, code: int, target: int) -> np.ndarray:
    """Character `code` of `file` as float32 ink in [0, 1], cropped to its ink, longest side about `target`.

    Font sizes go in steps of 2^(1/8) so that few font objects are made; the side is target to 9% more.
    """
    extent = max(_extent(file, code), 1)
    steps = np.ceil(8 * np.log2(max(PROBE_SIZE * target / extent, 4.0)))
    size = int(min(round(2 ** (steps / 8)), 40 * target))
    char = chr(code)
    font = _font(file, size)
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("L", (max(right - left, 1) + 2, max(bottom - top, 1) + 2))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), char, font=font, fill=255)
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.1)
    if rows.size == 0:
        return ink  # not reached for glyphs that pass `_is_blank`; an empty drawing is still valid
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _class_of(codepoint: int) -> GlyphClass | None:
    """The class of `codepoint` with the fonts that draw it visibly, or None if fewer than `MIN_FONTS` do."""
    codes = _coverage().get(codepoint, {})
    alphabet = alphabet_of(codepoint)
    fonts = tuple(f for f in FONT_FILES if f in codes and not _is_blank(f, codes[f]))
    if alphabet is None or len(fonts) < MIN_FONTS:
        return None
    return GlyphClass(codepoint, alphabet, fonts)


def _reference_fonts(glyph: GlyphClass) -> tuple[str, str]:
    """The two fonts (the same one twice if need be) a class is compared in when finding look-alikes."""
    found = [f for f in REFERENCE_FONTS if f in glyph.fonts] or list(glyph.fonts)
    return found[0], found[min(1, len(found) - 1)]


# --- drawing -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Distortion:
    """Per-drawing parameters, each `[n]` (elastic: `[n, 2, 4, 4]` in units of the frame)."""

    fill: np.ndarray  # longest ink side as a fraction of the frame
    stretch: np.ndarray  # log aspect change
    rotation: np.ndarray  # radians
    shear: np.ndarray
    shift: np.ndarray  # [n, 2] fraction of the frame (x, y)
    elastic: np.ndarray  # [n, 2, 4, 4] coarse displacement grid, fraction of the frame
    stroke: np.ndarray  # int: -1 thinner, 0 as drawn, 1 or 2 bolder (pixels at supersampled size)


def _identity(n: int) -> _Distortion:
    """No distortion: the glyph centred, its longest side 85% of the frame."""
    zeros = np.zeros(n)
    return _Distortion(
        np.full(n, 0.85), zeros, zeros, zeros, np.zeros((n, 2)), np.zeros((n, 2, 4, 4)), np.zeros(n, dtype=np.int64)
    )


def _random_distortion(rng: np.random.Generator, n: int) -> _Distortion:
    """`n` random distortions: about +-11 degrees, +-12% size and aspect, shear, shift, a gentle bend."""
    return _Distortion(
        fill=0.78 * np.exp(rng.uniform(-0.12, 0.12, n)),
        stretch=rng.uniform(-0.12, 0.12, n),
        rotation=rng.uniform(-0.2, 0.2, n),
        shear=rng.uniform(-0.25, 0.25, n),
        shift=rng.uniform(-0.05, 0.05, (n, 2)),
        elastic=rng.normal(0.0, 0.025, (n, 2, 4, 4)),
        stroke=rng.choice(np.array([-1, 0, 1, 2]), size=n, p=[0.2, 0.35, 0.3, 0.15]),
    )


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """`[n_out, n_in]` linear interpolation weights from a coarse grid spanning the frame."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    frac = pos - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] = 1 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def _max3(x: np.ndarray) -> np.ndarray:
    """3x3 grey dilation of `[n, H, W]`."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    rows = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return np.maximum(np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def _min3(x: np.ndarray) -> np.ndarray:
    """3x3 grey erosion of `[n, H, W]`."""
    return 1.0 - _max3(1.0 - x)


def _draw(glyphs: Sequence[np.ndarray], picks: np.ndarray, d: _Distortion, size: int) -> np.ndarray:
    """Drawing i of `glyphs[picks[i]]` under distortion i, as uint8 `[n, size, size]`."""
    n = len(picks)
    big = size * SUPERSAMPLE
    all_heights = np.array([g.shape[0] for g in glyphs])
    all_widths = np.array([g.shape[1] for g in glyphs])
    heights, widths = all_heights[picks].astype(np.float64), all_widths[picks].astype(np.float64)
    # One zero-bordered stack, so samples falling off a glyph read 0.
    stack = np.zeros((len(glyphs), all_heights.max() + 2, all_widths.max() + 2), dtype=np.float32)
    for i, g in enumerate(glyphs):
        stack[i, 1 : g.shape[0] + 1, 1 : g.shape[1] + 1] = g

    # Output pixel centres, displaced by the elastic field: [n, big, big] each.
    centres = np.arange(big, dtype=np.float32) + 0.5
    up = _upsample_matrix(big, 4)
    field = ((up @ d.elastic @ up.T) * big).astype(np.float32)  # [n, 2, big, big]
    x = centres[None, None, :] + field[:, 0] - (big / 2 + d.shift[:, 0, None, None] * big).astype(np.float32)
    y = centres[None, :, None] + field[:, 1] - (big / 2 + d.shift[:, 1, None, None] * big).astype(np.float32)

    # Forward map A = rotation @ shear @ scale; sample the glyph at A^-1 (output - centre).
    scale = d.fill * big / np.maximum(heights, widths)
    sx, sy = scale * np.exp(d.stretch), scale * np.exp(-d.stretch)
    cos, sin = np.cos(d.rotation), np.sin(d.rotation)
    a00, a01 = cos * sx, (cos * d.shear - sin) * sy
    a10, a11 = sin * sx, (sin * d.shear + cos) * sy
    det = a00 * a11 - a01 * a10
    inverse = [(v[:, None, None]).astype(np.float32) for v in (a11 / det, -a01 / det, -a10 / det, a00 / det)]
    offset_x = (widths[:, None, None] / 2 + 0.5).astype(np.float32)  # +1 border, -0.5 to pixel index
    offset_y = (heights[:, None, None] / 2 + 0.5).astype(np.float32)
    src_x = inverse[0] * x + inverse[1] * y + offset_x
    src_y = inverse[2] * x + inverse[3] * y + offset_y

    _, rows, cols = stack.shape
    x0 = np.clip(np.floor(src_x), 0, cols - 2)
    y0 = np.clip(np.floor(src_y), 0, rows - 2)
    fx = np.clip(src_x - x0, 0.0, 1.0)
    fy = np.clip(src_y - y0, 0.0, 1.0)
    flat = stack.reshape(-1)
    at = (picks[:, None, None] * (rows * cols) + y0.astype(np.int64) * cols + x0.astype(np.int64)).reshape(-1)
    top = flat[at].reshape(fx.shape) * (1 - fx) + flat[at + 1].reshape(fx.shape) * fx
    bottom = flat[at + cols].reshape(fx.shape) * (1 - fx) + flat[at + cols + 1].reshape(fx.shape) * fx
    img = top * (1 - fy) + bottom * fy  # [n, big, big]

    thinner = np.nonzero(d.stroke == -1)[0]
    if thinner.size:
        thin = _min3(img[thinner])
        keep = thin.sum(axis=(1, 2)) > 0.5 * img[thinner].sum(axis=(1, 2))  # never erase hairlines
        img[thinner[keep]] = thin[keep]
    bolder = np.nonzero(d.stroke > 0)[0]
    if bolder.size:
        bold = _max3(img[bolder])
        twice = d.stroke[bolder] == 2
        bold[twice] = _max3(bold[twice])
        img[bolder] = bold

    small = img.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))
    # A hairline averaged down is grey; lift each drawing's strongest ink to full strength (at most 4x).
    small *= np.clip(1.0 / np.maximum(small.max(axis=(1, 2), keepdims=True), 1e-6), 1.0, 4.0)
    return np.round(np.clip(small, 0.0, 1.0) * 255.0).astype(np.uint8)


def _render_target(image_size: int) -> int:
    """Source pixels on a glyph's longest side: about one per supersampled output pixel."""
    return SUPERSAMPLE * image_size


def canonical_images(classes: Sequence[GlyphClass], reference: int = 0) -> np.ndarray:
    """Each class undistorted in its first (`reference=0`) or second reference font, uint8 `[n, 28, 28]`.

    Look-alike classes are found by comparing these (see `glyph_classes`).
    """
    out = np.zeros((len(classes), CANONICAL_SIZE, CANONICAL_SIZE), dtype=np.uint8)
    for i, glyph in enumerate(classes):
        file = _reference_fonts(glyph)[reference]
        ink = _render(file, _coverage()[glyph.codepoint][file], _render_target(CANONICAL_SIZE))
        out[i] = _draw([ink], np.zeros(1, dtype=np.int64), _identity(1), CANONICAL_SIZE)[0]
    return out


def image_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`|x-y|^2 / mean(|x|^2, |y|^2)` for every x of `a` `[n, H, W]` and y of `b` `[m, H, W]`: `[n, m]` in [0, 2]."""
    fa = a.reshape(len(a), -1).astype(np.float32) / 255.0
    fb = b.reshape(len(b), -1).astype(np.float32) / 255.0
    na, nb = (fa * fa).sum(axis=1)[:, None], (fb * fb).sum(axis=1)[None, :]
    return (na + nb - 2 * (fa @ fb.T)) / np.maximum(0.5 * (na + nb), 1e-9)


@functools.lru_cache(maxsize=1)
def glyph_classes() -> tuple[GlyphClass, ...]:
    """The dataset's classes in code point order (deterministic for a matplotlib install; a few seconds)."""
    drawable = [c for cp in sorted(_coverage()) if _is_candidate(cp) and (c := _class_of(cp))]
    # Two classes are one when their first reference renderings (same font) are within
    # DUPLICATE_DISTANCE, or any pairing of their two reference fonts is within DUPLICATE_DISTANCE_ANY
    # (a square full stop in Sans is a round black circle in Serif). The lowest code point stays.
    first, second = canonical_images(drawable, 0), canonical_images(drawable, 1)
    first_font = np.array([_reference_fonts(g)[0] for g in drawable])
    same_font = first_font[:, None] == first_font[None, :]
    across = image_distances(first, second)
    nearest = np.minimum(np.minimum(image_distances(second, second), across), across.T)
    first_distance = image_distances(first, first)
    close = (same_font & (first_distance < DUPLICATE_DISTANCE)) | (
        np.minimum(nearest, first_distance) < DUPLICATE_DISTANCE_ANY
    )
    kept = np.zeros(len(drawable), dtype=bool)
    for i in range(len(drawable)):
        kept[i] = not close[i, kept].any()
    distinct = [g for g, k in zip(drawable, kept) if k]
    sizes: dict[str, int] = {}
    for g in distinct:
        sizes[g.alphabet] = sizes.get(g.alphabet, 0) + 1
    return tuple(g for g in distinct if sizes[g.alphabet] >= MIN_ALPHABET_CLASSES)


def draw_glyph_class(glyph: GlyphClass, *, image_size: int = 28, seed: int = 0, drawings: int = 20) -> np.ndarray:
    """`drawings` distorted drawings of one class, uint8 `[drawings, image_size, image_size]`, ink 255.

    Deterministic in (seed, code point): a class looks the same whatever other classes are built.
    """
    rng = np.random.default_rng([seed, glyph.codepoint])
    fonts = np.resize(rng.permutation(len(glyph.fonts)), drawings)  # every font before any repeats
    used = sorted(set(fonts.tolist()))
    codes = _coverage()[glyph.codepoint]
    target = _render_target(image_size)
    glyphs = [_render(glyph.fonts[f], codes[glyph.fonts[f]], target) for f in used]
    picks = rng.permutation(np.searchsorted(used, fonts))
    return _draw(glyphs, picks, _random_distortion(rng, drawings), image_size)


def _check_args(image_size: int, seed: int, drawings: int) -> None:
    for field, value in (("image_size", image_size), ("seed", seed), ("drawings", drawings)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"{NAME}: {field} must be an integer, got {value!r}")
    if not 8 <= image_size <= 256:
        raise DataError(f"{NAME}: image_size must be in 8..256, got {image_size}")
    if seed < 0:
        raise DataError(f"{NAME}: seed must be >= 0, got {seed}")
    if drawings < 1:
        raise DataError(f"{NAME}: drawings must be >= 1, got {drawings}")


def build_glyph_arrays(
    codepoints: Sequence[int] | None = None, *, image_size: int = 28, seed: int = 0, drawings: int = 20
) -> dict[str, np.ndarray]:
    """The dataset's arrays: `images` `[n, S, S]` uint8, `labels` `[n]`, `classes` and `alphabets` `[C]` str.

    `codepoints=None` builds every class of `glyph_classes()`; a list builds just those characters
    (each must be drawn by `MIN_FONTS` fonts), which is quick and meant for tests and previews.
    """
    _check_args(image_size, seed, drawings)
    if codepoints is None:
        classes: Sequence[GlyphClass] = glyph_classes()
    else:
        classes = []
        for cp in codepoints:
            glyph = _class_of(cp)
            if glyph is None:
                raise DataError(f"{NAME}: U+{cp:04X} is not drawn by {MIN_FONTS} of matplotlib's fonts")
            classes.append(glyph)
    images = np.zeros((len(classes) * drawings, image_size, image_size), dtype=np.uint8)
    for i, glyph in enumerate(classes):
        images[i * drawings : (i + 1) * drawings] = draw_glyph_class(
            glyph, image_size=image_size, seed=seed, drawings=drawings
        )
    return {
        "images": images,
        "labels": np.repeat(np.arange(len(classes), dtype=np.int64), drawings),
        "classes": np.array([g.name for g in classes], dtype=str),
        "alphabets": np.array([g.alphabet for g in classes], dtype=str),
    }


def cache_key(*, image_size: int, seed: int, drawings: int) -> str:
    """The cache file stem for these arguments and the installed fonts' provenance."""
    import matplotlib  # deferred: heavy (see font_dir)

    parts = [VERSION, image_size, seed, drawings, matplotlib.__version__, PIL.__version__]
    return f"{NAME}-{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]}"


def load_glyphs(*, image_size: int = 28, seed: int = 0, drawings: int = 20, cache: bool = True) -> ImageDataset:
    """The glyphs dataset: `drawings` images per class, uint8 `[n, image_size, image_size]`, ink 255.

    Built from matplotlib's fonts on first use (well under a minute) and cached (`fewbit.data.cache`).
    """
    _check_args(image_size, seed, drawings)
    arrays = cached_arrays(
        cache_key(image_size=image_size, seed=seed, drawings=drawings),
        lambda: build_glyph_arrays(image_size=image_size, seed=seed, drawings=drawings),
        enabled=cache,
    )
    return ImageDataset(
        name=NAME,
        pixels=arrays["images"],
        labels=arrays["labels"].astype(np.int64),
        classes=tuple(str(c) for c in arrays["classes"]),
        class_alphabet=tuple(str(a) for a in arrays["alphabets"]),
    )


@register_source("glyphs", options=InkOptions, kind="images", path=False, backbone="conv4",
                 help="the embedded default: characters from matplotlib's fonts, 20 distorted drawings per class, "
                      "alphabet-disjoint splits")
def glyphs_source(arg: str, options: InkOptions, *, progress: bool = True) -> ImageSource:
    """`glyphs`: the embedded handwriting-like family."""
    ds = load_glyphs(image_size=options.image_size)
    splits = split_by_alphabet(ds, options.split_fractions, options.split_seed)
    return ImageSource("glyphs", splits, ink_preprocessing(options.image_size))
