"""Trainer callbacks: everything around the training loop, with Hugging Face's hook names.

The loop in :meth:`visiontales.Trainer.train` only steps; evaluation, keeping the best
model, printed samples, RL reward logging and checkpoints are the callbacks below, and
yours run after them (``Trainer(..., callbacks=[MyCallback()])``). Every hook receives the
trainer (model, config, datasets) and its :class:`~visiontales.checkpoint.TrainState`.

>>> import visiontales as vt
>>> class LossPrinter(vt.TrainerCallback):
...     def on_log(self, trainer, state, logs):
...         print(f"step {logs['step']}: loss {logs['loss']:.1f}")
>>> data = vt.sample_dataset("train").select(range(4))
>>> config = vt.TrainingConfig.tiny(epochs=1, batch_size=4, progress=False, output_dir="/tmp/vt-cb")
>>> _ = vt.Trainer(vt.StoryModel.tiny(vocab_from=data), data, config=config,
...                callbacks=[LossPrinter()]).train()  # doctest: +ELLIPSIS
step 1: loss ...
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from .checkpoint import TrainState
    from .train import Trainer


class TrainerCallback:
    """Subclass and override the hooks you need; each does nothing by default.

    ``on_log`` may add keys to ``logs`` before the row is stored in the history.
    """

    def on_train_begin(self, trainer: "Trainer", state: "TrainState") -> None:
        """After data, features and optimiser are ready, before the first step."""

    def on_step_end(self, trainer: "Trainer", state: "TrainState") -> None:
        """After each optimiser step (``state.step`` has been counted)."""

    def on_log(self, trainer: "Trainer", state: "TrainState", logs: dict[str, Any]) -> None:
        """A history row (step, epoch, loss, lr...) is about to be stored."""

    def on_evaluate(self, trainer: "Trainer", state: "TrainState", metrics: dict[str, float]) -> None:
        """After evaluation on the eval set (``eval_loss`` and ``config.eval_metrics``)."""

    def on_epoch_end(self, trainer: "Trainer", state: "TrainState") -> None:
        """After each epoch (``state.epoch`` counts it already)."""

    def on_save(self, trainer: "Trainer", state: "TrainState", path: Path) -> None:
        """After a checkpoint was written to ``path``."""

    def on_train_end(self, trainer: "Trainer", state: "TrainState") -> None:
        """After the final model was saved."""


def _mean_stats(rows: list[dict]) -> dict[str, float]:
    """Mean of each numeric key over ``rows`` (the RL stats of the steps of one history row).

    >>> _mean_stats([{"reward_sample": 1.0}, {"reward_sample": 3.0}])
    {'reward_sample': 2.0}
    """
    keys = sorted({k for row in rows for k, v in row.items() if isinstance(v, (int, float))})
    return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


class EvaluationCallback(TrainerCallback):
    """Eval loss and ``config.eval_metrics`` after each epoch, into that epoch's last row."""

    def on_epoch_end(self, trainer, state):
        config = trainer.config
        if trainer.eval_data is None or not state.history or not (config.eval_every_epoch or config.eval_metrics):
            return
        state.history[-1].update(trainer.evaluate())


class BestModelCallback(TrainerCallback):
    """Keep ``output_dir/best``: the model with the best ``config.best_metric`` so far
    (``eval_loss``: lower is better; any other metric: higher)."""

    def on_evaluate(self, trainer, state, metrics):
        name = trainer.config.best_metric
        value = metrics.get(name, float("nan")) if name else float("nan")
        if not math.isfinite(value):
            return
        lower = name == "eval_loss"
        if state.best_value is None or (value < state.best_value if lower else value > state.best_value):
            state.best_value, state.best_epoch = value, state.epoch
            if trainer.rank == 0:
                trainer.model.save_pretrained(Path(trainer.config.output_dir) / "best")


class SampleCallback(TrainerCallback):
    """Print ``config.num_samples`` greedy eval stories beside their references each epoch."""

    def on_epoch_end(self, trainer, state):
        config = trainer.config
        if not config.num_samples or trainer.eval_data is None or trainer.rank > 0:
            return
        frame = trainer.eval_dataset.frame.head(config.num_samples)
        stories = trainer.model.generate([list(p) for p in frame["image_paths"]],
                                         max_new_tokens=config.sample_max_new_tokens,
                                         **trainer.extraction)
        for story, ref in zip(stories, frame["text"]):
            tqdm.write(f"[epoch {state.epoch}] generated: {story}\n           reference: {ref}")


class RewardLoggingCallback(TrainerCallback):
    """The RL step's rewards (``state.rl_stats``) as their mean in each history row."""

    def on_log(self, trainer, state, logs):
        logs.update(_mean_stats(state.rl_stats))
        state.rl_stats = []


class CheckpointCallback(TrainerCallback):
    """Resumable checkpoints every ``config.save_steps`` steps and ``config.save_every`` epochs.

    The epoch-end and the last step's checkpoints are left to ``output_dir/final``.
    """

    def on_step_end(self, trainer, state):
        every = trainer.config.save_steps
        if every and state.step % every == 0 and state.batch < state.epoch_batches:
            trainer.save_checkpoint()

    def on_epoch_end(self, trainer, state):
        every = trainer.config.save_every
        if every and state.epoch % every == 0 and state.epoch < trainer.config.epochs:
            trainer.save_checkpoint()


DEFAULT_CALLBACKS = (EvaluationCallback, BestModelCallback, SampleCallback, RewardLoggingCallback,
                     CheckpointCallback)
