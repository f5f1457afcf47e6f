"""What the image tower hands the prefix, and where it is cut to train its top blocks.

Two outputs: CLIP's pooled embedding ``(D,)`` per photo (the ``mean`` and ``sequence``
prefixes), or the tower's class token and its patch tokens average-pooled to a ``g x g``
grid, ``(1 + g*g, W)`` per photo (``patches``; the tower's last tokens after its final norm,
from open_clip's ``forward_intermediates``). Every vector is L2-normalised.

With ``tuned_blocks = k`` the tower is cut before its last k blocks: the feature cache holds
the frozen trunk's tokens ``(1 + H*W, W)`` per photo, which no training step can make stale,
and :meth:`TowerOutput.finish` runs the k tuned blocks and the tower's tail (final norm,
pooling, projection) wherever features are used: the training loss, evaluation,
generation, the demo page. Only open_clip's VisionTransformer towers have blocks to cut and
patch tokens to give; other towers get a clear error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def vit_blocks(visual: nn.Module, why: str) -> nn.ModuleList:
    """The residual blocks of an open_clip VisionTransformer, or a ValueError naming ``why``."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(visual, "output_tokens"):
        raise ValueError(f"{why} needs an open_clip VisionTransformer image tower (with patch tokens "
                         f"and transformer blocks); this model's is a {type(visual).__name__}")
    return blocks


