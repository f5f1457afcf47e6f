"""visiontales: turn a sequence of photos into a short story.

Frozen CLIP image features become a GPT-2 prefix (the VisionTales paper), trained on
VIST stories. Quickstart, offline::

    import visiontales as vt
    train = vt.sample_dataset("train")
    model = vt.StoryModel.tiny(vocab_from=train)
    history = vt.Trainer(model, train, config=vt.TrainingConfig.tiny()).train()
    print(model.generate([list(train[0]["image_paths"])])[0])

The package is layered by the data flow, each layer importing only from those below it:
``data`` < ``model`` < ``evaluation`` < ``training`` < ``recipes`` < ``app`` (kept by the
import-linter contract in setup.cfg). The top level holds the core: loading, the model and
training. ``evaluate`` and ``load_stories`` resolve on first use, so ``import visiontales``
loads neither the evaluation layer nor the stories reader.
"""
import importlib
from importlib.metadata import PackageNotFoundError, version

from visiontales.data.dataset import StoryDataset
from visiontales.data.sample import sample_dataset
from visiontales.data.vist import load_vist
from visiontales.model.backbones import WeightsUnavailableError
from visiontales.model.story_model import StoryModel, StoryModelConfig
from visiontales.training.callbacks import TrainerCallback
from visiontales.training.checkpoint import TrainState
from visiontales.training.config import TrainingConfig
from visiontales.training.trainer import Trainer

try:
    __version__ = version("visiontales")   # the one place the version lives is setup.cfg
except PackageNotFoundError:               # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "StoryDataset", "load_vist", "load_stories", "sample_dataset",
    "StoryModel", "StoryModelConfig", "WeightsUnavailableError",
    "Trainer", "TrainingConfig", "TrainState", "TrainerCallback",
    "evaluate",
    "__version__",
]

# top-level names whose modules load on first use: name -> module
_LAZY = {"evaluate": "visiontales.evaluation.metrics", "load_stories": "visiontales.data.stories"}


def __getattr__(name: str):
    """``vt.evaluate`` and ``vt.load_stories``, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
