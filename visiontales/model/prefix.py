"""Map CLIP image features to GPT-2 prefix embeddings.

Three modes: ``"mean"`` averages the N image features first (the VisionTales paper), so the
order of the photos is lost; ``"sequence"`` maps each image to its own block of prefix
tokens and adds a learned image-position embedding, so order survives; ``"patches"`` reads
each image's patch tokens with learned queries (:mod:`~visiontales.model.resampler`).
"""
from __future__ import annotations

import torch
from torch import nn

from visiontales.model.resampler import PatchResampler

PREFIX_MODES = ("mean", "sequence", "patches")


class PrefixMapper(nn.Module):
    """ClipCap-style MLP from CLIP space to ``prefix_length`` GPT-2 embeddings.

    ``prefix_length`` is the whole prefix in ``"mean"`` mode and the block per image in
    ``"sequence"`` mode, so a 3-image sequence gets ``3 * prefix_length`` tokens there.

    >>> mapper = PrefixMapper(feature_dim=8, embed_dim=4, prefix_length=2, mode="sequence")
    >>> mapper(torch.randn(5, 3, 8)).shape   # (B, N * P, E)
    torch.Size([5, 6, 4])
    """

    def __init__(self, feature_dim: int, embed_dim: int, prefix_length: int = 10,
                 mode: str = "mean", max_images: int = 16):
        super().__init__()
        if mode not in PREFIX_MODES[:2]:
            raise ValueError(f"prefix mode must be one of {PREFIX_MODES[:2]}, got {mode!r}"
                             + (" (build_mapper makes a 'patches' prefix)" if mode == "patches" else ""))
        if prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {prefix_length}")
        self.mode, self.prefix_length, self.embed_dim = mode, prefix_length, embed_dim
        self.max_images = max_images
        out = prefix_length * embed_dim
        self.mlp = nn.Sequential(nn.Linear(feature_dim, out // 2), nn.Tanh(), nn.Linear(out // 2, out))
        if mode == "sequence":
            self.image_position = nn.Parameter(torch.randn(max_images, 1, embed_dim) * 0.02)

    def num_tokens(self, num_images: int) -> int:
        """Prefix length in tokens for a sequence of ``num_images`` images."""
        return self.prefix_length * (num_images if self.mode == "sequence" else 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: (B, N, D) standardised CLIP features
        batch, num_images, _ = features.shape
        if self.mode == "mean":
            return self.mlp(features.mean(dim=1)).view(batch, self.prefix_length, self.embed_dim)
        if num_images > self.max_images:
            raise ValueError(f"this model takes at most {self.max_images} images, got {num_images}")
        blocks = self.mlp(features).view(batch, num_images, self.prefix_length, self.embed_dim)
        blocks = blocks + self.image_position[:num_images]  # (N, 1, E) broadcasts over P
        return blocks.reshape(batch, num_images * self.prefix_length, self.embed_dim)


def build_mapper(config, feature_dim: int, embed_dim: int) -> nn.Module:
    """The prefix mapper a :class:`~visiontales.model.config.StoryModelConfig` names.

    >>> from visiontales.model.config import StoryModelConfig
    >>> build_mapper(StoryModelConfig(prefix="patches", patch_grid=2), 8, 16).num_tokens(3)
    30
    """
    if config.prefix not in PREFIX_MODES:
        raise ValueError(f"prefix mode must be one of {PREFIX_MODES}, got {config.prefix!r}")
    if config.prefix == "patches":
        return PatchResampler(feature_dim, embed_dim, config.prefix_length, 1 + config.patch_grid ** 2,
                              config.max_images)
    return PrefixMapper(feature_dim, embed_dim, config.prefix_length, config.prefix, config.max_images)
