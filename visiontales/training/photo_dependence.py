"""Does a model use the photos? ``photo_dependence`` scores any model on any dataset as the
Trainer's photo check does (:mod:`~visiontales.training.shuffled_photos`): the eval loss, and
again with the photos swapped between examples."""
from __future__ import annotations

import os
import tempfile

from visiontales.training.config import TrainingConfig
from visiontales.training.shuffled_photos import with_shuffled_photos
from visiontales.training.trainer import Trainer


def photo_dependence(model, dataset, *, batch_size: int = 16, precision: str = "fp32",
                     cache_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """``eval_loss``, ``eval_loss_shuffled`` and their ``gap`` for any model and dataset.

    The gap is in nats per token: near 0, the model tells the same story whatever the photos.

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val").select(range(8))
    >>> scores = photo_dependence(vt.StoryModel.tiny(), val)   # an untrained model: no gap to speak of
    >>> sorted(scores)
    ['eval_loss', 'eval_loss_shuffled', 'gap']
    """
    config = TrainingConfig(batch_size=batch_size, precision=precision, progress=False,
                            cache_dir=None if cache_dir is None else str(cache_dir),
                            device=str(model.device), output_dir=tempfile.gettempdir())
    trainer = Trainer(model, dataset, config=config)
    data = trainer.prepare(dataset)
    swapped = with_shuffled_photos(data)
    if not len(swapped):
        raise ValueError("photo_dependence needs at least two examples with different photos")
    loss, shuffled = trainer.evaluate_loss(data), trainer.evaluate_loss(swapped)
    return {"eval_loss": loss, "eval_loss_shuffled": shuffled, "gap": shuffled - loss}
