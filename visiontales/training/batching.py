"""Which examples go into which batch, and the tensors of one batch (pure functions).

The Trainer, the benchmarks and your own loop build batches the same way: the order is
decided from lengths and a seeded generator alone, so a resumed run, two processes under
DDP and a benchmark all see the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from visiontales.model.tokens import collate


@dataclass
class PreparedData:
    """A dataset ready for training, one entry per example: its CLIP features ``(N, D)``
    (N images), its ``(input_ids, labels)`` token lists (prompt, then target), which photos
    they are (``photo_ids``, so the photo check can swap photos between examples) and the
    prompt's ids on their own (``prompts``, which the RL step generates after). Made once by
    ``Trainer.prepare``."""
    features: list[torch.Tensor]
    examples: list[tuple[list[int], list[int]]]
    photo_ids: list[Hashable] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                group_by_length: bool = False) -> list[list[int]]:
        """:func:`batch_indices` of these examples (token lengths and image counts from here)."""
        return batch_indices([len(ids) for ids, _ in self.examples], [len(f) for f in self.features],
                             batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             group_by_length=group_by_length)


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter).

    >>> chunks([1, 2, 3, 4, 5], 2)
    [[1, 2], [3, 4], [5]]
    """
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def length_grouped_batches(order: list[int], lengths: Sequence[int], batch_size: int,
                           generator: torch.Generator) -> list[list[int]]:
    """Batches of similar length, in random order (less padding, same randomness per epoch).

    The shuffled ``order`` is cut into chunks of 50 batches; each chunk is sorted by length
    (longest first) and split into batches; then the batches are shuffled.

    >>> g = torch.Generator().manual_seed(0)
    >>> batches = length_grouped_batches([3, 0, 2, 1], [5, 1, 4, 2], 2, g)
    >>> sorted(sorted(b) for b in batches)  # lengths 5 and 4 together, 2 and 1 together
    [[0, 2], [1, 3]]
    """
    batches = []
    for part in chunks(order, 50 * batch_size):
        batches += chunks(sorted(part, key=lambda i: lengths[i], reverse=True), batch_size)
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def batch_indices(lengths: Sequence[int], image_counts: Sequence[int], batch_size: int, *,
                  shuffle: bool, seed: int = 0, epoch: int = 0,
                  group_by_length: bool = False) -> list[list[int]]:
    """The example indices of every batch of one epoch.

    One generator per epoch, seeded from ``(seed, epoch)``, so a resumed run sees the same
    order. A batch never mixes image counts (instruction mixtures hold one-photo captions
    beside three-photo stories); ``group_by_length`` batches similar token lengths.

    >>> batch_indices([3, 3, 3, 3, 3], [3, 3, 3, 3, 3], 2, shuffle=False)
    [[0, 1], [2, 3], [4]]
    >>> batch_indices([3, 3, 3], [3, 1, 3], 2, shuffle=False)
    [[1], [0, 2]]
    >>> sorted(i for b in batch_indices([5] * 7, [3] * 7, 3, shuffle=True, seed=1) for i in b)
    [0, 1, 2, 3, 4, 5, 6]
    """
    n = len(lengths)
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    if len(set(image_counts)) > 1:
        batches = [idx for count in sorted(set(image_counts))
                   for idx in chunks([i for i in order if image_counts[i] == count], batch_size)]
        if shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches
    if shuffle and group_by_length:
        return length_grouped_batches(order, lengths, batch_size, generator)
    return chunks(order, batch_size)


def collate_batch(data: PreparedData, indices: Sequence[int], eos_id: int,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The keyword arguments of ``StoryModel.loss`` for the examples ``indices``.

    ``input_ids``, ``attention_mask``, ``labels`` (EOS as stop and pad, -100 where no
    loss) and ``features`` ``(B, N, D)``.

    >>> data = PreparedData([torch.zeros(3, 8), torch.ones(3, 8)],
    ...                     [([5, 6, 0], [-100, 6, 0]), ([5, 7, 7, 0], [-100, 7, 7, 0])])
    >>> batch = collate_batch(data, [1, 0], eos_id=0)
    >>> sorted(batch), tuple(batch["features"].shape)
    (['attention_mask', 'features', 'input_ids', 'labels'], (2, 3, 8))
    >>> batch["labels"][1].tolist()  # the shorter example: padded with EOS, no loss on the pad
    [-100, 6, 0, -100]
    """
    batch = collate([data.examples[i] for i in indices], eos_id)
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    batch["features"] = torch.stack([data.features[i] for i in indices]).to(device)
    return batch
