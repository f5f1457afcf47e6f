"""Training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint folder holds the model (``save_pretrained``), ``optimizer.safetensors``
(AdamW moments, flattened), and ``trainer_state.json`` (epoch, step, history, scheduler,
config, RNG). ``latest.json`` in the run folder names the newest complete one; it is
written last, so a crash mid-save leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .utils import atomic_path, read_json, write_json

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def save_training_state(path: str | os.PathLike, model, optimizer, scheduler, epoch: int,
                        step: int, history: list[dict], config: dict[str, Any],
                        extra: dict[str, Any] | None = None) -> Path:
    """Write a resumable checkpoint folder and point ``latest.json`` at it.

    ``extra`` holds JSON values the trainer needs back (position in the epoch, pending losses).
    """
    path = Path(path)
    model.save_pretrained(path)
    tensors, groups = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    with atomic_path(path / OPTIMIZER_NAME) as tmp:
        save_file(tensors, str(tmp))
    clean_history = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                     for row in history]
    write_json(path / STATE_NAME, {
        "epoch": epoch, "step": step, "history": clean_history, "config": config,
        "param_groups": groups, "scheduler": scheduler.state_dict() if scheduler else None,
        **(extra or {}),
    })
    write_json(path.parent / "latest.json", {"checkpoint": path.name})
    return path


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


def load_training_state(path: str | os.PathLike, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore model weights, optimizer and scheduler from a checkpoint folder.

    The torch RNG state is returned as ``state["rng"]`` rather than set: the caller sets
    it right before the next step, after any work that draws random numbers.
    """
    from .model import StoryModel
    path = Path(path)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {STATE_NAME})")
    state = read_json(path / STATE_NAME)
    saved = StoryModel.from_pretrained(path)
    model.load_state_dict(saved.state_dict())
    tensors = load_file(str(path / OPTIMIZER_NAME))
    state["rng"] = tensors.pop("rng.torch")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    state["history"] = [{k: (float("nan") if v is None else v) for k, v in row.items()}
                        for row in state["history"]]
    return state
