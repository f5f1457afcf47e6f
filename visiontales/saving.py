"""The saved-model folder: JSON config, safetensors weights, a plain GPT-2 folder.

::

    visiontales_config.json   {"visiontales": StoryModelConfig as JSON}
    mapper.safetensors        prefix mapper + the training-set feature statistics
    lm/                       GPT-2 and its tokenizer (AutoModelForCausalLM loads it as is)
    clip/                     open_clip config + weights, unless a pretrained tag says which

:class:`~visiontales.model.StoryModel`'s ``save_pretrained``, ``from_pretrained`` and
``load_weights`` are these functions.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import types
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from . import loading
from .utils import quiet_transformers, read_json, write_json

if TYPE_CHECKING:
    from .model import StoryModel, StoryModelConfig

CONFIG_NAME = "visiontales_config.json"
WEIGHTS_NAME = "mapper.safetensors"
RETIRED_FIELDS = ("extra",)  # written by earlier versions, never read: ignored on load


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a dataclass field's type (``str``, ``int``, ``str | None``...)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_matches(value, arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(annotation) or annotation)


def read_config(directory: Path, config_class: type) -> "StoryModelConfig":
    """The folder's config, each field checked against the dataclass's own types."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}; is this a visiontales model folder?")
    raw = read_json(path).get("visiontales")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: missing the 'visiontales' section")
    raw = {k: v for k, v in raw.items() if k not in RETIRED_FIELDS}
    types_of = typing.get_type_hints(config_class)
    unknown = set(raw) - set(types_of)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    wrong = [f.name for f in fields(config_class) if f.name in raw and not _matches(raw[f.name], types_of[f.name])]
    if wrong:
        raise ValueError(f"{path}: field(s) {wrong} have the wrong type")
    return config_class(**raw)


def save_pretrained(model: "StoryModel", directory: str | os.PathLike) -> Path:
    """Write the folder beside the target, then rename it into place (no half-written model)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write_json(tmp / CONFIG_NAME, {"visiontales": asdict(model.config)})
        state = {f"mapper.{k}": v for k, v in model.mapper.state_dict().items()}
        state.update(feature_mean=model.feature_mean, feature_std=model.feature_std,
                     feature_stats_fitted=model.feature_stats_fitted.to(torch.uint8).reshape(1))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()},
                  str(tmp / WEIGHTS_NAME))
        with quiet_transformers():
            model.lm.save_pretrained(tmp / "lm")
            model.tokenizer.save_pretrained(tmp / "lm")
        pretrained = model.config.clip_pretrained
        if not pretrained or os.path.isfile(pretrained):
            (tmp / "clip").mkdir()
            write_json(tmp / "clip" / "open_clip_config.json", loading.clip_config(model.clip, model.config.clip))
            save_file({k: v.contiguous() for k, v in model.clip.state_dict().items()},
                      str(tmp / "clip" / "open_clip_model.safetensors"))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_components(directory: Path, config: "StoryModelConfig", cache_dir: str | None = None):
    """``(clip, preprocess, lm, tokenizer)`` of a saved folder, weights included."""
    if (directory / "clip" / "open_clip_config.json").is_file():
        clip_model, preprocess = loading.load_clip(f"local-dir:{directory / 'clip'}", None)
    else:
        clip_model, preprocess = loading.load_clip(config.clip, config.clip_pretrained, cache_dir)
    with quiet_transformers():
        lm_model, tokenizer = loading.load_lm(str(directory / "lm"))
    return clip_model, preprocess, lm_model, tokenizer


def load_mapper(model: "StoryModel", directory: Path) -> None:
    """The prefix mapper's weights and the feature statistics, in place."""
    state = load_file(str(directory / WEIGHTS_NAME))
    model.mapper.load_state_dict({k[len("mapper."):]: v for k, v in state.items() if k.startswith("mapper.")})
    model.feature_mean.copy_(state["feature_mean"])
    model.feature_std.copy_(state["feature_std"])
    model.feature_stats_fitted.fill_(bool(state["feature_stats_fitted"].item()))


def load_weights(model: "StoryModel", directory: Path) -> None:
    """Every trained weight of a saved folder into ``model`` in place (a checkpoint resume)."""
    load_mapper(model, directory)
    lm_state = load_file(str(directory / "lm" / "model.safetensors"))
    missing, unexpected = model.lm.load_state_dict(lm_state, strict=False)
    tied = set(getattr(model.lm, "_tied_weights_keys", None) or ["lm_head.weight"])
    if unexpected or set(missing) - tied:
        raise ValueError(f"{directory / 'lm'}: weights do not fit this model "
                         f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    clip_weights = directory / "clip" / "open_clip_model.safetensors"
    if clip_weights.is_file():
        model.clip.load_state_dict(load_file(str(clip_weights)))
    model.forget_clip_identity()
