"""Your own images, end to end: a folder of class folders -> meta-train a 4-bit model -> evaluate ->
export -> adapt to new classes with the numpy runtime (no PyTorch), as `fewbit adapt` does.

The script writes a folder of generated colour images first (classes differ by colour and texture);
point `DATA` at your own folder (one sub-folder per class, any image format and size) to use yours.

    python examples/own_images.py [--steps 300] [--out own-images]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fewbit.data import ImageOptions, load_source
from fewbit.data.synthetic import write_image_folder
from fewbit.deploy import export
from fewbit.evaluation import evaluate
from fewbit.train import TrainConfig, meta_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="own-images")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    # 1. Data: <class>/<image> folders. Splits are class-disjoint (60/20/20, seeded) unless the folder
    #    has train/, val/ and test/ sub-folders; colour is detected; images are resized to 32x32.
    data = write_image_folder(out / "photos", classes=40, images_per_class=10, size=48, formats=("png", "jpg"))
    spec = f"folder:{data}"
    source = load_source(spec, options=ImageOptions(image_size=32))
    print({k: v for k, v in source.info().items() if k in ("classes", "images", "channels", "splits")})

    # 2. Train Conv-4 with 4-bit weights and 8-bit activations inside the loop, as a classifier over all
    #    training classes (SimpleShot: new classes by the nearest support class mean; the README's recipe).
    config = TrainConfig.from_dict({"dataset": spec, "image_size": 32, "algorithm": "simpleshot", "ways": 5,
                                    "shots": 1, "queries": 5, "steps": args.steps,
                                    "val_every": 100, "augment": "auto", "compress": "quant:w4a8"})
    run = meta_train(config, out / "run")

    # 3. Accuracy on 300 seeded tasks from classes never seen in training.
    result = evaluate(run.predictor(), source.split("test"), ways=5, shots=1, queries=5, tasks=300)
    print(result)

    # 4. A compact artifact: packed 4-bit weights plus the preprocessing (size, channels, mean/std).
    info = export(run.model, out / "model.fewbit", algorithm="simpleshot",
                  preprocessing=run.preprocessing.to_dict())
    print(f"artifact: {info['bytes']:,} bytes ({info['ratio']:.1f}x smaller than float32)")

    # 5. On the device: adapt to a support folder and classify a query folder, numpy only.
    import fewbit.runtime as rt
    from fewbit.runtime.images import load_image_folder

    test_classes = list(source.split("test").classes[:5])
    for part, pick in (("support", slice(0, 1)), ("query", slice(1, 6))):
        for c in test_classes:
            (out / part / c).mkdir(parents=True)
            for f in sorted((data / c).iterdir())[pick]:
                shutil.copy(f, out / part / c / f.name)
    model = rt.load(out / "model.fewbit")
    support = load_image_folder(out / "support", model.prep)
    query = load_image_folder(out / "query", model.prep)
    predicted = rt.adapt(model, support.x, support.labels).predict(query.x)
    print(f"numpy runtime: {100 * (predicted == query.labels).mean():.0f}% of {len(query.labels)} queries right")
    print(f"the same from the command line: fewbit adapt {out / 'model.fewbit'} --support {out / 'support'} "
          f"--query {out / 'query'}")


if __name__ == "__main__":
    main()