def pool_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, H*W, C)`` patch tokens averaged to ``(B, grid*grid, C)`` (adaptive pooling).

    >>> pool_grid(torch.arange(16.).view(1, 16, 1), 2).flatten().tolist()
    [2.5, 4.5, 10.5, 12.5]
    """
    batch, count, channels = tokens.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"{count} patch tokens are not a square grid")
    if grid > side:
        raise ValueError(f"patch_grid {grid} is finer than the image tower's {side} x {side} patches")
    square = tokens.transpose(1, 2).reshape(batch, channels, side, side)
    return nn.functional.adaptive_avg_pool2d(square, grid).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class TowerOutput:
    """Which features a model's image tower gives, and what its feature cache holds.

    ``patch_grid`` None: the pooled embedding; ``g``: ``g x g`` patch tokens. ``tuned_blocks``:
    the last blocks that train (0: the frozen tower of the paper).

    >>> from visiontales.model.backbones import TINY_CLIP, load_clip
    >>> visual = load_clip(TINY_CLIP, None)[0].visual
    >>> out = TowerOutput(patch_grid=2, tuned_blocks=1).check(visual)
    >>> pixels = torch.randn(3, 3, 64, 64)
    >>> cached = out.cached(visual, pixels)          # the frozen trunk's tokens
    >>> tuple(cached.shape), tuple(out.finish(visual, cached).shape)
    ((3, 17, 64), (3, 5, 64))
    """
    patch_grid: int | None = None
    tuned_blocks: int = 0

    @classmethod
    def of(cls, config) -> "TowerOutput":
        """The output a :class:`~visiontales.model.config.StoryModelConfig` asks for."""
        return cls(config.patch_grid if config.prefix == "patches" else None, config.clip_tuned_blocks)

    def check(self, visual: nn.Module) -> "TowerOutput":
        """Raise a ValueError that says what to do when ``visual`` cannot give this output."""
        if self.patch_grid is not None:
            vit_blocks(visual, 'prefix="patches"')
            if self.patch_grid < 1:
                raise ValueError(f"patch_grid must be >= 1, got {self.patch_grid}")
        if self.tuned_blocks:
            blocks = vit_blocks(visual, "train_clip_blocks")
            if not 0 < self.tuned_blocks < len(blocks):
                raise ValueError(f"train_clip_blocks must be between 0 and {len(blocks) - 1} (the image "
                                 f"tower has {len(blocks)} blocks), got {self.tuned_blocks}")
        return self

    def feature_shape(self, visual: nn.Module) -> tuple[int, ...]:
        """One photo's features: ``(D,)`` CLIP's embedding, or ``(1 + g*g, W)`` for patches (the
        class token and the grid's patch tokens, of the tower's width). The training-set
        statistics have this shape: each token is standardised on its own."""
        if self.patch_grid is None:
            return (int(visual.output_dim),)
        return (1 + self.patch_grid ** 2, int(visual.transformer.width))

    @property
    def cache_suffix(self) -> str:
        """What the cache key adds to the encoder's identity ("" for the paper's features); the
        trunk's tokens are the same whichever output the tuned blocks lead to."""
        if self.tuned_blocks:
            return f"-trunk-minus{self.tuned_blocks}"
        return f"-patches{self.patch_grid}" if self.patch_grid is not None else ""

    def tuned(self, visual: nn.Module) -> nn.ModuleList:
        """The blocks that train (empty when none do)."""
        if not self.tuned_blocks:
            return nn.ModuleList()
        return vit_blocks(visual, "train_clip_blocks")[-self.tuned_blocks:]

    def tuned_prefixes(self, visual: nn.Module) -> tuple[str, ...]:
        """State-dict key prefixes (under ``visual.``) of the tuned blocks."""
        count = len(vit_blocks(visual, "train_clip_blocks")) if self.tuned_blocks else 0
        return tuple(f"transformer.resblocks.{i}." for i in range(count - self.tuned_blocks, count))

    def cached(self, visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """What the cache stores for ``pixels``: the trunk's tokens, or the final features."""
        if self.tuned_blocks:
            depth = len(visual.transformer.resblocks) - self.tuned_blocks
            out = visual.forward_intermediates(pixels, indices=[depth - 1], stop_early=True,
                                               intermediates_only=True, output_fmt="NLC",
                                               output_extra_tokens=True)
            return torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        if self.patch_grid is None:
            return nn.functional.normalize(visual(pixels), dim=-1)
        out = visual.forward_intermediates(pixels, indices=1, normalize_intermediates=True,  # + final norm
                                           intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
        return self._class_and_grid(out["image_intermediates_prefix"][0], out["image_intermediates"][0])

    def _class_and_grid(self, class_token: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + g*g, W)``: the class token, then the patch tokens pooled to the grid."""
        return nn.functional.normalize(torch.cat([class_token, pool_grid(patches, self.patch_grid)], dim=1), dim=-1)

    def finish(self, visual: nn.Module, cached: torch.Tensor) -> torch.Tensor:
        """Cached rows ``(..., T, W)`` -> features, through the tuned blocks and the tower's
        tail; the cached features themselves when no block is tuned."""
        if not self.tuned_blocks:
            return cached
        lead = cached.shape[:-2]
        x = cached.reshape(-1, *cached.shape[-2:])
        batch_first = getattr(visual.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for block in self.tuned(visual):
            x = block(x)
        x = x if batch_first else x.transpose(0, 1)
        if self.patch_grid is not None:
            x = visual.ln_post(x)  # the final norm, as forward_intermediates(normalize_intermediates=True)
            out = self._class_and_grid(x[:, :1], x[:, 1:])
        else:
            pooled, _ = visual._pool(x)  # open_clip's tail: final norm and pooling, as forward()
            out = nn.functional.normalize(pooled @ visual.proj if visual.proj is not None else pooled, dim=-1)
        return out.reshape(*lead, *out.shape[1:])


def tune_clip_blocks(model, blocks: int) -> None:
    """Let ``model``'s last ``blocks`` image-tower blocks train from now on (the Trainer's
    ``train_clip_blocks``): the config records it, the feature cache switches to the trunk's
    tokens, the blocks require grad. A model already tuned keeps its cut (``blocks=0`` then leaves it frozen); asking
    for another cut is an error."""
    if blocks not in (0, model.config.clip_tuned_blocks):
        if model.config.clip_tuned_blocks:
            raise ValueError(f"this model's last {model.config.clip_tuned_blocks} image-tower blocks were "
                             f"tuned already; train_clip_blocks={blocks} would cut it elsewhere: use "
                             f"train_clip_blocks={model.config.clip_tuned_blocks} (or 0 to keep them frozen)")
        output = TowerOutput(model.tower.patch_grid, blocks).check(model.clip.visual)
        model.config.clip_tuned_blocks, model.tower = blocks, output
        model.encoders.output = output
        model.forget_clip_identity()
    # now, before DistributedDataParallel wraps the model: it all-reduces what requires grad then
    model.tower.tuned(model.clip.visual).requires_grad_(blocks > 0)


@torch.no_grad()
def joint_embeddings(model, images) -> torch.Tensor:
    """``(N, D)`` L2-normalised image embeddings in CLIP's joint space (what text is compared
    with), through the model's tuned blocks; PIL images or paths, not cached."""
    from visiontales.data.images import load_rgb
    if model.tower.patch_grid is None:
        return model.tower.finish(model.clip.visual, model.encode_images(images, progress=False))
    pixels = torch.stack([model.preprocess(load_rgb(im)) for im in images]).to(model.device)
    return nn.functional.normalize(model.clip.encode_image(pixels).float(), dim=-1)
