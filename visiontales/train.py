"""Fine-tuning: the Trainer loop (its knobs are :class:`~visiontales.config.TrainingConfig`)."""
from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import distributed
from .batching import PreparedData, collate_batch
from .checkpoint import latest_checkpoint, load_training_state, prune_checkpoints, save_training_state
from .config import TrainingConfig
from .precision import autocast, resolve_precision
from .tokens import encode_targets
from .utils import resolve_device, seed_everything


def _mean_stats(rows: list[dict]) -> dict[str, float]:
    """Mean of each numeric key over ``rows`` (the RL stats of the steps of one history row).

    >>> _mean_stats([{"reward_sample": 1.0}, {"reward_sample": 3.0}])
    {'reward_sample': 2.0}
    """
    keys = sorted({k for row in rows for k, v in row.items() if isinstance(v, (int, float))})
    return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


class Trainer:
    """AdamW fine-tuning of a :class:`~visiontales.model.StoryModel` on a StoryDataset.

    CLIP runs once per unique image (features are cached); every epoch after that reads
    the cached features only.

    >>> import visiontales as vt
    >>> data = vt.sample_dataset("train").select(range(8))
    >>> model = vt.StoryModel.tiny(vocab_from=data)
    >>> cfg = vt.TrainingConfig(epochs=1, batch_size=4, lr=1e-3, progress=False,
    ...                         output_dir="/tmp/vt-doctest", num_samples=0)
    >>> history = vt.Trainer(model, data, config=cfg).train()
    >>> list(history.columns)
    ['step', 'epoch', 'loss', 'lr', 'eval_loss']
    """

    def __init__(self, model, train_dataset, eval_dataset=None, config: TrainingConfig | None = None,
                 rl=None):
        if len(train_dataset) == 0:
            raise ValueError("train_dataset is empty: nothing to train on (see dataset.skipped)")
        self.model = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.config = config or TrainingConfig()
        self.rl = rl  # callable (model, batch, rows) -> RL loss tensor, e.g. visiontales.rl.SelfCritical
        if self.config.rl_weight > 0 and rl is None:
            raise ValueError("TrainingConfig.rl_weight > 0 needs the RL step: "
                             "Trainer(..., rl=SelfCritical(CiderReward(train_dataset)))")
        self.device = distributed.init(self.config.device) or resolve_device(self.config.device)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.history: list[dict] = []
        self.global_step = 0
        self.epoch = 0
        self.best_value: float | None = None  # of config.best_metric, saved in output_dir/best
        self.best_epoch: int | None = None

    # ---- preparation ---------------------------------------------------------------
    def prepare(self, dataset) -> PreparedData:
        """Features (one ``(N, D)`` tensor per example) and token ids, computed once.

        CLIP runs here (through the feature cache) and never again in the epochs. An
        ``instruction`` column (instruction tasks) replaces the model's prompt per row;
        rows may then hold different numbers of images (batches never mix them). Texts are
        cut to ``config.max_text_tokens`` and to the positions GPT-2 has left after the
        image prefix. Public so that your own loop (or a benchmark) trains on exactly what
        the Trainer trains on; :mod:`visiontales.batching` makes the batches from it.

        >>> import tempfile, visiontales as vt
        >>> from visiontales.batching import collate_batch
        >>> data = vt.sample_dataset("train").select(range(5))
        >>> model = vt.StoryModel.tiny(vocab_from=data)
        >>> model.cache_dir, model.progress = tempfile.mkdtemp(), False
        >>> trainer = vt.Trainer(model, data, config=vt.TrainingConfig(batch_size=2, device="cpu"))
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
            self.model.image_encoder().precompute(paths, shard_index=self.rank, num_shards=self.world)
            distributed.barrier()
        flat = self.model.encode_images(paths).to(self.device)
        features = list(flat.split([len(s) for s in sequences]))
        if "instruction" in frame.columns:
            prompts = [self.model.prompt_ids(t or None) for t in frame["instruction"]]
        else:
            prompts = self.model.prompt_ids()
        examples = encode_targets(self.model.tokenizer, prompts, list(frame["text"]),
                                  self.config.max_text_tokens,
                                  max_length=[self.model.token_budget(len(f)) for f in features])
        return PreparedData(features, examples)

    def _batches(self, data: PreparedData, shuffle: bool, epoch: int):
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

    def create_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the parameters that train (no weight decay on biases and LayerNorms);
        Hugging Face's name. With ``config.freeze_lm`` it freezes GPT-2 first."""
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.model.lm.requires_grad_(not self.config.freeze_lm)
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "ln" in name or "norm" in name else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, **fused)

    def _lr_lambda(self, total_steps: int):
        warmup, kind = self.config.warmup_steps, self.config.scheduler

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            if kind == "linear":
                return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
            return 1.0
        return factor

    # ---- loop ----------------------------------------------------------------------
    def train(self, resume_from: str | os.PathLike | None = None) -> pd.DataFrame:
        """Train for ``config.epochs``; returns the history (step, epoch, loss, lr, eval_loss).

        ``resume_from`` is a checkpoint folder or ``"latest"`` (the newest under
        ``output_dir``); training continues from the epoch after it.
        """
        cfg = self.config
        seed_everything(cfg.seed)
        model = self.model.to(self.device)
        model.num_workers = cfg.num_workers
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        self._autocast_dtype = resolve_precision(cfg.precision, self.device)
        step_model = model
        if self.world > 1:  # gradients all-reduced by DDP; CLIP (frozen) is not part of it
            step_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        step_model = torch.compile(step_model) if cfg.compile else step_model
        self._loss = lambda **batch: step_model(**batch, loss_only=True)
        optimizer = self.create_optimizer()
        global_batch = cfg.batch_size * self.world
        steps_per_epoch = math.ceil(len(self.train_dataset) / global_batch / cfg.grad_accum_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda(steps_per_epoch * cfg.epochs))
        start_epoch, start_batch, window, rng_state = 0, 0, [], None
        self._rewards: list[dict] = []  # the RL step's stats (rl.last_stats) since the last row
        if resume_from is not None:  # before features: the checkpoint's CLIP and statistics win
            path = latest_checkpoint(cfg.output_dir) if str(resume_from) == "latest" else Path(resume_from)
            if path is None:
                raise FileNotFoundError(f"no checkpoint under {cfg.output_dir} to resume from")
            state = load_training_state(path, model, optimizer, scheduler)
            start_epoch, self.global_step, self.history = state["epoch"], state["step"], state["history"]
            start_batch, rng_state = state.get("batch", 0), state["rng"]
            window = [torch.tensor(v, device=self.device) for v in state.get("window", [])]
            self._rewards = state.get("rewards", [])
            if cfg.best_metric:  # the best so far is in the history; output_dir/best already holds it
                seen = [r[cfg.best_metric] for r in self.history
                        if math.isfinite(r.get(cfg.best_metric, float("nan")))]
                if seen:
                    self.best_value = min(seen) if cfg.best_metric == "eval_loss" else max(seen)
        train_data = self.prepare(self.train_dataset)
        eval_data = self.prepare(self.eval_dataset) if self.eval_dataset is not None and len(self.eval_dataset) else None
        if not bool(model.feature_stats_fitted):
            model.fit_feature_stats(torch.cat(train_data.features))
        if rng_state is not None:  # after preparing the data: nothing in it can shift the stream
            torch.set_rng_state(rng_state)
        self._optim = (optimizer, scheduler)
        for epoch in range(start_epoch, cfg.epochs):
            self.epoch = epoch
            self._train_epoch(train_data, epoch, start_batch, window)
            start_batch, window = 0, []
            eval_loss = self.evaluate_loss(eval_data) if eval_data is not None and cfg.eval_every_epoch else float("nan")
            if self.history:
                self.history[-1]["eval_loss"] = eval_loss
                if cfg.eval_metrics and self.eval_dataset is not None and len(self.eval_dataset):
                    self.history[-1].update(self.evaluate_metrics())
                if cfg.best_metric:
                    self._keep_best(self.history[-1])
            if cfg.num_samples and self.eval_dataset is not None and len(self.eval_dataset) and self.rank == 0:
                self._print_samples(epoch)
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0 and epoch + 1 < cfg.epochs:
                self._checkpoint(epoch + 1, 0, [])
        if self.rank == 0:
            model.save_pretrained(Path(cfg.output_dir) / "final")
        distributed.barrier()
        return self.history_frame()

    def _checkpoint(self, epoch: int, batch: int, window: list[torch.Tensor]) -> Path:
        """Save a resumable checkpoint at ``batch`` micro-batches into ``epoch`` (0-based)."""
        losses = [float(v) for v in window]  # the pending history window, exact as float64
        if not all(math.isfinite(v) for v in losses):
            raise self._non_finite(losses[-1])
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not bool(torch.stack([torch.isfinite(p).all() for p in trainable]).all()):
            raise self._non_finite(float("nan"))  # the last step blew up the weights themselves
        optimizer, scheduler = self._optim
        if self.rank > 0:  # rank 0 writes; the weights are the same everywhere
            return Path(self.config.output_dir)
        path = save_training_state(
            Path(self.config.output_dir) / f"checkpoint-step{self.global_step}", self.model,
            optimizer, scheduler, epoch, self.global_step, self.history, asdict(self.config),
            extra={"batch": batch, "window": losses, "rewards": self._rewards})
        prune_checkpoints(self.config.output_dir, keep=self.config.keep_checkpoints)
        return path

    def _non_finite(self, value: float) -> FloatingPointError:
        good = latest_checkpoint(self.config.output_dir)
        where = f"the last good checkpoint is {good} (resume_from='latest')" if good else "no checkpoint was saved"
        return FloatingPointError(f"loss became {value} at step {self.global_step}; training stopped and "
                                  f"{where}; lower the learning rate or check the data")

    def _train_epoch(self, data, epoch: int, start_batch: int = 0, window=None) -> None:
        cfg, model = self.config, self.model
        optimizer, scheduler = self._optim
        model.train()
        batches = list(self._batches(data, shuffle=True, epoch=epoch))
        bar = tqdm(total=len(batches), initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not cfg.progress or self.rank > 0, leave=False)
        window = list(window or [])  # losses since the last history row, kept on device
        for i in range(start_batch, len(batches)):  # a resumed epoch skips what it had done
            batch = batches[i]
            index = batch.pop("index")
            with autocast(self.device, self._autocast_dtype):
                loss = self._loss(**batch)
                if self.rl is not None and cfg.rl_weight > 0 and epoch >= cfg.rl_start_epoch:
                    # seed 000, eq. 4: L = L_NLL + lambda * L_RL
                    rows = self.train_dataset.frame.iloc[index.tolist()]
                    loss = loss + cfg.rl_weight * self.rl(model, batch, rows)
                    self._rewards.append(dict(getattr(self.rl, "last_stats", {})))
            if self.world > 1:
                # weight by target tokens so N ranks reproduce the one-process mean over the
                # global batch (DDP averages gradients, hence the factor world)
                tokens = (batch["labels"] != -100).sum().to(loss.dtype) * (index[0] >= 0)
                totals = distributed.all_reduce_sum(torch.stack([loss.detach() * tokens, tokens]))
                logged = totals[0] / totals[1]
                loss = loss * tokens * self.world / totals[1]
            else:
                logged = loss.detach()
            (loss / cfg.grad_accum_steps).backward()
            window.append(logged)
            bar.update(1)
            last = i + 1 == len(batches)
            if (i + 1) % cfg.grad_accum_steps and not last:
                continue
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            if self.global_step % cfg.log_every == 0 or last:
                mean = torch.stack(window).mean().item()  # the only sync, once per log row
                if not math.isfinite(mean):
                    raise self._non_finite(mean)
                row = {"step": self.global_step, "epoch": epoch + 1, "loss": mean,
                       "lr": scheduler.get_last_lr()[0], "eval_loss": float("nan")}
                row.update(_mean_stats(self._rewards))
                self.history.append(row)
                bar.set_postfix(loss=f"{mean:.3f}")
                window, self._rewards = [], []
            if cfg.save_steps and self.global_step % cfg.save_steps == 0 and not last:
                self._checkpoint(epoch, i + 1, window)
        bar.close()

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
        dtype = resolve_precision(self.config.precision, self.device)
        for batch in self._batches(data, shuffle=False, epoch=0):
            batch.pop("index")
            tokens = int((batch["labels"] != -100).sum())
            with autocast(self.device, dtype):
                total += model.loss(**batch).float() * tokens
            count += tokens
        model.train(was_training)
        return float(total / max(count, 1))

    def evaluate_metrics(self) -> dict[str, float]:
        """``config.eval_metrics`` of greedy stories for the eval set (one per photo sequence)."""
        from .metrics import METRICS, evaluate, references_from_dataset
        from .predictions import predict
        wanted = self.config.eval_metrics
        families = {m for m in METRICS for name in wanted
                    if name.lower().startswith(m.lower()) or (m == "reference_free" and name in
                                                               ("distinct-1", "distinct-2", "repetition", "length"))}
        predictions = predict(self.model, self.eval_dataset, max_new_tokens=self.config.sample_max_new_tokens)
        scores = evaluate(predictions, references_from_dataset(self.eval_dataset), metrics=sorted(families))
        unknown = [name for name in wanted if name not in scores]
        if unknown:
            raise ValueError(f"eval_metrics {unknown} are not computed by evaluate(); it gives {sorted(scores)}")
        return {name: scores[name] for name in wanted}

    def _keep_best(self, row: dict) -> None:
        name = self.config.best_metric
        value = row.get(name, float("nan"))
        if not math.isfinite(value):
            return
        if self.best_value is None or (value < self.best_value if name == "eval_loss" else value > self.best_value):
            self.best_value, self.best_epoch = value, row["epoch"]
            if self.rank == 0:
                self.model.save_pretrained(Path(self.config.output_dir) / "best")

    def _print_samples(self, epoch: int) -> None:
        frame = self.eval_dataset.frame.head(self.config.num_samples)
        stories = self.model.generate([list(p) for p in frame["image_paths"]],
                                      max_new_tokens=self.config.sample_max_new_tokens)
        for story, ref in zip(stories, frame["text"]):
            tqdm.write(f"[epoch {epoch + 1}] generated: {story}\n           reference: {ref}")

    # ---- results -------------------------------------------------------------------
    def history_frame(self) -> pd.DataFrame:
        """One row per ``log_every`` steps; eval columns at epoch ends; RL rewards when on.

        With ``Trainer(rl=SelfCritical(...))`` the columns ``reward_sample`` and
        ``reward_greedy`` are the mean rewards of the sampled and the greedy (baseline)
        stories over the row's steps (NaN before ``rl_start_epoch``); under DDP, rank 0's.
        """
        columns = ["step", "epoch", "loss", "lr", "eval_loss", *self.config.eval_metrics]
        columns += sorted({k for row in self.history for k in row} - set(columns))
        return pd.DataFrame(self.history, columns=columns)

    def plot_history(self, ax=None):
        """Training loss by step, eval loss at each epoch end, RL rewards (when logged) on a
        second axis; returns the figure."""
        import matplotlib.pyplot as plt
        frame = self.history_frame()
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        ax.plot(frame["step"], frame["loss"], label="train loss")
        evals = frame.dropna(subset=["eval_loss"])
        if len(evals):
            ax.plot(evals["step"], evals["eval_loss"], "o-", label="eval loss")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("cross-entropy per token")
        ax.set_title("visiontales training")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        rewards = {"reward_sample": ("tab:green", "reward, sampled"),
                   "reward_greedy": ("tab:red", "reward, greedy (baseline)")}
        shown = [name for name in rewards if name in frame.columns and frame[name].notna().any()]
        if shown:  # the RL step: what the reward did, on its own scale
            twin = ax.twinx()
            for name in shown:
                rows = frame.dropna(subset=[name])
                color, label = rewards[name]
                twin.plot(rows["step"], rows[name], color=color, alpha=0.7, label=label)
            twin.set_ylabel("reward")
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels)
        fig.tight_layout()
        return fig


def train_tiny_model(prefix: str = "sequence", seed: int = 0, output_dir: str | os.PathLike | None = None,
                     train_dataset=None, eval_dataset=None, **overrides) -> "StoryModel":
    """The offline sample model: ``StoryModel.tiny`` trained with ``TrainingConfig.tiny()``.

    The one recipe behind the demo, the demo page, the quickstart, the examples and the
    tests. ``seed`` is ``TrainingConfig.seed`` (data order and dropout; the model starts
    from the same weights); ``overrides`` change the config (``epochs=3`` for a quick run).
    Without ``output_dir`` the run's files go to a temporary folder that is removed.

    >>> model = train_tiny_model(epochs=1, progress=False)  # doctest: +SKIP
    """
    import tempfile

    from .data import sample_dataset
    from .model import StoryModel
    train = train_dataset if train_dataset is not None else sample_dataset("train")
    model = StoryModel.tiny(vocab_from=train, prefix=prefix)
    with tempfile.TemporaryDirectory(prefix="visiontales-tiny-") as tmp:
        config = TrainingConfig.tiny(seed=seed, output_dir=str(output_dir or tmp),
                                     **{"save_every": 0, **overrides})
        Trainer(model, train, eval_dataset, config).train()
    return model
