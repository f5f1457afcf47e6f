"""Flags shared by several commands: the model's, and one per ``TrainingConfig`` field.

The training flags are generated from the dataclass, as Hugging Face's ``HfArgumentParser``
does: each field's type gives the flag's type and its ``metadata["help"]`` the help text, so a
new setting is one ``knob(...)`` line in :mod:`visiontales.training.config` and no edit here.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from typing import Any


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--tiny", action="store_true",
                   help="small randomly initialised CLIP + GPT-2 (offline; no downloads)")
    g.add_argument("--clip", default="ViT-B-32",
                   help="open_clip model name or local-dir:FOLDER (default: ViT-B-32)")
    g.add_argument("--clip-pretrained", default="openai", type=_or_none(str),
                   help="open_clip weights tag, local file, or none for random weights (default: openai)")
    g.add_argument("--lm", default="gpt2",
                   help="any causal LM on the Hub or in a local folder: gpt2, HuggingFaceTB/SmolLM2-135M, "
                        "Qwen/Qwen2.5-0.5B, EleutherAI/pythia-160m... (default: gpt2)")
    g.add_argument("--prefix", choices=["mean", "sequence", "patches"], default="mean",
                   help="mean: average the images (paper); sequence: one prefix block per image; "
                        "patches: learned queries per image read its patch tokens")
    g.add_argument("--patch-grid", type=int, default=None,
                   help="patches: each image's patch tokens pooled to G x G (default: 4, 16 tokens)")
    g.add_argument("--prefix-length", type=int, default=None,
                   help="prefix tokens (per image in sequence mode); default 10, tiny 4")
    g.add_argument("--init", metavar="MODEL",
                   help="start from a saved model instead: a folder or a Hub repo id (user/repo)")


def build_model(args, train_data):
    """The model the flags of :func:`add_model_args` name; ``--tiny`` learns its vocabulary
    from ``train_data`` (and from its instructions, when it is an instruction mixture)."""
    from visiontales.model.story_model import StoryModel
    if args.patch_grid is not None and (args.init or args.prefix != "patches"):
        raise ValueError("--patch-grid applies to a new model with --prefix patches only")
    grid = {"patch_grid": args.patch_grid} if args.patch_grid is not None else {}
    if args.init:
        return StoryModel.from_pretrained(args.init)
    if args.tiny:
        vocab = list(train_data.texts)
        if "instruction" in train_data.frame.columns:
            vocab += sorted(set(train_data.frame["instruction"]) - {""})
        return StoryModel.tiny(vocab_from=vocab, prefix=args.prefix,
                               prefix_length=args.prefix_length or 4, **grid)
    return StoryModel.from_components(clip=args.clip, clip_pretrained=args.clip_pretrained,
                                      lm=args.lm, prefix=args.prefix,
                                      prefix_length=args.prefix_length or 10, **grid)


def _or_none(kind: type):
    """``kind`` for argparse's ``type=``, plus the word ``none`` for a ``kind | None`` field."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return parse


def _flag_options(name: str, hint: Any) -> dict:
    """argparse options for a field typed ``hint``: bool, tuple, ``X | None``, int/float/str."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint is tuple or typing.get_origin(hint) is tuple:
        element = typing.get_args(hint)[0] if typing.get_args(hint) else str
        return {"nargs": "*", "type": element}
    if hint in (int, float, str):
        return {"type": _or_none(hint) if optional else hint}
    raise TypeError(f"TrainingConfig.{name}: no command-line flag for type {hint!r}; use bool, int, "
                    "float, str, tuple or one of these | None (or teach visiontales/cli/args.py)")


def shown(value: Any) -> str:
    """A default as the help prints it: ``none`` for None and for an empty tuple."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_training_args(p: argparse.ArgumentParser, defaults: dict[str, str] | None = None,
                      given_only: bool = False) -> None:
    """One flag per ``TrainingConfig`` field (``batch_size`` -> ``--batch-size``).

    ``defaults`` replaces the "(default: ...)" text of some fields, for a command with a
    recipe of its own; with ``given_only`` a flag the user leaves out is absent from the
    parsed namespace, so that command can tell "not given" from "given the default".
    """
    from visiontales.training.config import TrainingConfig
    hints = typing.get_type_hints(TrainingConfig)  # the module's annotations are strings
    g = p.add_argument_group("training (TrainingConfig fields)")
    for f in fields(TrainingConfig):
        default = f.default_factory() if f.default is MISSING else f.default
        text = (defaults or {}).get(f.name, shown(default))
        help_text = f"{f.metadata.get('help', '')} (default: {text})".lstrip()
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **_flag_options(f.name, hints[f.name]),
                       default=argparse.SUPPRESS if given_only else default,
                       help=help_text.replace("%", "%%"))


def training_values(args) -> dict[str, Any]:
    """The ``TrainingConfig`` fields present in parsed ``args``, by field name."""
    from visiontales.training.config import TrainingConfig
    return {f.name: getattr(args, f.name) for f in fields(TrainingConfig) if hasattr(args, f.name)}
