"""The saved-model folder: JSON config, safetensors weights, a plain transformers LM folder.

::

    visiontales_config.json   {"visiontales": StoryModelConfig as JSON}
    mapper.safetensors        prefix mapper + the training-set feature statistics (+ the tuned
                              image-tower blocks as ``clip.visual.*``, when some were trained)
    lm/                       the language model and its tokenizer (AutoModelForCausalLM loads it
                              as is; a LoRA adapter merged in)
    lm_adapter/               only under LoRA: the adapter itself (peft's format), for resuming
    clip/                     open_clip config + weights, unless a pretrained tag says which

:class:`~visiontales.model.story_model.StoryModel`'s ``save_pretrained``, ``from_pretrained`` and
``load_weights`` are these functions. They take the model as an argument and never import
its class, so the model module depends on this one and not the other way round.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from visiontales.model import backbones, lora
from visiontales.model.config import CONFIG_NAME, StoryModelConfig, read_config
from visiontales.model.hub import resolve_model
from visiontales.utils import quiet_transformers, write_json

WEIGHTS_NAME = "mapper.safetensors"


def save_pretrained(model, directory: str | os.PathLike) -> Path:
    """Write the folder beside the target, then rename it into place (no half-written model)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write_json(tmp / CONFIG_NAME, {"visiontales": asdict(model.config)})
        state = {f"mapper.{k}": v for k, v in model.mapper.state_dict().items()}
        state.update(feature_mean=model.feature_mean, feature_std=model.feature_std,
                     feature_stats_fitted=model.feature_stats_fitted.to(torch.uint8).reshape(1))
        state.update(tuned_blocks_state(model))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()},
                  str(tmp / WEIGHTS_NAME))
        with quiet_transformers():
            lora.merged_lm(model).save_pretrained(tmp / "lm")
            model.tokenizer.save_pretrained(tmp / "lm")
        if lora.has_lora(model):
            lora.save_adapter(model, tmp / lora.ADAPTER_DIR)
        pretrained = model.config.clip_pretrained
        if not pretrained or os.path.isfile(pretrained):
            (tmp / "clip").mkdir()
            write_json(tmp / "clip" / "open_clip_config.json", backbones.clip_config(model.clip, model.config.clip))
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


def tuned_blocks_state(model) -> dict:
    """The weights of the image tower's tuned blocks, as ``clip.visual.<name>`` (none when frozen)."""
    prefixes = tuple(f"visual.{p}" for p in model.tower.tuned_prefixes(model.clip.visual))
    return {f"clip.{k}": v for k, v in model.clip.state_dict().items() if prefixes and k.startswith(prefixes)}


def load_components(directory: Path, config: StoryModelConfig, cache_dir: str | None = None):
    """``(clip, preprocess, lm, tokenizer)`` of a saved folder, weights included."""
    if (directory / "clip" / "open_clip_config.json").is_file():
        clip_model, preprocess = backbones.load_clip(f"local-dir:{directory / 'clip'}", None)
    else:
        clip_model, preprocess = backbones.load_clip(config.clip, config.clip_pretrained, cache_dir)
    with quiet_transformers():
        lm_model, tokenizer = backbones.load_lm(str(directory / "lm"))
    return clip_model, preprocess, lm_model, tokenizer


def load_mapper(model, directory: Path) -> None:
    """The prefix mapper's weights and the feature statistics, in place."""
    state = load_file(str(directory / WEIGHTS_NAME))
    model.mapper.load_state_dict({k[len("mapper."):]: v for k, v in state.items() if k.startswith("mapper.")})
    model.feature_mean.copy_(state["feature_mean"])
    model.feature_std.copy_(state["feature_std"])
    model.feature_stats_fitted.fill_(bool(state["feature_stats_fitted"].item()))
    tuned = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
    if tuned.keys() != {k[len("clip."):] for k in tuned_blocks_state(model)}:
        raise ValueError(f"{directory / WEIGHTS_NAME}: its tuned image-tower blocks do not fit this model")
    if tuned:
        model.clip.load_state_dict(tuned, strict=False)
        model.forget_clip_identity()


def load_weights(model, directory: Path) -> None:
    """Every trained weight of a saved folder into ``model`` in place (a checkpoint resume)."""
    load_mapper(model, directory)
    if lora.has_lora(model) and (directory / lora.ADAPTER_DIR).is_dir():  # the frozen base stays
        lora.load_adapter(model, directory / lora.ADAPTER_DIR)
    else:
        _load_lm_weights(model, directory)
    clip_weights = directory / "clip" / "open_clip_model.safetensors"
    if clip_weights.is_file():
        model.clip.load_state_dict(load_file(str(clip_weights)))
    model.forget_clip_identity()


def _load_lm_weights(model, directory: Path) -> None:
    lm_state = load_file(str(directory / "lm" / "model.safetensors"))
    missing, unexpected = model.lm.load_state_dict(lm_state, strict=False)
    tied = set(getattr(model.lm, "_tied_weights_keys", None) or ["lm_head.weight"])
    if unexpected or set(missing) - tied:
        raise ValueError(f"{directory / 'lm'}: weights do not fit this model "
                         f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")


def load_pretrained(model_class, name_or_path: str | os.PathLike, cache_dir: str | None = None,
                    revision: str | None = None):
    """A ``model_class`` instance from a saved folder or a Hub repo id (see
    :func:`visiontales.model.hub.resolve_model`)."""
    directory = resolve_model(name_or_path, revision=revision, cache_dir=cache_dir)
    config = read_config(directory)
    model = model_class(*load_components(directory, config, cache_dir), config)
    load_mapper(model, directory)
    return model
