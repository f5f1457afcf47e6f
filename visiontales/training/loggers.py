"""Where the training history also goes: TensorBoard and Weights & Biases.

``TrainingConfig(report_to=["tensorboard"])`` writes every number of the history (loss, lr,
eval loss, metrics, RL rewards) as a scalar and each epoch's sample stories as text under
``output_dir/tensorboard``; ``tensorboard --logdir runs/visiontales/tensorboard`` shows them.
``"wandb"`` sends the same to a Weights & Biases run. The writers here are opened and fed by
:class:`visiontales.training.callbacks.ReportCallback`, one of the Trainer's built-in callbacks; each
backend is an optional extra, imported only when a run asks for it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from visiontales.training.config import REPORTERS, TrainingConfig
from visiontales.utils import require

TENSORBOARD_DIR = "tensorboard"  # under output_dir
WHAT = {"tensorboard": "the TensorBoard logs", "wandb": "the Weights & Biases logs"}  # for the missing-extra line


def check_available(names: Iterable[str]) -> None:
    """Raise the one-line missing-extra error now, before hours of feature extraction."""
    for name in names:
        require(name, name, WHAT[name])


def scalar_tag(key: str, eval_metrics: Iterable[str] = ()) -> str:
    """The chart a history column goes to: ``eval/...`` for evaluation (``eval_*`` and
    ``config.eval_metrics``), ``rl/...`` for the RL rewards, ``train/...`` for the rest.

    >>> [scalar_tag(k, ["CIDEr"]) for k in ("loss", "eval_loss", "eval_loss_shuffled", "CIDEr", "reward_sample")]
    ['train/loss', 'eval/loss', 'eval/loss_shuffled', 'eval/CIDEr', 'rl/reward_sample']
    """
    if key in eval_metrics:
        return f"eval/{key}"
    if key.startswith("eval_"):
        return f"eval/{key[len('eval_'):]}"
    if key.startswith("reward"):
        return f"rl/{key}"
    return f"train/{key}"


def finite_numbers(row: dict[str, Any], skip: Iterable[str] = ("step",)) -> dict[str, float]:
    """The row's finite numbers (a NaN eval loss means "not evaluated in this row").

    >>> finite_numbers({"step": 5, "loss": 2.5, "eval_loss": float("nan"), "note": "x", "ok": True})
    {'loss': 2.5}
    """
    skip = set(skip)
    return {k: float(v) for k, v in row.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def samples_markdown(samples: Sequence[dict[str, str]]) -> str:
    """Sample stories as a Markdown table (TensorBoard's text tab renders it).

    >>> print(samples_markdown([{"photos": "1 2", "generated": "a | b", "reference": "c"}]))
    | photos | generated | reference |
    |---|---|---|
    | 1 2 | a \\| b | c |
    """
    lines = ["| photos | generated | reference |", "|---|---|---|"]
    for row in samples:
        cells = (str(row[k]).replace("|", "\\|").replace("\n", " ") for k in ("photos", "generated", "reference"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class TensorBoardWriter:
    """Scalars and text into event files under ``log_dir`` (``torch.utils.tensorboard``).

    ``purge_step``: a resumed run hides what the interrupted one wrote after its checkpoint;
    a fresh run (0) hides an earlier run's curves in the same folder, as it replaces its model.
    """

    def __init__(self, log_dir: str | os.PathLike, config: TrainingConfig, purge_step: int = 0):
        require("tensorboard", "tensorboard", WHAT["tensorboard"])
        from torch.utils.tensorboard import SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self.writer.add_text("config", "```\n" + json.dumps(asdict(config), indent=1, default=str) + "\n```",
                             purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def samples(self, samples: Sequence[dict[str, str]], step: int) -> None:
        self.writer.add_text("samples", samples_markdown(samples), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    """The same into a Weights & Biases run (project ``$WANDB_PROJECT``, default visiontales;
    ``WANDB_MODE=offline`` keeps it on disk under ``output_dir/wandb``)."""

    def __init__(self, output_dir: str | os.PathLike, config: TrainingConfig):
        self.wandb = require("wandb", "wandb", WHAT["wandb"])
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "visiontales"),
                                   dir=str(output_dir), config=asdict(config))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def samples(self, samples: Sequence[dict[str, str]], step: int) -> None:
        columns = ["photos", "generated", "reference"]
        table = self.wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in samples])
        self.run.log({"samples": table}, step=step)

    def flush(self) -> None:
        """W&B sends in the background; nothing to do."""

    def close(self) -> None:
        self.run.finish()


def open_writers(config: TrainingConfig, resumed_step: int = 0) -> list:
    """One writer per ``config.report_to`` backend, in that order."""
    writers: list = []
    for name in config.report_to:
        if name == "tensorboard":
            purge = resumed_step + 1 if resumed_step else 0
            writers.append(TensorBoardWriter(Path(config.output_dir) / TENSORBOARD_DIR, config, purge))
        elif name == "wandb":
            writers.append(WandbWriter(config.output_dir, config))
    return writers
