"""Training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint folder holds the model (``save_pretrained``), ``optimizer.safetensors``
(AdamW moments, flattened, and the torch RNG state), and ``trainer_state.json``: the
:class:`TrainState` (where training is), the scheduler and the config. ``latest.json`` in
the run folder names the newest complete one; it is written last, so a crash mid-save
leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from visiontales.utils import atomic_path, read_json, write_json

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


@dataclass
class TrainState:
    """Where training is: what a checkpoint saves and resuming restores (Hugging Face's name).

    ``epoch`` counts finished epochs and ``batch`` the micro-batches done in the current
    one, so a mid-epoch checkpoint resumes right after its last batch. ``pending_losses``
    and ``rl_stats`` are the steps since the last history row (the row is their mean).

    >>> state = TrainState(step=3, history=[{"step": 3, "loss": 2.5}])
    >>> TrainState.from_json(state.to_json()) == state
    True
    """
    epoch: int = 0
    step: int = 0
    batch: int = 0
    epoch_batches: int = 0  # micro-batches in the current epoch
    pending_losses: list = field(default_factory=list)
    rl_stats: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None  # of config.best_metric; output_dir/best holds that model
    best_epoch: int | None = None
    rng: torch.Tensor | None = field(default=None, compare=False)  # the torch CPU generator's state

    def to_json(self) -> dict[str, Any]:
        """JSON values only: losses as floats, NaN as null (JSON has no NaN)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rng"}
        values["pending_losses"] = [float(v) for v in self.pending_losses]
        values["history"] = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in row.items()} for row in self.history]
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)} - {"rng"}
        state = cls(**{k: v for k, v in values.items() if k in known})
        state.history = [{k: (float("nan") if v is None else v) for k, v in row.items()}
                         for row in state.history]
        return state


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def save_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, state: TrainState,
                    config: dict[str, Any]) -> Path:
    """Write a resumable checkpoint folder and point ``latest.json`` at it.

    The RNG saved is the caller's current torch state (the Trainer's own stream).
    """
    path = Path(path)
    model.save_pretrained(path)
    tensors, groups = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    with atomic_path(path / OPTIMIZER_NAME) as tmp:
        save_file(tensors, str(tmp))
    write_json(path / STATE_NAME, {
        "state": state.to_json(), "config": config, "param_groups": groups,
        "scheduler": scheduler.state_dict() if scheduler else None,
    })
    write_json(path.parent / "latest.json", {"checkpoint": path.name})
    return path


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler) -> TrainState:
    """Fill ``model``, ``optimizer`` and ``scheduler`` from a checkpoint; return its state.

    The model's weights are loaded in place (no second model is built). The RNG state is
    returned in ``state.rng`` rather than set: the caller sets it right before the next
    step, after any work that draws random numbers.
    """
    path = Path(path)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {STATE_NAME})")
    saved = read_json(path / STATE_NAME)
    if "state" not in saved:
        raise ValueError(f"{path / STATE_NAME}: written by an older visiontales; "
                         "resume with that version, or start from its model with --init")
    model.load_weights(path)
    tensors = load_file(str(path / OPTIMIZER_NAME))
    rng = tensors.pop("rng.torch")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": saved["param_groups"]})
    if scheduler is not None and saved.get("scheduler"):
        scheduler.load_state_dict(saved["scheduler"])
    state = TrainState.from_json(saved["state"])
    state.rng = rng
    return state


def prune_checkpoints(run_dir: str | os.PathLike, keep: int = 2) -> None:
    """Remove all but the ``keep`` newest ``checkpoint-step*`` folders (never the latest)."""
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir)
    found = sorted(run_dir.glob("checkpoint-step*"), key=lambda p: int(p.name[len("checkpoint-step"):]))
    for old in found[:max(0, len(found) - max(keep, 1))]:
        if old != latest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``run_dir``, or None."""
    pointer = Path(run_dir) / "latest.json"
    if not pointer.is_file():
        return None
    path = Path(run_dir) / read_json(pointer)["checkpoint"]
    return path if (path / STATE_NAME).is_file() else None
