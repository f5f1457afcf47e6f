"""Does a story name what the photos show? A word-level check on the shipped sample data.

Each sentence of the sample data names exactly one of 8 objects, the object its photo
shows, so a story can be scored word by word: the k-th object word it names is compared
with photo k's. Chance is measured, not assumed: the same stories scored against the
windows of other albums, which is what a model that ignores the photos gets.

>>> truths = [["balloon", "boat"], ["fish", "house"]]
>>> in_order(["a balloon then a boat .", "a house and a fish ."], truths)
0.5
>>> as_set(["a balloon then a boat .", "a house and a fish ."], truths)
1.0
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

from .data import sample_vocabulary

Score = Callable[[Sequence[str], Sequence[Sequence[str]]], float]


@functools.lru_cache(maxsize=1)
def _objects() -> frozenset:
    return frozenset(sample_vocabulary()["objects"])


def mentions(text: str) -> list[str]:
    """The sample objects ``text`` names, in order.

    >>> mentions("[male] saw a red balloon near the boat .")
    ['balloon', 'boat']
    """
    return [word for word in text.split() if word in _objects()]


def in_order(stories: Sequence[str], truths: Sequence[Sequence[str]]) -> float:
    """Fraction of photos whose object is named at the photo's position in the story."""
    hits = sum(sum(a == b for a, b in zip(mentions(s)[:len(t)], t)) for s, t in zip(stories, truths))
    return hits / sum(len(t) for t in truths)


def as_set(stories: Sequence[str], truths: Sequence[Sequence[str]]) -> float:
    """Fraction of photos whose object is among the story's first mentions (order ignored:
    what the paper's ``mean`` prefix, which averages the photos, can be asked for)."""
    hits = sum(len(set(mentions(s)[:len(t)]) & set(t)) for s, t in zip(stories, truths))
    return hits / sum(len(t) for t in truths)


def chance(score: Score, stories: Sequence[str], truths: Sequence[Sequence[str]],
           albums: Sequence[str]) -> float:
    """Mean ``score`` of each story against the windows of every other album.

    >>> stories, truths = ["a balloon .", "a fish ."], [["balloon"], ["fish"]]
    >>> in_order(stories, truths), chance(in_order, stories, truths, albums=["a", "b"])
    (1.0, 0.0)
    """
    total = 0.0
    for story, album in zip(stories, albums):
        others = [t for t, a in zip(truths, albums) if a != album]
        total += sum(score([story], [t]) for t in others) / len(others)
    return total / len(stories)


def truths_of(dataset) -> list[list[str]]:
    """Per window, the object of each photo, from the reference sentences."""
    return [mentions(text) for text in dataset.frame["text"]]
