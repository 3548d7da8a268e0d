"""Meta-training: the outer loop, the run directory, checkpoints, resume, and distributed training.

Entry points: `TrainConfig`, `load_config`, `meta_train`, `resume_training`, `load_run`, `Run`.
"""

from fewbit.train.config import TrainConfig, load_config
from fewbit.train.loop import meta_train, resume_training
from fewbit.train.run import Run, load_run

__all__ = ["Run", "TrainConfig", "load_config", "load_run", "meta_train", "resume_training"]
