"""TrainingConfig: every training knob with a default; the defaults are the paper's."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterable

from visiontales.model.precision import PRECISIONS
from visiontales.utils import tiny_recipe

# the offline tiny model's training settings (recipes/tiny/recipe.json, "training")
TINY_TRAINING = tiny_recipe()["training"]
# where TrainingConfig.report_to can send the history (visiontales.training.loggers writes them)
REPORTERS = ("tensorboard", "wandb")


def reporters(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``report_to`` as a tuple of known backends; one name, ``None`` or ``"none"`` work too.

    >>> reporters("tensorboard"), reporters(["none"]), reporters(None)
    (('tensorboard',), (), ())
    >>> reporters(["tensorbord"])
    Traceback (most recent call last):
    ...
    ValueError: report_to: unknown backend 'tensorbord'; choose from tensorboard, wandb (or none)
    """
    names = (value,) if isinstance(value, str) else tuple(value or ())
    names = tuple(dict.fromkeys(str(n).lower() for n in names if str(n).lower() != "none"))
    for name in names:
        if name not in REPORTERS:
            raise ValueError(f"report_to: unknown backend {name!r}; choose from {', '.join(REPORTERS)} (or none)")
    return names


def knob(default: Any, help: str) -> Any:
    """A dataclass field with its one-line help in ``metadata["help"]``: the CLI reads it,
    so a new setting is one line here (as Hugging Face's ``HfArgumentParser`` does)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainingConfig:
    """Every training knob with a default; the defaults are the VisionTales paper's.

    >>> TrainingConfig().lr, TrainingConfig().batch_size, TrainingConfig().epochs
    (5e-05, 1, 7)
    """
    lr: float = knob(5e-5, "AdamW learning rate (paper: 5e-5)")
    batch_size: int = knob(1, "sequences per step (paper: 1)")
    epochs: int = knob(7, "passes over the training set (paper: 7)")
    weight_decay: float = knob(0.0, "AdamW weight decay (not on biases/LayerNorm)")
    warmup_steps: int = knob(0, "linear warm-up steps")
    scheduler: str = knob("constant", "'constant' (paper) or 'linear' decay to 0")
    grad_accum_steps: int = knob(1, "micro-batches per optimiser step")
    max_grad_norm: float | None = knob(1.0, "gradient clipping by global norm; 0 or None turns it off")
    freeze_lm: bool = knob(False, "train only the prefix mapper (ClipCap's only_prefix)")
    lora_r: int = knob(0, "LoRA rank on the language model (peft: pip install 'visiontales[lora]'); "
                          "0: full fine-tuning (paper). The prefix mapper always trains")
    lora_alpha: int = knob(16, "LoRA scale: the update is multiplied by lora_alpha / lora_r")
    lora_dropout: float = knob(0.05, "dropout on the LoRA branch's input")
    lora_target_modules: tuple | None = knob(None, "LM modules LoRA adapts, e.g. q_proj v_proj; "
                                                   "none: peft's default for the architecture")
    gradient_checkpointing: bool = knob(False, "recompute the LM's activations in the backward pass "
                                               "(transformers' switch): less memory, slower steps")
    train_clip_blocks: int = knob(0, "train the image tower's last k blocks too (0: frozen, the paper); "
                                     "the cache then holds the frozen trunk's tokens")
    clip_lr: float | None = knob(None, "AdamW learning rate of those blocks; None: lr / 100")
    max_text_tokens: int = knob(128, "longer stories are truncated, with a warning")
    precision: str = knob("fp32", "'auto': bf16 autocast where native (CUDA, AMX/AVX512-BF16 CPUs)")
    group_by_length: bool = knob(False, "batch similar lengths together: less padding")
    compile: bool = knob(False, "torch.compile the loss step (PyTorch 2.x)")
    num_workers: int = knob(0, "DataLoader processes decoding images for CLIP")
    cache_dir: str | None = knob(None, "CLIP feature cache; None: $VISIONTALES_CACHE or ~/.cache/visiontales")
    seed: int = knob(42, "seeds shuffling, dropout and initialisation")
    device: str = knob("auto", "'auto': cuda, then mps, then cpu")
    output_dir: str = knob("runs/visiontales", "checkpoints and the final model go here")
    save_every: int = knob(1, "checkpoint every N epochs; 0: only the final model")
    save_steps: int = knob(0, "also checkpoint every N optimiser steps (mid-epoch)")
    keep_checkpoints: int = knob(2, "newest checkpoints kept on disk; older ones removed")
    eval_every_epoch: bool = knob(True, "eval loss on eval_dataset after each epoch")
    photo_check: bool = knob(True, "also eval_loss_shuffled: the eval loss with the photos swapped "
                                   "between examples (one more eval pass); a gap near 0 = photos ignored")
    eval_metrics: tuple = knob((), "e.g. ('BLEU-4', 'CIDEr'): scored on eval stories each epoch")
    best_metric: str | None = knob(None, "keep output_dir/best by this history column (eval_loss: lower)")
    num_samples: int = knob(2, "eval stories printed after each epoch")
    sample_max_new_tokens: int = knob(40, "length of those printed samples")
    rl_weight: float = knob(0.0, "lambda of L = L_NLL + lambda * L_RL (needs Trainer(rl=...))")
    rl_start_epoch: int = knob(0, "first epoch (0-based) with the reinforcement term")
    log_every: int = knob(10, "steps between history rows")
    progress: bool = knob(True, "tqdm bars")
    report_to: tuple = knob((), "where the history and samples also go: 'tensorboard' (under output_dir), 'wandb'")

    def __post_init__(self):
        self.eval_metrics = tuple(self.eval_metrics)
        self.report_to = reporters(self.report_to)
        if self.lora_target_modules is not None:
            self.lora_target_modules = tuple(self.lora_target_modules) or None
        if self.lora_r < 0:
            raise ValueError(f"TrainingConfig.lora_r must be >= 0 (0: full fine-tuning), got {self.lora_r}")
        if self.lora_r and self.freeze_lm:
            raise ValueError("freeze_lm trains no LM weight and lora_r > 0 trains a LoRA adapter on it: "
                             "choose one")
        if self.best_metric and self.best_metric != "eval_loss" and self.best_metric not in self.eval_metrics:
            raise ValueError(f"best_metric {self.best_metric!r} must be 'eval_loss' or one of eval_metrics")
        if self.scheduler not in ("constant", "linear"):
            raise ValueError(f"scheduler must be 'constant' or 'linear', got {self.scheduler!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.train_clip_blocks < 0 or (self.clip_lr is not None and self.clip_lr <= 0):
            raise ValueError(f"train_clip_blocks must be >= 0 and clip_lr > 0, got {self.train_clip_blocks} "
                             f"and {self.clip_lr}")
        for name in ("batch_size", "epochs", "grad_accum_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.rl_weight > 0 and not 0 <= self.rl_start_epoch < self.epochs:
            raise ValueError(f"rl_start_epoch={self.rl_start_epoch} is not one of the {self.epochs} epochs "
                             f"(0-based): the RL step would never run")

    @classmethod
    def tiny(cls, **overrides: Any) -> "TrainingConfig":
        """The offline tiny recipe (``TINY_TRAINING``), with ``overrides`` on top.

        >>> TrainingConfig.tiny(epochs=3).lr, TrainingConfig.tiny(epochs=3).epochs
        (0.001, 3)
        """
        return cls(**{**TINY_TRAINING, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
