"""LoRA on the language model (peft) and gradient checkpointing: the switches for bigger LMs.

peft injects its adapter layers into ``model.lm`` in place, so every code path of
:class:`~visiontales.model.story_model.StoryModel` (the loss on target tokens, generation with
the KV cache) runs unchanged. The peft wrapper is kept beside the model, outside its module
tree, so no parameter is registered twice. A saved folder's ``lm/`` is the *merged* model
(``merge_and_unload`` on a copy: plain transformers loads it, no peft needed); the adapter is
saved too, in ``lm_adapter/`` (peft's format, over the original base), so a checkpoint resumes
bit-identically: the frozen base is rebuilt from ``config.lm`` and the adapter loaded onto it.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from visiontales.utils import require

ADAPTER_DIR = "lm_adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's own file names
ADAPTER_CONFIG = "adapter_config.json"


class _Adapter:
    """The peft wrapper of ``model.lm``; a plain object, so ``nn.Module`` does not register it."""

    def __init__(self, peft_model):
        self.peft_model = peft_model


def _peft():
    """peft, or the library's one-line ``pip install "visiontales[lora]"`` error."""
    return require("peft", "lora", "LoRA")


def has_lora(model) -> bool:
    """Whether ``model.lm`` carries a LoRA adapter."""
    return getattr(model, "lora_adapter", None) is not None


def add_lora(model, r: int, alpha: int = 16, dropout: float = 0.05,
             target_modules: Sequence[str] | None = None) -> None:
    """Inject a rank-``r`` LoRA adapter into ``model.lm``; the LM's own weights freeze.

    ``target_modules`` None: peft's default for the architecture (GPT-2 ``c_attn``, Llama and
    Qwen2 ``q_proj v_proj``, Pythia ``query_key_value``...). A model that has an adapter
    already keeps it (a second ``Trainer.train`` does not stack adapters).

    >>> import visiontales as vt
    >>> model = vt.StoryModel.tiny()
    >>> add_lora(model, r=4)
    >>> lm_trainable = sum(p.numel() for p in model.lm.parameters() if p.requires_grad)
    >>> 0 < lm_trainable < 0.1 * sum(p.numel() for p in model.lm.parameters())
    True
    """
    if r < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {r}")
    if has_lora(model):
        return
    peft = _peft()
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
                             target_modules=list(target_modules) if target_modules else None,
                             fan_in_fan_out=model.lm.config.model_type == "gpt2")  # GPT-2's Conv1D
    model.lora_adapter = _Adapter(peft.get_peft_model(model.lm, config))


def set_lm_trainable(model, trainable: bool) -> None:
    """Train the LM (its adapter only, under LoRA) or freeze it all (``freeze_lm``)."""
    if not has_lora(model):
        model.lm.requires_grad_(trainable)
        return
    for name, param in model.lm.named_parameters():
        param.requires_grad_(trainable and "lora_" in name)


def enable_gradient_checkpointing(model) -> None:
    """transformers' own switch: the LM's layers recompute activations in the backward pass."""
    # non-reentrant: works when the LM's inputs (the prefix) come from another module
    kwargs = {"use_reentrant": False}
    if hasattr(model.lm, "activation_checkpointing_enable"):  # transformers 5's name for it
        model.lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def merged_lm(model) -> torch.nn.Module:
    """A plain transformers LM with the adapter merged in (a copy; ``model`` keeps its adapter)."""
    if not has_lora(model):
        return model.lm
    return copy.deepcopy(model.lora_adapter.peft_model).merge_and_unload()


def save_adapter(model, directory: Path) -> None:
    """The adapter's weights and config in peft's format, under ``directory``."""
    peft = _peft()
    wrapper = model.lora_adapter.peft_model
    directory.mkdir(parents=True, exist_ok=True)
    state = peft.get_peft_model_state_dict(wrapper)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(directory / ADAPTER_WEIGHTS))
    wrapper.peft_config["default"].save_pretrained(str(directory))


def load_adapter(model, directory: Path) -> None:
    """Adapter weights saved by :func:`save_adapter` into ``model``'s adapter, in place."""
    peft = _peft()
    wrapper = model.lora_adapter.peft_model
    state = load_file(str(directory / ADAPTER_WEIGHTS), device=str(model.device))
    result = peft.set_peft_model_state_dict(wrapper, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{directory}: the adapter does not fit this model (rank or target modules "
                         f"differ; missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})")


def configure_lm(model, config) -> None:
    """What a training config asks of the language model: its LoRA adapter (``lora_r``),
    gradient checkpointing and ``freeze_lm`` (any object with those fields)."""
    if config.lora_r:
        add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    set_lm_trainable(model, not config.freeze_lm)
