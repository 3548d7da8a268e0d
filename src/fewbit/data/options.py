"""Reading options that several kinds of data share, each a frozen dataclass validated on
construction: how classes are split (`SplitOptions`), how ink drawings are read (`InkOptions`:
glyphs, Omniglot) and how image files are read (`ImageOptions`: folder, csvsplit).

Every field carries its help (`fewbit.config.setting`), from which the command line derives
its flags. `for_preprocessing` gives the options that read new data the way a trained model's
preprocessing says, so a run or artifact is evaluated on another source as it was trained.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fewbit.config import brief, check, from_dict, setting, to_dict
from fewbit.runtime.preprocess import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, RESIZE_RULES


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitOptions:
    """A seeded class- (or group-) disjoint split of a source that has no split folders:
    `split_fractions` are the train and val shares, test takes the rest."""

    split_fractions: tuple[float, float] = setting(
        (0.6, 0.2), "shares of classes (groups) for train and val when the data has no split folders "
        "(default 0.6,0.2; test takes the rest)", metavar="TRAIN,VAL")
    split_seed: int = setting(0, "seed of that split (default 0)")

    @property
    def owner(self) -> str:
        return type(self).__name__

    def __post_init__(self) -> None:
        fr = self.split_fractions
        ok = (isinstance(fr, (tuple, list)) and len(fr) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in fr))
        check(ok and fr[0] > 0 and fr[1] > 0 and fr[0] + fr[1] < 1, self.owner, "split_fractions",
              f"must be [train, val] shares > 0 whose sum is < 1 (test takes the rest), got {brief(fr)}")
        object.__setattr__(self, "split_fractions", (float(fr[0]), float(fr[1])))
        seed = self.split_seed
        check(isinstance(seed, int) and not isinstance(seed, bool) and abs(seed) < 2**63, self.owner, "split_seed",
              f"must be an integer, got {brief(seed)}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with `version`."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a dict (unknown fields are a ConfigError naming them)."""
        return from_dict(cls, data)

    def for_preprocessing(self, preprocessing: Any) -> Any:
        """These options, changed to read new data the way `preprocessing` (a trained model's) says."""
        return self

    def input_shape_hint(self) -> tuple[int, ...] | None:
        """The input shape these options give, where it is known before the data is read (None)."""
        return None


def check_image_size(owner: str, size: Any) -> None:
    """ConfigError naming `owner.image_size` unless `size` is a whole number of pixels in range."""
    check(isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE,
          owner, "image_size",
          f"must be a whole number of pixels {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {brief(size)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InkOptions(SplitOptions):
    """Drawings read as ink (strokes 1 on 0, greyscale): Omniglot and the embedded glyphs."""

    image_size: int = setting(28, "resize images to N x N pixels (default 28)", metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_image_size(self.owner, self.image_size)

    def for_preprocessing(self, preprocessing: Any) -> InkOptions:
        return dataclasses.replace(self, image_size=int(preprocessing.image_size))

    def input_shape_hint(self) -> tuple[int, ...] | None:
        return (1, self.image_size, self.image_size)


# One --channels flag serves every kind that has channels (the first kind's help is the flag's).
CHANNELS_HELP = ("channels: images 1 (greyscale) or 3 (RGB), default detected (RGB when any image holds colour); "
                 "series the channel count, default detected (signals: 3)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageOptions(SplitOptions):
    """Image files read into `[channels, image_size, image_size]`: a user's folder, or csvsplit.

    `channels`: 1 or 3 to force greyscale or RGB, None to detect (RGB when any image holds colour).
    `invert`: invert the files (dark strokes on light paper). `normalize`: standardise each channel
    with the training split's mean and std. `resize`: crop (the shorter side to `image_size`, then
    the centre), stretch (both sides) or pad (the longer side, letterboxed: nothing cut off).
    """

    image_size: int = setting(28, "resize images to N x N pixels (default 28)", metavar="N")
    channels: int | None = setting(None, CHANNELS_HELP, metavar="C")
    invert: bool = setting(False, "invert images (dark strokes on light paper, like Omniglot's files)")
    normalize: bool = setting(True, "standardise each channel with the training split's statistics")
    resize: str = setting("crop", "crop: shorter side to the size, then the centre (default); stretch: both sides; "
                          "pad: the longer side, the rest filled with the border's colour (letterbox)",
                          choices=RESIZE_RULES)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_image_size(self.owner, self.image_size)
        check(self.channels in (None, 1, 3) and not isinstance(self.channels, bool), self.owner, "channels",
              f"must be 1 (greyscale), 3 (RGB) or null (detect), got {brief(self.channels)}")
        for name in ("invert", "normalize"):
            value = getattr(self, name)
            check(isinstance(value, bool), self.owner, name, f"must be true or false, got {brief(value)}")
        check(self.resize in RESIZE_RULES, self.owner, "resize",
              f"must be one of {', '.join(RESIZE_RULES)}, got {brief(self.resize)}")

    def for_preprocessing(self, preprocessing: Any) -> ImageOptions:
        invert = preprocessing.invert if isinstance(preprocessing.invert, bool) else self.invert
        return dataclasses.replace(self, image_size=int(preprocessing.image_size), channels=preprocessing.channels,
                                   invert=invert, resize=preprocessing.resize)

    def input_shape_hint(self) -> tuple[int, ...] | None:
        return (self.channels or 1, self.image_size, self.image_size)
