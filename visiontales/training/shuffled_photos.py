"""Does the model use the photos? The eval loss again, with the photos swapped between examples.

A CLIP-prefix storyteller can bring its loss down by learning the language alone and never
look at the images (the most common complaint about ClipCap-style models). Score the same
stories with every example's photos replaced by another example's: a model that reads the
photos gets clearly worse (``eval_loss_shuffled`` well above ``eval_loss``), a model that
ignores them does not notice. The swap is a fixed derangement, the same at every
evaluation, so the two curves can be compared epoch by epoch.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from visiontales.training.batching import PreparedData

# The first epochs learn the language and the photos come after (README, "Images that
# matter"), so judge only after a few epochs, and only a gap that is still near nothing.
GAP_WARNING = 0.02      # nats per token: below this, the photos barely change the loss
WARN_AFTER_EPOCHS = 5


def photo_derangement(photos: Sequence[Hashable], counts: Sequence[int] | None = None) -> list[int]:
    """For each example, the example whose photos it borrows: never photos equal to its own,
    always the same number of photos, and the same answer every call.

    ``photos`` holds one hashable key per example (its photo sequence); ``counts`` the number
    of photos of each (default: all equal). Within each count, example ``j`` borrows from
    ``j + k`` (cyclically), with the shift ``k`` nearest half the group that gives every
    example different photos: far apart, so usually another album. Where no shift can (a
    count held by one example, or by one photo sequence only) the donor is -1.

    >>> photo_derangement(["ab", "bc", "cd", "de"])
    [2, 3, 0, 1]
    >>> photo_derangement(["ab", "ab", "cd", "cd"])   # equal sequences never swap with each other
    [2, 3, 0, 1]
    >>> photo_derangement(["ab", "cd", "x"], counts=[2, 2, 1])   # "x" is the only 1-photo example
    [1, 0, -1]
    """
    counts = list(counts) if counts is not None else [0] * len(photos)
    donors = [-1] * len(photos)
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(counts):
        groups.setdefault(n, []).append(i)
    for n, group in groups.items():
        m = len(group)
        shifts = sorted(range(1, m), key=lambda k: (abs(k - m / 2), k))
        shift = next((k for k in shifts
                      if all(photos[group[j]] != photos[group[(j + k) % m]] for j in range(m))), None)
        if shift is None:
            continue
        for j, i in enumerate(group):
            donors[i] = group[(j + shift) % m]
    return donors


def with_shuffled_photos(data: PreparedData) -> PreparedData:
    """The same token ids with each example's features taken from its :func:`photo_derangement`
    donor (photos compared by ``data.photo_ids``); examples without a donor are left out."""
    if len(data.photo_ids) != len(data):
        raise ValueError("with_shuffled_photos needs PreparedData.photo_ids (Trainer.prepare fills them)")
    donors = photo_derangement(data.photo_ids, [len(f) for f in data.features])
    kept = [i for i, d in enumerate(donors) if d >= 0]
    return PreparedData([data.features[donors[i]] for i in kept], [data.examples[i] for i in kept],
                        [data.photo_ids[donors[i]] for i in kept],
                        [data.prompts[i] for i in kept] if data.prompts else [])
