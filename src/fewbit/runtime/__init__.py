"""fewbit's runtime: run and adapt a `.fewbit` artifact with numpy alone (no torch).

    model = fewbit.runtime.load("model.fewbit")
    task = fewbit.runtime.adapt(model, support_x, support_y)   # ProtoNet or a few SGD steps
    labels = task.predict(query_x)

Inputs are float32 `[N, C, H, W]`, preprocessed as the artifact says
(`fewbit.runtime.images.load_image_folder` does it for folders of PNG/JPEG files).
"""

from __future__ import annotations

from fewbit.runtime import series  # noqa: F401  (registers the series preprocessing)
from fewbit.runtime.adapt import AdaptedTask, ViewedTask, adapt, class_means
from fewbit.runtime.model import RuntimeModel, load
from fewbit.runtime.views import VIEWS

__all__ = ["VIEWS", "AdaptedTask", "RuntimeModel", "ViewedTask", "adapt", "class_means", "load"]
