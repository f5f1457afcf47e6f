"""StoryModelConfig: everything that rebuilds a StoryModel, saved as JSON beside its weights."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from visiontales.utils import read_json

DEFAULT_PROMPT = "Tell a story based on the following images:"
CONFIG_NAME = "visiontales_config.json"


@dataclass
class StoryModelConfig:
    """Everything needed to rebuild a :class:`~visiontales.model.story_model.StoryModel`.

    >>> StoryModelConfig().clip, StoryModelConfig().lm, StoryModelConfig().prefix
    ('ViT-B-32', 'gpt2', 'mean')
    """
    clip: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    lm: str = "gpt2"
    prefix: str = "mean"
    prefix_length: int = 10
    prompt: str = DEFAULT_PROMPT
    max_images: int = 16
    patch_grid: int = 4  # prefix "patches": each photo's patch tokens pooled to patch_grid x patch_grid
    clip_tuned_blocks: int = 0  # the image tower's last blocks that were trained (0: frozen, the paper)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a dataclass field's type (``str``, ``int``, ``str | None``...)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_matches(value, arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(annotation) or annotation)


def read_config(directory: Path) -> StoryModelConfig:
    """The folder's config, each field checked against the dataclass's own types."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}; is this a visiontales model folder?")
    raw = read_json(path).get("visiontales")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: missing the 'visiontales' section")
    types_of = typing.get_type_hints(StoryModelConfig)
    unknown = set(raw) - set(types_of)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    wrong = [f.name for f in fields(StoryModelConfig) if f.name in raw and not _matches(raw[f.name], types_of[f.name])]
    if wrong:
        raise ValueError(f"{path}: field(s) {wrong} have the wrong type")
    return StoryModelConfig(**raw)
