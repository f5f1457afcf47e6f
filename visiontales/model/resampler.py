"""The ``patches`` prefix: learned queries read each photo's patch tokens (a small resampler).

Perceiver / Q-Former style: ``prefix_length`` learned query vectors per photo attend to that
photo's tokens (its class token and ``g x g`` patch tokens, projected to the language
model's width, with a learned token position) through a few ``nn.TransformerDecoderLayer``
s (self-attention among the queries, cross-attention to the tokens), and a learned photo
position is added to each photo's block, as the ``sequence`` prefix does. Each photo's
queries start from its class token (a linear map, as the ``sequence`` prefix maps its pooled
vector): with queries alike for every photo, the tiny recipe learnt which photo was which
far more slowly (object accuracy 0.43 against 0.89 at seed 0), so the attention refines a
start that already tells the photos apart. The prefix sees where in a photo something is,
not only one pooled vector of it.
"""
from __future__ import annotations

import torch
from torch import nn


class PatchResampler(nn.Module):
    """``(B, N, T, D)`` standardised tokens (class token first) -> ``(B, N * prefix_length, E)``.

    >>> resampler = PatchResampler(feature_dim=8, embed_dim=16, prefix_length=2, num_patches=4)
    >>> resampler(torch.randn(5, 3, 4, 8)).shape   # (B, N * P, E)
    torch.Size([5, 6, 16])
    """

    mode = "patches"

    def __init__(self, feature_dim: int, embed_dim: int, prefix_length: int = 10, num_patches: int = 16,
                 max_images: int = 16, num_layers: int = 2):
        super().__init__()
        if prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {prefix_length}")
        self.prefix_length, self.embed_dim, self.max_images = prefix_length, embed_dim, max_images
        self.num_patches = num_patches
        self.project = nn.Linear(feature_dim, embed_dim)
        self.patch_position = nn.Parameter(torch.randn(num_patches, embed_dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(prefix_length, embed_dim) * 0.02)
        self.from_class = nn.Linear(feature_dim, prefix_length * embed_dim)  # the photo's own start
        self.image_position = nn.Parameter(torch.randn(max_images, 1, embed_dim) * 0.02)
        layer = nn.TransformerDecoderLayer(embed_dim, nhead=max(1, embed_dim // 64), dim_feedforward=4 * embed_dim,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embed_dim))
        self.out = nn.Linear(embed_dim, embed_dim)  # from the resampler's scale to the LM's

    def num_tokens(self, num_images: int) -> int:
        """Prefix length in tokens for a sequence of ``num_images`` images."""
        return self.prefix_length * num_images

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, num_images, patches, _ = features.shape  # (B, N, T, D)
        if num_images > self.max_images:
            raise ValueError(f"this model takes at most {self.max_images} images, got {num_images}")
        if patches != self.num_patches:
            raise ValueError(f"{patches} patch tokens per photo, this prefix was built for {self.num_patches}")
        tokens = features.flatten(0, 1)                                       # (B*N, T, D)
        memory = self.project(tokens) + self.patch_position                   # (B*N, T, E)
        queries = self.queries + self.from_class(tokens[:, 0]).view(len(tokens), self.prefix_length, -1)
        blocks = self.out(self.layers(queries, memory)).view(batch, num_images, self.prefix_length, -1)
        blocks = blocks + self.image_position[:num_images]  # (N, 1, E) broadcasts over P
        return blocks.reshape(batch, num_images * self.prefix_length, self.embed_dim)
