"""Build the two pretrained parts (open_clip CLIP, a transformers causal LM) and their tiny twins.

The real loaders are the default; when weights cannot be had, the user gets one sentence
that says what to do instead of a download stack trace. Model sizes are data: the tiny
CLIP and GPT-2 are described in ``recipes/tiny/`` (an open_clip config and ``recipe.json``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import torch

from visiontales.utils import TINY_RECIPE_DIR, forked_rng, read_json, tiny_recipe

TINY_CLIP = tiny_recipe()["clip"]  # open_clip names a config after its file
TINY_CLIP_CONFIG = TINY_RECIPE_DIR / f"{TINY_CLIP}.json"
TINY_LM = tiny_recipe()["lm_name"]  # the name a tiny model records as its language model


class WeightsUnavailableError(OSError):
    """Pretrained weights could not be found locally nor downloaded."""


def _unavailable(what: str, err: Exception) -> WeightsUnavailableError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return WeightsUnavailableError(
        f"Could not load the pretrained weights of {what} ({type(err).__name__}"
        f"{', HF_HUB_OFFLINE is set' if offline else ''}): connect to the internet once so "
        "they are downloaded and cached (then HF_HUB_OFFLINE=1 works), or pass a local path, "
        "or use StoryModel.tiny(...) for a small offline model."
    )


def _open_clip():
    """open_clip, imported on first use: it takes seconds, and ``visiontales --help`` or
    evaluation alone need none of it."""
    import open_clip
    if TINY_CLIP not in open_clip.list_models():  # open_clip names a config after its file
        open_clip.add_model_config(TINY_CLIP_CONFIG)
    return open_clip


class _OpenClipNoise(logging.Filter):
    """Drops open_clip's own log lines (it logs on the root logger) that say what we say
    better: a failed download (:func:`_unavailable` gives one sentence with what to do) and,
    for a model built without weights on purpose, "No pretrained weights loaded"."""

    def __init__(self, random_on_purpose: bool):
        super().__init__()
        self.level = logging.WARNING if random_on_purpose else logging.ERROR

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= self.level and "open_clip" in record.pathname)


def needs_quick_gelu(name: str, pretrained: str | None) -> bool:
    """Whether the weights tag was trained with QuickGELU (OpenAI's CLIP weights were)."""
    if not pretrained or os.path.isfile(pretrained):
        return False
    return bool(_open_clip().get_pretrained_cfg(name, pretrained).get("quick_gelu", False))


def load_clip(name: str, pretrained: str | None, cache_dir: str | None = None):
    """``(model, preprocess)`` for an open_clip model, frozen and in eval mode.

    ``pretrained`` is a tag (``"openai"``), a local weights file, a ``local-dir:`` folder
    given as ``name``, or ``None`` for random weights. QuickGELU is switched on exactly when
    the tag was trained with it (OpenAI's weights are), since the wrong activation gives
    silently wrong features.
    """
    open_clip = _open_clip()
    quick_gelu = needs_quick_gelu(name, pretrained)
    quiet = _OpenClipNoise(random_on_purpose=pretrained is None)
    logging.getLogger().addFilter(quiet)  # for this call only; levels and handlers stay the caller's
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, force_quick_gelu=quick_gelu, cache_dir=cache_dir)
    except (RuntimeError, OSError) as err:
        if pretrained and ("download" in str(err).lower() or isinstance(err, OSError)):
            raise _unavailable(f"CLIP {name!r} ({pretrained!r})", err) from None
        raise
    finally:
        logging.getLogger().removeFilter(quiet)
    model.eval().requires_grad_(False)
    return model, preprocess


def clip_config(model: torch.nn.Module, name: str) -> dict:
    """The ``open_clip_config.json`` content that rebuilds ``model`` with ``local-dir:``."""
    if name.startswith("local-dir:"):
        return read_json(Path(name[len("local-dir:"):]) / "open_clip_config.json")
    return {"model_cfg": _open_clip().get_model_config(name),
            "preprocess_cfg": dict(model.visual.preprocess_cfg)}


def load_lm(name_or_path: str):
    """``(causal LM, tokenizer)`` from the Hub name or a local folder, with a clear error.

    Any ``AutoModelForCausalLM`` (GPT-2, Llama/SmolLM2, Qwen2, GPT-NeoX/Pythia, OPT...); its
    tokenizer is taken as it is (a BOS some add, no pad token), but it must name an EOS:
    EOS ends every target and pads the batches.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        lm = AutoModelForCausalLM.from_pretrained(name_or_path)
    except OSError as err:
        if Path(name_or_path).exists():
            raise
        raise _unavailable(f"language model {name_or_path!r}", err) from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no EOS token, which ends every story "
                         "and pads batches; set tokenizer.eos_token and save it with the model")
    return lm, tokenizer


def tiny_lm(texts: Iterable[str], seed: int = 0, **overrides):
    """A randomly initialised small GPT-2 and a BPE tokenizer trained on ``texts``; sizes
    from the tiny recipe, ``overrides`` on top (``n_layer``, ``vocab_size``...)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from visiontales.model.tokens import build_tokenizer
    recipe = tiny_recipe()
    tokenizer = build_tokenizer(texts, vocab_size=overrides.pop("vocab_size", recipe["tokenizer_vocab_size"]))
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **{**recipe["lm"], **overrides})
    with forked_rng(seed):  # the weights follow the seed; the caller's random stream does not move
        return GPT2LMHeadModel(config), tokenizer


# rotary models report 32k-128k positions; a prefix, a prompt and a story never need that
# many, and the number sizes warnings and budgets, so it is capped
MAX_POSITIONS = 4096


def lm_width(lm: torch.nn.Module) -> int:
    """The language model's embedding width (GPT-2's ``n_embd``, everyone else's ``hidden_size``)."""
    return int(lm.get_input_embeddings().embedding_dim)


def lm_positions(lm: torch.nn.Module) -> int:
    """Positions the language model takes: ``max_position_embeddings``, at most :data:`MAX_POSITIONS`."""
    config = lm.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(int(positions), MAX_POSITIONS) if positions else MAX_POSITIONS
