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
from pathlib import Path
from typing import Callable, Sequence

from visiontales.data.sample import sample_vocabulary

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


def object_accuracy(model, dataset=None, **generate_kwargs) -> dict[str, float]:
    """Greedy stories for ``dataset``'s windows (default: the sample val split), scored.

    ``accuracy``: photos whose object the story names at the photo's position (``sequence``
    and ``patches`` prefixes) or anywhere among its first mentions (``mean``, which averages
    the photos and loses their order); ``chance``: the same stories against other albums'
    photos; for the order-aware prefixes also ``reversed``: against the photos in reverse order.
    """
    if dataset is None:
        from visiontales.data.sample import sample_dataset
        dataset = sample_dataset("val")
    truths, albums = truths_of(dataset), list(dataset.frame["album_id"])
    stories = model.generate([list(p) for p in dataset.frame["image_paths"]],
                             **{"progress": False, **generate_kwargs})
    score = in_order if model.config.prefix != "mean" else as_set
    result = {"accuracy": score(stories, truths), "chance": chance(score, stories, truths, albums)}
    if model.config.prefix != "mean":
        result["reversed"] = in_order(stories, [t[::-1] for t in truths])
    return result


def _digest(path) -> str:
    import hashlib
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _sample_photo_objects() -> dict[str, str]:
    """The object of each shipped sample photo, keyed by the file's content (a page hands
    back copies of the photos under other names)."""
    from visiontales.data.sample import sample_dataset
    objects = {}
    for split in ("train", "val"):
        data = sample_dataset(split)
        for paths, truth in zip(data.frame["image_paths"], truths_of(data)):
            objects.update((_digest(p), t) for p, t in zip(paths, truth))
    return objects


def story_check(story: str, photos: Sequence[str]) -> str | None:
    """One line comparing what a story names with what sample photos show (None when a
    photo is not one of the shipped sample photos, whose objects are known).

    >>> from visiontales.data.sample import sample_dataset
    >>> row = sample_dataset("val")[0]
    >>> story_check(row["text"], row["image_paths"])  # the reference itself  # doctest: +ELLIPSIS
    'Object check: 3 of 3 photos named at the right place (named: ...)'
    """
    known = _sample_photo_objects()
    try:
        truths = [known.get(_digest(p)) for p in photos]
    except OSError:
        return None
    if not photos or None in truths:
        return None
    named = mentions(story)
    hits = sum(a == b for a, b in zip(named, truths))
    return (f"Object check: {hits} of {len(truths)} photos named at the right place "
            f"(named: {', '.join(named) or 'none'}; the photos show: {', '.join(truths)})")
