"""StoryModel: the image tower -> prefix mapper -> causal language model, its loss and generation.

Building the parts is :mod:`~visiontales.model.backbones`' job, image features and their
cache :mod:`~visiontales.model.features`', the saved folder :mod:`~visiontales.model.saving`'s
and the Hub :mod:`~visiontales.model.hub`'s; the methods of the same names here call them.
"""
from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from visiontales.model import backbones, hub, saving
from visiontales.model.config import DEFAULT_PROMPT, StoryModelConfig
from visiontales.model.features import ImageEncoder, ImageEncoders, ImageLike
from visiontales.model.precision import autocast, resolve_precision
from visiontales.model.prefix import build_mapper
from visiontales.model.tower import TowerOutput, tune_clip_blocks
from visiontales.model.tokens import IGNORE_INDEX
from visiontales.utils import forked_rng, tiny_recipe, write_json


class StoryModel(nn.Module):
    """CLIP image features as a language-model prefix, followed by a text prompt, then the story.

    Build one with :meth:`from_components` (real weights) or :meth:`tiny` (offline):

    >>> import visiontales as vt
    >>> data = vt.sample_dataset("train")
    >>> model = vt.StoryModel.tiny(vocab_from=data, prefix="sequence")
    >>> story = model.generate([list(data[0]["image_paths"])], max_new_tokens=5)[0]
    >>> isinstance(story, str)
    True
    """

    def __init__(self, clip_model: nn.Module, preprocess, lm: nn.Module, tokenizer,
                 config: StoryModelConfig):
        super().__init__()
        self.config = config
        self.clip = clip_model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.lm = lm
        self.tokenizer = tokenizer
        self.tower = TowerOutput.of(config).check(self.clip.visual)  # pooled or patches; tuned blocks
        shape = self.tower.feature_shape(self.clip.visual)  # (D,), or (1 + g*g, W) for patches
        self.mapper = build_mapper(config, shape[-1], backbones.lm_width(lm))
        # training-set statistics of the CLIP features; CLIP features of one dataset are
        # nearly parallel, and standardising them is what makes the images matter
        self.register_buffer("feature_mean", torch.zeros(shape))
        self.register_buffer("feature_std", torch.ones(shape))
        self.register_buffer("feature_stats_fitted", torch.tensor(False))
        # this model's image encoders behind the feature cache, kept between calls
        self.encoders = ImageEncoders(self.clip, preprocess, config.clip, config.clip_pretrained, self.tower)
        self.eval()  # like transformers' from_pretrained: inference mode until a Trainer says otherwise

    # ---- factories -----------------------------------------------------------------
    @classmethod
    def from_components(cls, clip: str = "ViT-B-32", clip_pretrained: str | None = "openai",
                        lm: str = "gpt2", prefix: str = "mean", prefix_length: int = 10,
                        prompt: str = DEFAULT_PROMPT, cache_dir: str | None = None,
                        patch_grid: int = 4) -> "StoryModel":
        """Real CLIP (open_clip) + a causal LM (transformers); both download once, then load offline.

        ``clip`` is any open_clip name or ``local-dir:FOLDER``, ``clip_pretrained`` a tag or a
        local weights file; ``lm`` any ``AutoModelForCausalLM`` Hub id or local folder (GPT-2,
        SmolLM2/Llama, Qwen2.5, Pythia, OPT); ``patch_grid`` the ``g x g`` patch tokens per photo
        of ``prefix="patches"``. Raises
        :class:`~visiontales.model.backbones.WeightsUnavailableError` with one sentence on what
        to do when weights cannot be had.
        """
        config = StoryModelConfig(clip=clip, clip_pretrained=clip_pretrained, lm=lm,
                                  prefix=prefix, prefix_length=prefix_length, prompt=prompt, patch_grid=patch_grid)
        return cls.from_config(config, cache_dir=cache_dir)

    @classmethod
    def from_config(cls, config: StoryModelConfig, cache_dir: str | None = None) -> "StoryModel":
        """A new model as ``config`` describes it: pretrained CLIP and GPT-2, a fresh prefix mapper.

        A tiny config (``lm="tiny-gpt2"``) gives :meth:`tiny` with the shipped data's vocabulary.

        >>> config = StoryModelConfig(clip="visiontales-tiny-clip", clip_pretrained=None,
        ...                           lm="tiny-gpt2", prefix="sequence", prefix_length=4)
        >>> StoryModel.from_config(config).config == config
        True
        """
        if config.lm == backbones.TINY_LM:
            if config.clip != backbones.TINY_CLIP or config.clip_pretrained is not None:
                raise ValueError(f"lm={backbones.TINY_LM!r} goes with clip={backbones.TINY_CLIP!r} and no "
                                 "pretrained CLIP weights: use StoryModel.tiny(...)")
            model = cls.tiny(prefix=config.prefix, prefix_length=config.prefix_length, prompt=config.prompt,
                             patch_grid=config.patch_grid)
            tune_clip_blocks(model, config.clip_tuned_blocks)
            return model
        clip_model, preprocess = backbones.load_clip(config.clip, config.clip_pretrained, cache_dir)
        lm_model, tokenizer = backbones.load_lm(config.lm)
        return cls(clip_model, preprocess, lm_model, tokenizer, config)

    @classmethod
    def tiny(cls, vocab_from=None, seed: int = 0, prefix: str = "mean", prefix_length: int | None = None,
             prompt: str = DEFAULT_PROMPT, patch_grid: int = 4, **lm_overrides: Any) -> "StoryModel":
        """A small randomly initialised CLIP and GPT-2, fully offline, same code paths.

        Sizes come from the tiny recipe (``recipes/tiny/recipe.json``). ``vocab_from`` is a
        :class:`~visiontales.data.dataset.StoryDataset` (or a list of texts) whose text
        trains the tokenizer (default: the shipped sample data); ``lm_overrides`` change the
        GPT-2 config (``n_layer``, ``n_embd``...). ``seed`` fixes the weights; the caller's
        own random streams are left as they were.
        """
        if vocab_from is None:
            from visiontales.data.sample import sample_dataset
            vocab_from = sample_dataset("train")
        texts = list(getattr(vocab_from, "texts", vocab_from)) + [prompt]
        if prefix_length is None:
            prefix_length = tiny_recipe()["prefix_length"]
        config = StoryModelConfig(clip=backbones.TINY_CLIP, clip_pretrained=None, lm=backbones.TINY_LM,
                                  prefix=prefix, prefix_length=prefix_length, prompt=prompt, patch_grid=patch_grid)
        with forked_rng(seed):
            clip_model, preprocess = backbones.load_clip(backbones.TINY_CLIP, None)
            lm_model, tokenizer = backbones.tiny_lm(texts, seed=seed, **lm_overrides)
            torch.manual_seed(seed + 1)
            return cls(clip_model, preprocess, lm_model, tokenizer, config)

    # ---- state ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    def train(self, mode: bool = True) -> "StoryModel":
        super().train(mode)
        self.clip.eval()  # frozen: never dropout or batch-stat updates in CLIP
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.forget_clip_identity()
        return result

    def forget_clip_identity(self) -> None:
        """CLIP weights may have changed: the feature cache's key must follow."""
        self.encoders.clear()

    @property
    def clip_identity(self) -> str:
        """Identity of the image encoder, the feature cache's key."""
        return self.encoders.identity

    def image_encoder(self, cache_dir: str | os.PathLike | None = None, batch_size: int = 64,
                      progress: bool = True, num_workers: int = 0, precision: str = "fp32") -> ImageEncoder:
        """This model's CLIP behind the feature cache (see :class:`~visiontales.model.features.ImageEncoders`).

        ``cache_dir`` None: ``$VISIONTALES_CACHE`` or ``~/.cache/visiontales``;
        ``num_workers`` DataLoader processes decode images; ``precision="auto"`` encodes
        with bf16 weights where the hardware computes bf16 natively.
        """
        return self.encoders.get(cache_dir, batch_size=batch_size, progress=progress,
                                 num_workers=num_workers, precision=precision)

    def encode_images(self, images: Sequence[ImageLike], cache_dir: str | os.PathLike | None = None,
                      progress: bool = True, num_workers: int = 0, precision: str = "fp32") -> torch.Tensor:
        """Cached, L2-normalised CLIP features ``(N, D)`` of images (paths or PIL)."""
        return self.image_encoder(cache_dir, progress=progress, num_workers=num_workers,
                                  precision=precision).encode(list(images))

    @torch.no_grad()
    def fit_feature_stats(self, features: torch.Tensor) -> None:
        """Store the mean and std of training features ``(N, ..., D)`` (as cached) for standardisation."""
        features = torch.cat([self.tower.finish(self.clip.visual, f) for f in features.split(256)])
        features = features.reshape(-1, *self.feature_mean.shape).float()  # patches: per token
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-6) if len(features) > 1
                               else torch.ones_like(self.feature_std))
        self.feature_stats_fitted.fill_(True)

    @property
    def max_positions(self) -> int:
        """Positions the language model takes (1024 for GPT-2; capped at
        :data:`~visiontales.model.backbones.MAX_POSITIONS`): prefix + prompt + text must fit."""
        return backbones.lm_positions(self.lm)

    def token_budget(self, num_images: int) -> int:
        """Tokens left for ``prompt + text + EOS`` after the prefix of ``num_images`` images.

        Pass it as ``encode_targets(..., max_length=...)`` so no target is longer than GPT-2
        can take (position embeddings stop at :attr:`max_positions`).
        """
        return self.max_positions - self.mapper.num_tokens(num_images)

    # ---- forward -------------------------------------------------------------------
    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        text = self.config.prompt if prompt is None else prompt
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prefix_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` CLIP features (``(B, N, T, W)`` patch or trunk tokens) -> ``(B, P, E)``
        GPT-2 input embeddings, through the image tower's tuned blocks when it has any."""
        features = self.tower.finish(self.clip.visual, features)
        standardized = (features - self.feature_mean) / self.feature_std
        return self.mapper(standardized.to(self.feature_mean.dtype))

    def forward(self, features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, return_logits: bool = True) -> CausalLMOutput:
        """``[prefix][prompt + text + EOS]`` through the language model, as a ``CausalLMOutput``.

        ``features``: (B, N, D); ``input_ids``/``attention_mask``/``labels``: (B, T) from
        :func:`visiontales.model.tokens.collate` (labels -100 on prompt and padding).
        ``logits`` ``(B, P+T, V)`` cover every position; ``loss`` (with ``labels``) is the
        mean cross-entropy over target tokens. ``return_logits=False`` is the training path:
        the loss alone (:meth:`loss`), with the LM head run on target positions only, called
        through ``forward`` so DistributedDataParallel sees it.
        """
        if labels is not None and not return_logits:
            return CausalLMOutput(loss=self.loss(features, input_ids, attention_mask, labels))
        embeds, mask, targets = self._inputs(features, input_ids, attention_mask, labels)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, P+T, V)
        loss = None
        if targets is not None:  # position j predicts token j + 1
            keep = targets[:, 1:] != IGNORE_INDEX
            loss = torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), targets[:, 1:][keep])
        return CausalLMOutput(loss=loss, logits=logits)

    def _inputs(self, features, input_ids, attention_mask, labels=None):
        """``[prefix][tokens]`` embeddings ``(B, P+T, E)``, their mask, labels -100 on the prefix."""
        prefix = self.prefix_embeddings(features)  # (B, P, E)
        tokens = self.lm.get_input_embeddings()(input_ids)  # (B, T, E)
        batch, plen = prefix.shape[:2]
        if plen + input_ids.shape[1] > self.max_positions:  # else an IndexError, or a CUDA assert
            raise ValueError(f"{plen} prefix + {input_ids.shape[1]} token positions exceed the "
                             f"language model's {self.max_positions}: encode targets with "
                             "max_length=model.token_budget(num_images)")
        embeds = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)
        mask = torch.cat([attention_mask.new_ones(batch, plen), attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((batch, plen), IGNORE_INDEX), labels], dim=1)
        return embeds, mask, labels

    def loss(self, features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy over target tokens, computing logits only where labels are.

        The LM head (768 x 50257 for GPT-2) costs about as much per token as the whole
        transformer; prefix, prompt and padding positions carry no loss, so they skip it.
        """
        embeds, mask, targets = self._inputs(features, input_ids, attention_mask, labels)
        hidden = self.lm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        targets = targets[:, 1:]
        keep = targets != IGNORE_INDEX  # position j predicts token j + 1
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep])  # (K, V)
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])

    # ---- generation ----------------------------------------------------------------
    @torch.no_grad()
    def generate(self, image_sequences: Sequence[Sequence[ImageLike]], max_new_tokens: int = 60,
                 num_beams: int = 1, do_sample: bool = False, top_p: float = 0.9,
                 temperature: float = 1.0, prompt: str | None = None, batch_size: int = 16,
                 seed: int | None = None, min_new_tokens: int = 0, precision: str = "fp32",
                 progress: bool = True, cache_dir: str | os.PathLike | None = None) -> list[str]:
        """One story per image sequence (each a list of paths or PIL images).

        Greedy by default; ``num_beams > 1`` for beam search, ``do_sample=True`` for
        nucleus sampling (``top_p``, ``temperature``; ``seed`` makes it repeatable, on its own
        random stream: the caller's is left as it was).
        Batched, with the language model's KV cache; stops at EOS, but not before
        ``min_new_tokens``. ``prompt`` replaces the model's prompt (``None``:
        ``config.prompt``; ``""``: none): a model trained on an instruction mixture captions,
        continues or tells as asked, e.g.
        ``prompt=visiontales.recipes.instructions.instruction_prompt("caption")`` with one
        photo per sequence. ``precision="auto"`` uses bf16 autocast where native;
        ``progress`` and ``cache_dir`` are those of :meth:`encode_images`.
        """
        if isinstance(image_sequences, (str, bytes)) or not all(
                isinstance(s, (list, tuple)) for s in image_sequences):
            raise TypeError("image_sequences must be a list of sequences, e.g. [['a.jpg', 'b.jpg']]")
        for i, seq in enumerate(image_sequences):
            if not seq:
                raise ValueError(f"image sequence {i} is empty")
        if not image_sequences:
            return []
        flat = [im for seq in image_sequences for im in seq]
        features = self.encode_images(flat, cache_dir, progress=progress, precision=precision)
        return self.generate_from_features(
            list(features.split([len(seq) for seq in image_sequences])), max_new_tokens=max_new_tokens,
            num_beams=num_beams, do_sample=do_sample, top_p=top_p, temperature=temperature, prompt=prompt,
            batch_size=batch_size, seed=seed, min_new_tokens=min_new_tokens, precision=precision)

    @torch.no_grad()
    def generate_from_features(self, features: Sequence[torch.Tensor], max_new_tokens: int = 60,
                               num_beams: int = 1, do_sample: bool = False, top_p: float = 0.9,
                               temperature: float = 1.0, prompt: str | None = None, batch_size: int = 16,
                               seed: int | None = None, min_new_tokens: int = 0,
                               precision: str = "fp32") -> list[str]:
        """:meth:`generate` from features already encoded: one ``(N, D)`` tensor per story.

        What the Trainer's samples and eval metrics use, on the eval set's prepared features.
        """
        was_training = self.training
        self.eval()
        prompt_ids = torch.tensor(self.prompt_ids(prompt), dtype=torch.long, device=self.device)
        stories: list[str | None] = [None] * len(features)
        by_length: dict[int, list[int]] = {}
        for i, feats in enumerate(features):
            by_length.setdefault(len(feats), []).append(i)
        dtype = resolve_precision(precision, self.device)
        with autocast(self.device, dtype), forked_rng(seed, self.device) if seed is not None else nullcontext():
            for rows in by_length.values():  # same length -> same prefix size, no padding needed
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start:start + batch_size]
                    feats = torch.stack([features[i] for i in chunk]).to(self.device)
                    out = self.generate_ids(feats, prompt_ids, max_new_tokens, num_beams=num_beams,
                                            do_sample=do_sample, top_p=top_p, temperature=temperature,
                                            min_new_tokens=min_new_tokens)
                    for i, ids in zip(chunk, out.tolist()):
                        stories[i] = self.decode(ids)
        self.train(was_training)
        return stories  # type: ignore[return-value]

    @torch.no_grad()
    def generate_ids(self, features: torch.Tensor, prompt_ids: torch.Tensor, max_new_tokens: int,
                     num_beams: int = 1, do_sample: bool = False, top_p: float = 1.0,
                     temperature: float = 1.0, min_new_tokens: int = 0) -> torch.Tensor:
        """New token ids ``(B, <= max_new_tokens)`` after ``[prefix][prompt]``, EOS-padded.

        The decoding step under :meth:`generate` and the RL step's sampling: ``features``
        ``(B, N, D)`` already encoded, one ``prompt_ids`` for all rows; the KV cache.
        """
        prefix = self.prefix_embeddings(features)
        prompt_emb = self.lm.get_input_embeddings()(prompt_ids)
        embeds = torch.cat([prefix.to(prompt_emb.dtype), prompt_emb.expand(len(features), -1, -1)], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        room = self.max_positions - embeds.shape[1]
        if room < 1:
            raise ValueError(f"prefix + prompt take {embeds.shape[1]} positions; the language model "
                             f"has {self.max_positions}: use fewer images or a shorter prompt")
        if max_new_tokens > room:
            warnings.warn(f"max_new_tokens={max_new_tokens} cut to {room}: prefix + prompt take "
                          f"{embeds.shape[1]} of the language model's {self.max_positions} positions",
                          stacklevel=2)
            max_new_tokens, min_new_tokens = room, min(min_new_tokens, room)
        eos = self.tokenizer.eos_token_id
        return self.lm.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            num_beams=num_beams, do_sample=do_sample, min_new_tokens=min_new_tokens,
            top_p=top_p if do_sample else None, temperature=temperature if do_sample else None,
            top_k=0 if do_sample else None, pad_token_id=eos, eos_token_id=eos, use_cache=True)

    def decode(self, ids: Sequence[int]) -> str:
        """Generated ids -> the story: up to the first EOS, special tokens dropped, spaces tidied."""
        ids, eos = list(ids), self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[:ids.index(eos)]
        return " ".join(self.tokenizer.decode(ids, skip_special_tokens=True).split())

    # ---- persistence (the folder format is in visiontales.model.saving) -----------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a folder people can open: JSON config, safetensors, ``lm/`` (plain GPT-2).

        ``lm/`` loads with ``AutoModelForCausalLM.from_pretrained(dir + "/lm")``. CLIP
        weights are saved in ``clip/`` unless they come from a pretrained tag, which is
        recorded instead. The folder is written beside the target and renamed into place.
        """
        return saving.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, cache_dir: str | None = None,
                        revision: str | None = None) -> "StoryModel":
        """Load a folder written by :meth:`save_pretrained`, or a Hub repo id (``"user/repo"``).

        A Hub model is fetched once into the Hugging Face cache (``cache_dir``, default
        ``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1`` the cached copy is used. ``revision``: a
        branch, tag or commit of the Hub repo. See :mod:`visiontales.model.hub`.
        """
        return saving.load_pretrained(cls, name_or_path, cache_dir=cache_dir, revision=revision)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    training: dict | None = None) -> str:
        """Upload the :meth:`save_pretrained` folder and a model card to ``repo_id``; returns
        the commit URL. ``training``: the record of the run the card describes
        (``trainer.training_record()``, or a ``training.json`` read back). See
        :mod:`visiontales.model.hub`.
        """
        import tempfile
        with tempfile.TemporaryDirectory(prefix="visiontales-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            if training is not None:
                write_json(folder / hub.TRAINING_NAME, training)
            return hub.push_folder(folder, repo_id, private=private, token=token, revision=revision,
                                   commit_message=commit_message)

    def load_weights(self, directory: str | os.PathLike) -> "StoryModel":
        """Fill this model in place from a saved folder or checkpoint of the same shape."""
        saving.load_weights(self, Path(directory))
        return self
