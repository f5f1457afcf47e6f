"""The tiny offline recipe as one call: ``StoryModel.tiny`` trained with ``TrainingConfig.tiny()``.

The recipe's sizes and settings are data (``recipes/tiny/recipe.json`` and the open_clip
config beside it), which ``StoryModel.tiny`` and ``TrainingConfig.tiny`` read; this module
is the helper the demo, the demo page, the examples and the tests share.
"""
from __future__ import annotations

import os
import tempfile

from visiontales.data.sample import sample_dataset
from visiontales.model.story_model import StoryModel
from visiontales.training.config import TrainingConfig
from visiontales.training.trainer import Trainer


def train_tiny_model(prefix: str = "sequence", seed: int = 0, output_dir: str | os.PathLike | None = None,
                     train_dataset=None, eval_dataset=None, **overrides) -> StoryModel:
    """The offline sample model: ``StoryModel.tiny`` trained with ``TrainingConfig.tiny()``.

    The one recipe behind the demo, the demo page, the quickstart, the examples and the
    tests. ``seed`` is ``TrainingConfig.seed`` (data order and dropout; the model starts
    from the same weights); ``overrides`` change the config (``epochs=3`` for a quick run).
    Without ``output_dir`` the run's files go to a temporary folder that is removed.

    >>> model = train_tiny_model(epochs=1, progress=False)  # doctest: +SKIP
    """
    train = train_dataset if train_dataset is not None else sample_dataset("train")
    model = StoryModel.tiny(vocab_from=train, prefix=prefix)
    with tempfile.TemporaryDirectory(prefix="visiontales-tiny-") as tmp:
        config = TrainingConfig.tiny(seed=seed, output_dir=str(output_dir or tmp),
                                     **{"save_every": 0, **overrides})
        Trainer(model, train, eval_dataset, config).train()
    return model
