"""Your own signals, end to end: a folder of recordings -> a 4-bit 1-D Conv-4 meta-trained on fewbit's
generated signals -> evaluated on your classes, which it never saw -> exported -> adapted to new
gestures from one recording each with the numpy runtime (no PyTorch), as `fewbit adapt` does.

The script writes a folder of generated 3-axis motion recordings first (one .csv or .npy file per
recording, classes are gestures); point `DATA` at your own folder (one sub-folder per class, files
with rows = time steps and columns = channels) to use yours.

    python examples/own_signals.py [--steps 600] [--out own-signals]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import fewbit.runtime as rt
from fewbit.data import load_source
from fewbit.data.synthetic import write_series_folder
from fewbit.deploy import export
from fewbit.evaluation import evaluate
from fewbit.runtime.images import list_image_folder
from fewbit.runtime.series import SERIES_FILE_SUFFIXES, read_series_file
from fewbit.train import load_config, meta_train
from fewbit.train.run import eval_dataset

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "signals.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="own-signals")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    # 1. Data: <class>/<recording> files of any length; every series is resampled to 128 steps and
    #    z-normalised per channel (the preprocessing travels in the artifact).
    data = write_series_folder(out / "gestures", classes=20, per_class=10, channels=3)
    spec = f"series:{data}"
    print({k: v for k, v in load_source(spec).info().items() if k in ("classes", "series", "channels",
                                                                      "length_min", "length_max")})

    # 2. Pre-train on fewbit's generated signals (3 channels, like the recordings): 4-bit weights and
    #    8-bit activations in the loop; the recordings' gestures are never seen in training.
    config = load_config(RECIPE, channels=3, steps=args.steps, checkpoint_every=args.steps)
    run = meta_train(config, out / "run")
    run.test_time(algorithm="metabaseline")  # cosine to the class means: what the artifact ships

    # 3. Accuracy on 300 seeded 5-way 1-shot tasks of your gestures, prepared as the model prepares series.
    gestures = eval_dataset(spec, "all", None, run.preprocessing)
    print(evaluate(run.predictor(), gestures, ways=5, shots=1, queries=5, tasks=300))

    # 4. A compact artifact: packed 4-bit weights plus the series preprocessing (length, norm).
    info = export(run.model, out / "model.fewbit", algorithm=run.algorithm, extras=run.extras,
                  preprocessing=run.preprocessing.to_dict())
    print(f"artifact: {info['bytes']:,} bytes ({info['ratio']:.1f}x smaller than float32)")

    # 5. On the device: one recording per new gesture, then classify the others, numpy only.
    classes = sorted(p.name for p in data.iterdir())[:5]
    for part, pick in (("support", slice(0, 1)), ("query", slice(1, 6))):
        for c in classes:
            (out / part / c).mkdir(parents=True)
            for f in sorted((data / c).iterdir())[pick]:
                shutil.copy(f, out / part / c / f.name)
    model = rt.load(out / "model.fewbit")
    support = list_image_folder(out / "support", suffixes=SERIES_FILE_SUFFIXES)
    query = list_image_folder(out / "query", suffixes=SERIES_FILE_SUFFIXES)
    sx = model.prep.prepare([read_series_file(f) for f in support.files])  # [5, 3, 1, 128]
    qx = model.prep.prepare([read_series_file(f) for f in query.files])
    predicted = rt.adapt(model, sx, support.labels).predict(qx)
    print(f"numpy runtime: {100 * (predicted == query.labels).mean():.0f}% of {len(query.labels)} recordings right")
    print(f"the same from the command line: fewbit adapt {out / 'model.fewbit'} --support {out / 'support'} "
          f"--query {out / 'query'}")


if __name__ == "__main__":
    main()
