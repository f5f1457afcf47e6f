"""The record of a training run: ``output_dir/final/training.json``, which the model card
(:func:`visiontales.model.hub.model_card`) turns into its training section."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any


def _last_finite(history: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in history if isinstance(row.get(key), (int, float))
              and not isinstance(row.get(key), bool) and math.isfinite(row[key])]
    return float(values[-1]) if values else None


def describe_data(dataset) -> dict[str, Any] | None:
    """What a card says about a dataset: windows, stories, photos per window, rows skipped."""
    if dataset is None:
        return None
    frame = dataset.frame
    out = {"windows": len(frame), "stories": int(frame["story_id"].nunique()),
           "photos_per_window": sorted({len(p) for p in frame["image_paths"]}),
           "skipped": len(getattr(dataset, "skipped", ()))}
    if "task" in frame.columns:
        out["tasks"] = {str(k): int(v) for k, v in frame["task"].value_counts().items()}
    return out


def training_record(trainer) -> dict[str, Any]:
    """How a :class:`~visiontales.Trainer` trained its model: the config, the data, the last
    numbers of the history; what ``training.json`` and the model card say."""
    state = trainer.state
    keys = dict.fromkeys(k for row in state.history for k in row if k not in ("step", "epoch"))
    final = {k: v for k in keys if (v := _last_finite(state.history, k)) is not None}
    record = {"config": asdict(trainer.config), "steps": state.step, "epochs": state.epoch,
              "train_data": describe_data(trainer.train_dataset),
              "eval_data": describe_data(trainer.eval_dataset), "final": final}
    if state.best_value is not None:
        record["best"] = {"metric": trainer.config.best_metric, "value": state.best_value,
                          "epoch": state.best_epoch}
    return record
