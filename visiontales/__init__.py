"""visiontales: turn a sequence of photos into a short story.

Frozen CLIP image features become a GPT-2 prefix (the VisionTales paper), trained on
VIST stories. Quickstart, offline::

    import visiontales as vt
    train = vt.sample_dataset("train")
    model = vt.StoryModel.tiny(vocab_from=train)
    history = vt.Trainer(model, train, config=vt.TrainingConfig.tiny()).train()
    print(model.generate([list(train[0]["image_paths"])])[0])

The top level holds the core only: data, model, training (with its callbacks and the
state a checkpoint saves) and :func:`evaluate` (the function; the module is
:mod:`visiontales.metrics`). The instruction tasks and the RL step live in :mod:`visiontales.instructions` and :mod:`visiontales.rl`. Their old top-level
names (``vt.SelfCritical``, ``vt.build_instruction_dataset``, ...) still resolve, with a
``FutureWarning`` that names the new import, and will be removed in a later release.
"""
import importlib
import warnings

from .callbacks import TrainerCallback
from .checkpoint import TrainState
from .data import StoryDataset, load_vist, sample_dataset
from .loading import WeightsUnavailableError
from .metrics import evaluate
from .model import StoryModel, StoryModelConfig
from .stories import load_stories
from .train import Trainer, TrainingConfig

__version__ = "0.1.0"

__all__ = [
    "StoryDataset", "load_vist", "load_stories", "sample_dataset",
    "StoryModel", "StoryModelConfig", "WeightsUnavailableError",
    "Trainer", "TrainingConfig", "TrainState", "TrainerCallback",
    "evaluate",
    "__version__",
]

# names that left the top level -> the module they live in now
_MOVED = {
    **dict.fromkeys(("INSTRUCTIONS", "TASKS", "InstructionDataset", "build_instruction_dataset",
                     "instruction_prompt"), "instructions"),
    **dict.fromkeys(("SelfCritical", "CiderReward", "GroundingReward", "JudgeReward",
                     "WeightedReward"), "rl"),
}


def __getattr__(name: str):
    """Resolve a name that moved off the top level, with a warning that says where to."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"visiontales.{name} moved: use `from visiontales.{module} import {name}`",
                  FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(f".{module}", __name__), name)
