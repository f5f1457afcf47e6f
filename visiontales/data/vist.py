"""VIST story-in-sequence (SIS) data: read the annotations, cut stories into windows.

A VIST story is five photos of one Flickr album, one sentence each. `load_vist` orders each
story by `worker_arranged_photo_order` and cuts it into windows of `seq_len` photos; the
:class:`~visiontales.data.dataset.StoryDataset` it returns has one row per window in
`frame`, and what was left out, with the reason, in `skipped`. Image files (finding,
checking, loading) are :mod:`visiontales.data.images`'s job.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from visiontales.data.dataset import COLUMNS, SKIPPED_COLUMNS, PathLike, StoryDataset, check_images, window_starts
from visiontales.data.images import candidate_names
from visiontales.utils import read_json

REQUIRED_FIELDS = ("story_id", "photo_flickr_id", "worker_arranged_photo_order", "text")


def _read_annotations(path: Path) -> Any:
    """The file's JSON via :func:`~visiontales.utils.read_json`; bytes that are not UTF-8
    become a ValueError naming the file and the byte (VIST's files are UTF-8)."""
    try:
        return read_json(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                         f"{exc.start}); VIST annotation files are UTF-8 JSON") from None


def _storylet_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "is not a one-element list holding a storylet dict"
    if absent := [field for field in REQUIRED_FIELDS if field not in item]:
        return f"has no {absent[0]!r}"
    if not str(item["worker_arranged_photo_order"]).isdecimal():
        return (f"has 'worker_arranged_photo_order' = {item['worker_arranged_photo_order']!r}"
                ", expected an integer >= 0")
    return None


def _storylets(path: Path, data: Any) -> list[dict[str, Any]]:
    """Validate the `annotations` list and return its storylet dicts (IDs as str)."""
    if not isinstance(data, dict) or "annotations" not in data:
        keys = list(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: no 'annotations' key (found {keys}); expected a VIST "
                         f"story-in-sequence file")
    if not isinstance(data["annotations"], list):
        raise ValueError(f"{path}: 'annotations' must be a list of one-element lists")
    storylets, problems = [], []
    for i, item in enumerate(data["annotations"]):
        item = item[0] if isinstance(item, list) and len(item) == 1 else item
        if problem := _storylet_problem(item):
            problems.append(f"annotation {i} {problem}")
            continue
        storylets.append({"story_id": str(item["story_id"]),
                          "album_id": str(item.get("album_id", "")),
                          "photo_id": str(item["photo_flickr_id"]),
                          "order": int(item["worker_arranged_photo_order"]),
                          "text": str(item["text"] or "").strip()})
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ValueError(f"{path}: {problems[0]}{more}")
    return storylets


def _story_problem(orders: list[int], seq_len: int) -> str | None:
    """Why a whole story is unusable, or None."""
    if duplicated := sorted(o for o, count in Counter(orders).items() if count > 1):
        return f"duplicate worker_arranged_photo_order {duplicated[0]}"
    if absent := sorted(set(range(len(orders))) - set(orders)):
        return f"missing worker_arranged_photo_order {absent[0]}"
    if len(orders) < seq_len:
        return f"story has {len(orders)} images, fewer than seq_len={seq_len}"
    return None


def _numeric_first(story_id: str) -> tuple[int, int, str]:
    """Sort key: numeric ids in numeric order ("9" before "10"), then the others."""
    return (0, int(story_id), "") if story_id.isdecimal() else (1, 0, story_id)


def _check_images(images: Path, photo_ids: Iterable[str],
                  progress: bool) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Path and problem (None if fine) of each photo, checking every image once.

    One directory listing instead of a stat per candidate extension, and threads, since
    this is I/O bound on real VIST (~200k files).
    """
    names = set(os.listdir(images))
    paths = {pid: next((str(images / n) for n in candidate_names(pid) if n in names), None)
             for pid in photo_ids}
    return paths, dict(zip(paths, check_images(list(paths.values()), progress)))


def load_vist(annotations: PathLike, images: PathLike, seq_len: int = 3, stride: int = 1,
              progress: bool = True) -> StoryDataset:
    """Read a VIST story-in-sequence JSON and its image folder into a `StoryDataset`.

    Stories are grouped by `story_id`, ordered by `worker_arranged_photo_order` (never by
    file order) and cut into windows of `seq_len` photos every `stride` photos. Each image
    is checked once; windows with a missing/unreadable image or an empty sentence, and
    stories that are too short or have duplicate/missing orders, go to `skipped`.

    >>> from visiontales.data.sample import SAMPLE_DATA_DIR
    >>> ds = load_vist(SAMPLE_DATA_DIR / "val.story-in-sequence.json",
    ...                SAMPLE_DATA_DIR / "images", seq_len=5, progress=False)
    >>> len(ds) == ds.frame["story_id"].nunique()
    True
    """
    for name, value in (("seq_len", seq_len), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    annotations, images = Path(annotations), Path(os.path.abspath(images))
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations}: VIST annotations file not found")
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    data = _read_annotations(annotations)
    stories: dict[str, list[dict[str, Any]]] = {}
    for storylet in _storylets(annotations, data):
        stories.setdefault(storylet["story_id"], []).append(storylet)
    labels = {str(a["id"]): str(a.get("vist_label") or "") for a in (data.get("albums") if isinstance(data.get("albums"), list) else [])
              if isinstance(a, dict) and "id" in a}

    skipped: list[tuple[str, int, str]] = []
    usable = {}  # story_id -> storylets in worker order; numeric ids in numeric order
    for story_id in sorted(stories, key=_numeric_first):
        story = sorted(stories[story_id], key=lambda s: s["order"])
        if problem := _story_problem([s["order"] for s in story], seq_len):
            skipped.append((story_id, -1, problem))
        else:
            usable[story_id] = story
    paths, problems = _check_images(
        images, dict.fromkeys(s["photo_id"] for st in usable.values() for s in st), progress)

    rows = []
    for story_id, story in usable.items():
        album_id = next((s["album_id"] for s in story if s["album_id"]), "")
        for start in window_starts(len(story), seq_len, stride):
            window = story[start:start + seq_len]
            reasons = [f"{problems[s['photo_id']]} (photo {s['photo_id']})" for s in window
                       if problems[s["photo_id"]]]
            reasons += [f"empty sentence at position {s['order']}"
                        for s in window if not s["text"]]
            if reasons:
                skipped.append((story_id, start, "; ".join(reasons)))
                continue
            sentences = tuple(s["text"] for s in window)
            rows.append({"story_id": story_id, "album_id": album_id, "window": start,
                         "photo_ids": tuple(s["photo_id"] for s in window),
                         "image_paths": tuple(paths[s["photo_id"]] for s in window),
                         "sentences": sentences, "text": " ".join(sentences),
                         "vist_label": labels.get(album_id, "")})
    return StoryDataset(pd.DataFrame(rows, columns=list(COLUMNS)),
                        pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)))
