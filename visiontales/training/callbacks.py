"""Trainer callbacks: everything around the training loop, with Hugging Face's hook names.

The loop in :meth:`visiontales.Trainer.train` only steps; evaluation, keeping the best
model, printed samples, RL reward logging, checkpoints and the loggers of
``config.report_to`` are the callbacks below, and
yours run after them (``Trainer(..., callbacks=[MyCallback()])``). Every hook receives the
trainer (model, config, datasets) and its :class:`~visiontales.training.checkpoint.TrainState`.

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
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from visiontales.model.hub import TRAINING_NAME
from visiontales.training.checkpoint import TrainState
from visiontales.training.record import training_record
from visiontales.training.shuffled_photos import GAP_WARNING, WARN_AFTER_EPOCHS
from visiontales.utils import write_json


class TrainerCallback:
    """Subclass and override the hooks you need; each does nothing by default.

    ``on_log`` may add keys to ``logs`` before the row is stored in the history.
    """

    def on_train_begin(self, trainer: "Trainer", state: TrainState) -> None:
        """After data, features and optimiser are ready, before the first step."""

    def on_step_end(self, trainer: "Trainer", state: TrainState) -> None:
        """After each optimiser step (``state.step`` has been counted)."""

    def on_log(self, trainer: "Trainer", state: TrainState, logs: dict[str, Any]) -> None:
        """A history row (step, epoch, loss, lr...) is about to be stored."""

    def on_evaluate(self, trainer: "Trainer", state: TrainState, metrics: dict[str, float]) -> None:
        """After evaluation on the eval set (``eval_loss`` and ``config.eval_metrics``)."""

    def on_epoch_end(self, trainer: "Trainer", state: TrainState) -> None:
        """After each epoch (``state.epoch`` counts it already)."""

    def on_save(self, trainer: "Trainer", state: TrainState, path: Path) -> None:
        """After a checkpoint was written to ``path``."""

    def on_train_end(self, trainer: "Trainer", state: TrainState) -> None:
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
    """Print ``config.num_samples`` greedy eval stories beside their references each epoch.

    The last epoch's are kept in ``samples`` (photos, generated, reference) for the loggers.
    """

    def __init__(self):
        self.samples: list[dict[str, str]] = []
        self.epoch = 0  # the epoch ``samples`` belong to

    def on_epoch_end(self, trainer, state):
        config = trainer.config
        if not config.num_samples or trainer.eval_data is None or trainer.rank > 0:
            return
        frame = trainer.eval_dataset.frame.head(config.num_samples)
        stories = trainer.model.generate_from_features(trainer.eval_data.features[:len(frame)],
                                                       max_new_tokens=config.sample_max_new_tokens,
                                                       precision=config.precision)
        self.samples, self.epoch = [], state.epoch
        for story, ref, photos in zip(stories, frame["text"], frame["photo_ids"]):
            tqdm.write(f"[epoch {state.epoch}] generated: {story}\n           reference: {ref}")
            self.samples.append({"photos": " ".join(photos), "generated": story, "reference": ref})


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


class TrainingRecordCallback(TrainerCallback):
    """``output_dir/final/training.json``: the config, the data and the last numbers of the
    run, which ``visiontales push`` turns into the model card's training section."""

    def on_train_end(self, trainer, state):
        if trainer.rank > 0:
            return
        final = Path(trainer.config.output_dir) / "final"
        if final.is_dir():
            write_json(final / TRAINING_NAME, training_record(trainer))


class ReportCallback(TrainerCallback):
    """The history and the sample stories to ``config.report_to`` (TensorBoard, W&B).

    It reads ``state.history`` rather than the ``on_log`` row, so what any callback adds
    (eval loss and metrics at epoch end, RL rewards, your columns) is written too, each
    number once, at its row's step. Writers: :mod:`visiontales.training.loggers`; rank 0 only.
    """

    def __init__(self):
        self.writers: list = []
        self.row, self.written = 0, set()  # the history row being written, its keys written

    def on_train_begin(self, trainer, state):
        if trainer.rank > 0 or not trainer.config.report_to:
            return
        from visiontales.training.loggers import open_writers
        self.writers = open_writers(trainer.config, resumed_step=state.step)
        self.row, self.written = len(state.history), set()  # a resumed run's rows were written then

    def write_history(self, trainer, state) -> None:
        from visiontales.training.loggers import finite_numbers, scalar_tag
        rows = state.history
        while self.row < len(rows):
            row = rows[self.row]
            fresh = {k: v for k, v in finite_numbers(row).items() if k not in self.written}
            if fresh:
                for writer in self.writers:
                    writer.scalars({scalar_tag(k, trainer.config.eval_metrics): v for k, v in fresh.items()},
                                   int(row["step"]))
            self.written |= set(fresh)
            if self.row == len(rows) - 1:
                break  # the last row may still grow (evaluation fills it at the epoch's end)
            self.row, self.written = self.row + 1, set()

    def on_step_end(self, trainer, state):
        if self.writers:
            self.write_history(trainer, state)

    def on_epoch_end(self, trainer, state):
        if not self.writers:
            return
        self.write_history(trainer, state)
        sampler = next((cb for cb in trainer.callbacks if isinstance(cb, SampleCallback)), None)
        if sampler is not None and sampler.samples and sampler.epoch == state.epoch:
            for writer in self.writers:
                writer.samples(sampler.samples, state.step)
        for writer in self.writers:
            writer.flush()

    def on_train_end(self, trainer, state):
        if not self.writers:
            return
        self.write_history(trainer, state)
        for writer in self.writers:
            writer.close()
        self.writers = []


class PhotoDependenceCallback(TrainerCallback):
    """Warn once when the photos barely change the eval loss after a few epochs.

    ``eval_loss_shuffled`` (``config.photo_check``) within
    :data:`~visiontales.training.shuffled_photos.GAP_WARNING` of ``eval_loss`` after
    :data:`~visiontales.training.shuffled_photos.WARN_AFTER_EPOCHS` epochs: the model tells the same story
    whatever the photos.
    """

    def __init__(self):
        self.warned = False

    def on_evaluate(self, trainer, state, metrics):
        gap = metrics.get("eval_loss_shuffled", math.nan) - metrics["eval_loss"]
        if self.warned or trainer.rank > 0 or state.epoch < WARN_AFTER_EPOCHS or not gap < GAP_WARNING:
            return
        self.warned = True
        hint = "the order-aware prefix (prefix='sequence'), " if trainer.model.config.prefix == "mean" else ""
        warnings.warn(f"The model is not using the photos: after {state.epoch} epochs, shuffling the "
                      f"photos changes its eval loss by only {gap:.3f} nats per token; try {hint}"
                      "more epochs or a higher learning rate.",
                      UserWarning, stacklevel=2)


DEFAULT_CALLBACKS = (EvaluationCallback, PhotoDependenceCallback, BestModelCallback, SampleCallback,
                     RewardLoggingCallback, CheckpointCallback, TrainingRecordCallback, ReportCallback)
