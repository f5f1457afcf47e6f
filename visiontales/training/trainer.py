"""Fine-tuning: the Trainer and its loop (knobs: :class:`~visiontales.training.config.TrainingConfig`).

``Trainer.train`` reads top to bottom like nanoGPT's loop: batch -> forward -> loss ->
backward -> clip -> step -> schedule. Around it, evaluation, the best model, printed
samples, RL reward logging and checkpoints are :mod:`~visiontales.training.callbacks`; where
training is lives in one :class:`~visiontales.training.checkpoint.TrainState`, which is what a
checkpoint saves. Training runs on its own random stream seeded with ``config.seed``:
the caller's torch, NumPy and Python random states are as they were afterwards.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch

from visiontales.model import lora
from visiontales.model.precision import autocast, resolve_precision
from visiontales.model.tower import tune_clip_blocks
from visiontales.model.tokens import IGNORE_INDEX, encode_targets
from visiontales.training import distributed
from visiontales.training.batching import PreparedData, collate_batch
from visiontales.training.callbacks import DEFAULT_CALLBACKS, TrainerCallback
from visiontales.training.checkpoint import TrainState, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from visiontales.training.config import TrainingConfig
from visiontales.training.record import training_record
from visiontales.training.shuffled_photos import with_shuffled_photos
from visiontales.utils import forked_rng, progress_bar, resolve_device, tf32_matmuls

if TYPE_CHECKING:
    from visiontales.model.story_model import StoryModel


class Trainer:
    """AdamW fine-tuning of a :class:`~visiontales.model.story_model.StoryModel` on a StoryDataset.

    CLIP runs once per unique image (features are cached); every epoch after that reads
    the cached features only. ``callbacks`` (:class:`~visiontales.training.callbacks.TrainerCallback`)
    run after the built-in ones; ``rl`` is the reinforcement step, e.g.
    :class:`visiontales.recipes.rl.SelfCritical`, weighted by ``config.rl_weight``.

    >>> import visiontales as vt
    >>> data = vt.sample_dataset("train").select(range(8))
    >>> model = vt.StoryModel.tiny(vocab_from=data)
    >>> cfg = vt.TrainingConfig(epochs=1, batch_size=4, lr=1e-3, progress=False,
    ...                         output_dir="/tmp/vt-doctest", num_samples=0)
    >>> history = vt.Trainer(model, data, config=cfg).train()
    >>> list(history.columns)
    ['step', 'epoch', 'loss', 'lr', 'eval_loss']
    """

    def __init__(self, model: "StoryModel", train_dataset, eval_dataset=None,
                 config: TrainingConfig | None = None, rl=None,
                 callbacks: Sequence[TrainerCallback] = ()):
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty: nothing to train on (see dataset.skipped)")
        self.model = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.config = cfg = config or TrainingConfig()
        self.rl = rl  # callable (model, batch, rows) -> RL loss tensor
        if cfg.rl_weight > 0 and rl is None:
            raise ValueError("TrainingConfig.rl_weight > 0 needs the RL step: "
                             "Trainer(..., rl=SelfCritical(CiderReward(train_dataset)))")
        if cfg.report_to:  # a missing extra fails now, not after extraction
            from visiontales.training.loggers import check_available
            check_available(cfg.report_to)
        self.callbacks = [cls() for cls in DEFAULT_CALLBACKS] + list(callbacks)
        # before anything is cached (with tuned blocks the cache holds the trunk's tokens) and
        # before DDP wraps the model (it all-reduces the gradients of what requires grad then)
        tune_clip_blocks(model, cfg.train_clip_blocks)
        self.device = distributed.init(cfg.device) or resolve_device(cfg.device)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.autocast_dtype = resolve_precision(cfg.precision, self.device)
        # how CLIP features are made and cached, for training, evaluation and samples alike
        self.extraction = dict(cache_dir=cfg.cache_dir, precision=cfg.precision,
                               progress=cfg.progress and self.rank == 0)
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None  # made by train()
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.train_data: PreparedData | None = None
        self.eval_data: PreparedData | None = None
        self.eval_shuffled: PreparedData | None = None  # eval_data, photos swapped (photo_check)

    # ---- preparation ---------------------------------------------------------------
    def prepare(self, dataset) -> PreparedData:
        """Features (one ``(N, D)`` tensor per example) and token ids, computed once.

        CLIP runs here (through the feature cache) and never again in the epochs. An
        ``instruction`` column (instruction tasks) replaces the model's prompt per row;
        rows may then hold different numbers of images (batches never mix them). Texts are
        cut to ``config.max_text_tokens`` and to the positions GPT-2 has left after the
        image prefix. Public so that your own loop (or a benchmark) trains on exactly what
        the Trainer trains on; :mod:`visiontales.training.batching` makes the batches from it.

        >>> import tempfile, visiontales as vt
        >>> from visiontales.training.batching import collate_batch
        >>> data = vt.sample_dataset("train").select(range(5))
        >>> model = vt.StoryModel.tiny(vocab_from=data)
        >>> config = vt.TrainingConfig(batch_size=2, device="cpu", progress=False, cache_dir=tempfile.mkdtemp())
        >>> trainer = vt.Trainer(model, data, config=config)
        >>> prepared, optimizer = trainer.prepare(data), trainer.create_optimizer()
        >>> len(prepared), tuple(prepared.features[0].shape)  # 3 photos, 64-d tiny CLIP
        (5, (3, 64))
        >>> idx = prepared.batches(2, shuffle=True)[0]
        >>> model.loss(**collate_batch(prepared, idx, model.tokenizer.eos_token_id)).backward()
        >>> optimizer.step()
        """
        frame = dataset.frame
        sequences = [list(p) for p in frame["image_paths"]]
        if any(not s for s in sequences):
            raise ValueError("every example needs at least one image path")
        paths = [p for seq in sequences for p in seq]
        if self.world > 1:  # each rank encodes its share into the shared cache, then all read it
            encoder = self.model.image_encoder(num_workers=self.config.num_workers, **self.extraction)
            encoder.precompute(paths, shard_index=self.rank, num_shards=self.world)
            distributed.barrier()
        flat = self.model.encode_images(paths, num_workers=self.config.num_workers, **self.extraction)
        flat = flat.to(self.device)
        features = list(flat.split([len(s) for s in sequences]))
        if "instruction" in frame.columns:
            prompts = [self.model.prompt_ids(t or None) for t in frame["instruction"]]
        else:
            prompts = [self.model.prompt_ids()] * len(frame)
        examples = encode_targets(self.model.tokenizer, prompts, list(frame["text"]),
                                  self.config.max_text_tokens,
                                  max_length=[self.model.token_budget(len(f)) for f in features])
        return PreparedData(features, examples, photo_ids=[tuple(p) for p in frame["photo_ids"]],
                            prompts=prompts)

    def epoch_batches(self, data: PreparedData, epoch: int, shuffle: bool = True):
        """This process's batches of one epoch, on the device, with their example ``index``."""
        bs = self.config.batch_size * (self.world if shuffle else 1)
        batches = data.batches(bs, shuffle=shuffle, seed=self.config.seed, epoch=epoch,
                               group_by_length=self.config.group_by_length)
        for idx in batches:
            share = True
            if shuffle and self.world > 1:  # same global batches as one process; this rank's share
                idx = idx[self.rank * self.config.batch_size:(self.rank + 1) * self.config.batch_size]
                if not idx:  # a short last batch: every rank must step, this one with weight 0
                    idx, share = batches[0][:1], False
            batch = collate_batch(data, idx, self.model.tokenizer.eos_token_id, self.device)
            batch["index"] = torch.tensor(idx if share else [-1])
            yield batch

    def configure_lm(self) -> None:
        """The config's LoRA adapter (``lora_r``), gradient checkpointing and ``freeze_lm``."""
        lora.configure_lm(self.model, self.config)

    def create_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the parameters that train (no weight decay on biases and LayerNorms);
        Hugging Face's name. :meth:`configure_lm` first (LoRA, ``freeze_lm``...); the image
        tower's ``train_clip_blocks`` train in groups of their own, at ``clip_lr``."""
        cfg, fused = self.config, {"fused": True} if self.device.type == "cuda" else {}
        self.configure_lm()
        groups: dict[tuple[bool, bool], list] = {(c, d): [] for c in (False, True) for d in (True, False)}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                no_decay = param.ndim < 2 or "ln" in name or "norm" in name
                groups[name.startswith("clip."), not no_decay].append(param)
        clip_lr = cfg.clip_lr or cfg.lr / 100
        return torch.optim.AdamW([{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
                                   "lr": clip_lr if clip else cfg.lr}
                                  for (clip, decay), params in groups.items() if params or not clip], **fused)

    def create_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up over ``warmup_steps``, then constant (the paper) or linear decay to 0."""
        cfg = self.config
        global_batch = cfg.batch_size * self.world
        steps_per_epoch = math.ceil(len(self.train_dataset) / global_batch / cfg.grad_accum_steps)
        total_steps, warmup, kind = steps_per_epoch * cfg.epochs, cfg.warmup_steps, cfg.scheduler

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if kind == "linear":
                return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
            return 1.0
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def wrap_model(self) -> torch.nn.Module:
        """The model on the device as the loop calls it: DDP across processes, compiled if asked."""
        model = self.model.to(self.device)
        if self.world > 1:  # gradients all-reduced by DDP; CLIP (frozen) is not part of it
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(model) if self.config.compile else model

    # ---- the loop ------------------------------------------------------------------
    def train(self, resume_from: str | os.PathLike | None = None) -> pd.DataFrame:
        """Train for ``config.epochs``; returns the history (step, epoch, loss, lr, eval_loss).

        ``resume_from`` is a checkpoint folder or ``"latest"`` (the newest under
        ``output_dir``); training goes on right after the checkpoint's last step.
        """
        cfg, state = self.config, self.state
        with forked_rng(cfg.seed, self.device), tf32_matmuls(self.device):
            self.configure_lm()  # before DDP, which must see the adapter's parameters
            model = self.wrap_model()
            self.optimizer = self.create_optimizer()
            self.scheduler = self.create_scheduler(self.optimizer)
            if resume_from is not None:  # before the features: the checkpoint's CLIP and statistics win
                state = self.resume(resume_from)
            self.train_data = self.prepare(self.train_dataset)
            self.eval_data = self.prepare(self.eval_dataset) if self.eval_dataset else None
            if not bool(self.model.feature_stats_fitted):
                self.model.fit_feature_stats(torch.cat(self.train_data.features))
            if state.rng is not None:  # after preparing the data: nothing in it can shift the stream
                torch.set_rng_state(state.rng)
            self.fire("on_train_begin")
            for epoch in range(state.epoch, cfg.epochs):
                self.model.train()
                batches = list(self.epoch_batches(self.train_data, epoch))
                state.epoch_batches = len(batches)
                bar = progress_bar(total=len(batches), initial=state.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                                   disable=not cfg.progress or self.rank > 0, leave=False)
                for batch in batches[state.batch:]:  # a resumed epoch skips what it had done
                    state.pending_losses.append(self.training_step(model, batch))
                    state.batch += 1
                    bar.update(1)
                    if state.batch % cfg.grad_accum_steps and state.batch < len(batches):
                        continue  # gradients accumulate over grad_accum_steps micro-batches
                    self.optimizer_step()
                    if state.step % cfg.log_every == 0 or state.batch == len(batches):
                        bar.set_postfix(loss=f"{self.log_losses():.3f}", refresh=False)
                    self.fire("on_step_end")
                bar.close()
                state.epoch, state.batch = epoch + 1, 0
                self.fire("on_epoch_end")
            if self.rank == 0:
                self.model.save_pretrained(Path(cfg.output_dir) / "final")
            distributed.barrier()
            self.fire("on_train_end")
        return self.history_frame()

    def training_step(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """Forward, loss (plus the RL term), backward of one micro-batch; returns the loss to log.

        ``model`` is the model as trained (DDP- or compile-wrapped by :meth:`wrap_model`).
        """
        cfg, index = self.config, batch.pop("index")
        with autocast(self.device, self.autocast_dtype):
            loss = model(**batch, return_logits=False).loss
            if self.rl is not None and cfg.rl_weight > 0 and self.state.epoch >= cfg.rl_start_epoch:
                # L = L_NLL + lambda * L_RL, eq. 4 of the instruction tuning and RL recipe
                rows = self.train_dataset.frame.iloc[index.tolist()]
                prompts = [self.train_data.prompts[i] for i in index.tolist()]
                loss = loss + cfg.rl_weight * self.rl(self.model, {**batch, "prompt_ids": prompts}, rows)
                self.state.rl_stats.append(dict(getattr(self.rl, "last_stats", {})))
        logged = loss.detach()
        if self.world > 1:
            # weight by target tokens so N ranks reproduce the one-process mean over the
            # global batch (DDP averages gradients, hence the factor world)
            tokens = (batch["labels"] != IGNORE_INDEX).sum().to(loss.dtype) * (index[0] >= 0)
            totals = distributed.all_reduce_sum(torch.stack([loss.detach() * tokens, tokens]))
            logged = totals[0] / totals[1]
            loss = loss * tokens * self.world / totals[1]
        (loss / cfg.grad_accum_steps).backward()
        return logged

    def optimizer_step(self) -> None:
        """Clip, step, schedule, zero the gradients; one more ``state.step``."""
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def log_losses(self) -> float:
        """One history row from the losses since the last one (the loop's only device sync)."""
        state = self.state
        mean = torch.stack(state.pending_losses).mean().item()
        if not math.isfinite(mean):
            raise self._non_finite(mean)
        logs = {"step": state.step, "epoch": state.epoch + 1, "loss": mean,
                "lr": self.scheduler.get_last_lr()[0], "eval_loss": float("nan")}
        state.pending_losses = []
        self.fire("on_log", logs=logs)
        state.history.append(logs)
        return mean

    def fire(self, hook: str, **kwargs) -> None:
        """Call ``hook`` (``"on_epoch_end"``...) on every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, self.state, **kwargs)

    # ---- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """A resumable checkpoint of the model, optimizer, scheduler and :class:`TrainState`."""
        cfg, state = self.config, self.state
        losses = [float(v) for v in state.pending_losses]
        if not all(math.isfinite(v) for v in losses):
            raise self._non_finite(losses[-1])
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not bool(torch.stack([torch.isfinite(p).all() for p in trainable]).all()):
            raise self._non_finite(float("nan"))  # the last step blew up the weights themselves
        if self.rank > 0:  # rank 0 writes; the weights are the same everywhere
            return Path(cfg.output_dir)
        path = save_checkpoint(Path(cfg.output_dir) / f"checkpoint-step{state.step}", self.model,
                               self.optimizer, self.scheduler, state, asdict(cfg))
        prune_checkpoints(cfg.output_dir, keep=cfg.keep_checkpoints)
        self.fire("on_save", path=path)
        return path

    def resume(self, resume_from: str | os.PathLike) -> TrainState:
        """Load a checkpoint (or ``"latest"`` under ``output_dir``) into the model and optimiser."""
        path = latest_checkpoint(self.config.output_dir) if str(resume_from) == "latest" else Path(resume_from)
        if path is None:
            raise FileNotFoundError(f"no checkpoint under {self.config.output_dir} to resume from")
        self.state = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.state.pending_losses = [torch.tensor(v, device=self.device) for v in self.state.pending_losses]
        return self.state

    def _non_finite(self, value: float) -> FloatingPointError:
        good = latest_checkpoint(self.config.output_dir)
        where = f"the last good checkpoint is {good} (resume_from='latest')" if good else "no checkpoint was saved"
        return FloatingPointError(f"loss became {value} at step {self.state.step}; training stopped and "
                                  f"{where}; lower the learning rate or check the data")

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """``eval_loss``, ``eval_loss_shuffled`` (``config.photo_check``, see
        :mod:`visiontales.training.shuffled_photos`) and ``config.eval_metrics``; calls ``on_evaluate``."""
        metrics = {"eval_loss": self.evaluate_loss(self.eval_data)}
        if self.config.photo_check:  # the same stories with the photos swapped between examples
            self.eval_shuffled = self.eval_shuffled or with_shuffled_photos(self.eval_data)
            if len(self.eval_shuffled):
                metrics["eval_loss_shuffled"] = self.evaluate_loss(self.eval_shuffled)
        if self.config.eval_metrics:
            metrics.update(self.evaluate_metrics())
        self.fire("on_evaluate", metrics=metrics)
        return metrics

    @torch.no_grad()
    def evaluate_loss(self, data: PreparedData | None = None) -> float:
        """Mean token-level loss on the eval set (weighted by target tokens)."""
        if data is None:
            if self.eval_dataset is None:
                raise ValueError("no eval_dataset was given")
            data = self.prepare(self.eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        total, count = torch.zeros((), device=self.device), 0
        for batch in self.epoch_batches(data, epoch=0, shuffle=False):
            batch.pop("index")
            tokens = int((batch["labels"] != IGNORE_INDEX).sum())
            with autocast(self.device, self.autocast_dtype):
                total += model.loss(**batch).float() * tokens
            count += tokens
        model.train(was_training)
        return float(total / max(count, 1))

    def evaluate_metrics(self) -> dict[str, float]:
        """``config.eval_metrics`` of greedy stories for the eval set (one per photo sequence),
        told from the eval set's prepared features (CLIP does not run again)."""
        from visiontales.evaluation.metrics import evaluate, metric_families, references_from_dataset
        from visiontales.evaluation.predictions import keys_for
        wanted = self.config.eval_metrics
        first_rows = keys_for(self.eval_dataset)  # one story per photo sequence: its first window
        stories = self.model.generate_from_features([self.eval_data.features[i] for i in first_rows.values()],
                                                    max_new_tokens=self.config.sample_max_new_tokens,
                                                    precision=self.config.precision)
        predictions = dict(zip(first_rows, stories))
        scores = evaluate(predictions, references_from_dataset(self.eval_dataset), metrics=metric_families(wanted))
        unknown = [name for name in wanted if name not in scores]
        if unknown:
            raise ValueError(f"eval_metrics {unknown} are not computed by evaluate(); it gives {sorted(scores)}")
        return {name: scores[name] for name in wanted}

    def training_record(self) -> dict:
        """How this run trained its model (config, data, last numbers): ``final/training.json``
        and what ``model.push_to_hub(..., training=trainer.training_record())`` puts on the card."""
        return training_record(self)

    # ---- results -------------------------------------------------------------------
    def history_frame(self) -> pd.DataFrame:
        """One row per ``log_every`` steps; eval columns at epoch ends; RL rewards when on.

        With ``Trainer(rl=SelfCritical(...))`` the columns ``reward_sample`` and
        ``reward_greedy`` are the mean rewards of the sampled and the greedy (baseline)
        stories over the row's steps (NaN before ``rl_start_epoch``); under DDP, rank 0's.
        """
        shuffled = ["eval_loss_shuffled"] if any("eval_loss_shuffled" in row for row in self.state.history) else []
        columns = ["step", "epoch", "loss", "lr", "eval_loss", *shuffled, *self.config.eval_metrics]
        columns += sorted({k for row in self.state.history for k in row} - set(columns))
        return pd.DataFrame(self.state.history, columns=columns)

    def plot_history(self, ax=None):
        """Training loss by step, eval loss at each epoch end, RL rewards (when logged) on a
        second axis; returns the figure (:func:`visiontales.training.plots.plot_history`)."""
        from visiontales.training.plots import plot_history
        return plot_history(self.history_frame(), ax=ax)
