"""Your own photo sequences: JSON lines or CSV in, a :class:`~visiontales.data.dataset.StoryDataset` out.

JSON lines, one sequence per line (``sentences``, one per photo, and ``id`` are optional)::

    {"id": "beach", "images": ["beach/1.jpg", "beach/2.jpg", "beach/3.jpg"], "story": "we went ..."}

CSV, one sequence per row, the images ``;``-separated (an ``id`` column is optional)::

    id,images,story
    beach,beach/1.jpg;beach/2.jpg;beach/3.jpg,we went to the beach ...

Image paths are relative to the file's folder (absolute ones are kept). Every image is checked
as :func:`~visiontales.data.vist.load_vist` checks VIST's; a row that cannot be used (bad JSON, no
images, a missing or unreadable photo, an empty story, a repeated id) is left out and listed
in ``dataset.skipped`` with the reason. A photo's id is its path as written in the file; a
row's ``id`` (default: its line number) is both its story and its album id.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from visiontales.data.dataset import COLUMNS, SKIPPED_COLUMNS, PathLike, StoryDataset, check_images, window_starts

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _row_problem(record: Any) -> str | None:
    """Why a parsed record is not a usable sequence, or None."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object with 'images' and 'story'"
    images = record.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p.strip() for p in images):
        return "'images' must be a non-empty list of image paths"
    sentences = record.get("sentences")
    if sentences is not None:
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            return "'sentences' must be a list of strings, one per photo"
        if len(sentences) != len(images):
            return f"{len(sentences)} sentences for {len(images)} images"
        if not all(_text(s) for s in sentences):
            return "empty sentence in 'sentences'"
    elif not _text(record.get("story")):
        return "empty story"
    return None


def _read_json_lines(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed record or the parse error)``; a file holding one JSON list works too."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            records.append((number, ValueError(f"not valid JSON ({err.msg})")))
    return records


def _read_csv(path: Path) -> list[tuple[int, Any]]:
    """``(line number, record)`` of a CSV with ``images`` (``;``-separated) and ``story``."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    missing = [c for c in ("images", "story") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (found {list(frame.columns)}); a stories CSV has "
                         "'images' (paths separated by ';') and 'story', and optionally 'id'")
    records = []
    for number, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        record = {"images": [p.strip() for p in row["images"].split(";") if p.strip()], "story": row["story"]}
        if row.get("id"):
            record["id"] = row["id"]
        records.append((number, record))
    return records


def _check_all(paths: list[str], progress: bool) -> dict[str, str | None]:
    """Each unique image's problem (None if fine), checked once, on threads (I/O bound)."""
    unique = list(dict.fromkeys(paths))
    return dict(zip(unique, check_images(unique, progress)))


def load_stories(path: PathLike, seq_len: int | None = None, stride: int = 1,
                 progress: bool = True) -> StoryDataset:
    """Read your own photo sequences (JSON lines or CSV) into a :class:`StoryDataset`.

    Without ``seq_len`` each row is one example, whatever its number of photos. With it, rows
    are cut into windows of ``seq_len`` photos every ``stride``, which needs ``sentences``
    (one per photo) unless the row has exactly ``seq_len`` photos.

    >>> import tempfile, visiontales as vt
    >>> from visiontales.data.sample import SAMPLE_DATA_DIR
    >>> photos = sorted(str(p) for p in (SAMPLE_DATA_DIR / "images").iterdir())[:4]
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = [{"images": photos[:3], "story": "a day out ."}, {"images": photos[3:] + ["gone.jpg"], "story": "x"}]
    >>> _ = (folder / "mine.jsonl").write_text("\\n".join(json.dumps(r) for r in rows))
    >>> ds = vt.load_stories(folder / "mine.jsonl", progress=False)
    >>> len(ds), ds.skipped["reason"].tolist()
    (1, ['missing image (photo gone.jpg)'])
    """
    path = Path(path)
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ValueError(f"seq_len must be None or an integer >= 1, got {seq_len!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: stories file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in JSON_SUFFIXES:
            records = _read_json_lines(path)
        elif suffix in CSV_SUFFIXES:
            records = _read_csv(path)
        else:
            raise ValueError(f"{path}: unknown kind of stories file; use JSON lines "
                             f"({', '.join(JSON_SUFFIXES)}) or CSV (.csv)")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None

    base = Path(os.path.abspath(path.parent))
    skipped: list[tuple[str, int, str]] = []
    usable: list[tuple[str, dict[str, Any], list[str]]] = []  # (id, record, absolute image paths)
    seen: set[str] = set()
    for number, record in records:
        given = record.get("id") if isinstance(record, dict) else None
        story_id = str(number) if given in (None, "") else str(given)
        problem = f"line {number}: {record}" if isinstance(record, Exception) else _row_problem(record)
        if problem is None and story_id in seen:
            problem = f"repeats the id {story_id!r} of an earlier row"
        if problem:
            skipped.append((story_id, -1, problem))
            continue
        seen.add(story_id)
        usable.append((story_id, record, [str(base / p.strip()) for p in record["images"]]))
    problems = _check_all([p for _, _, paths in usable for p in paths], progress)

    rows = []
    for story_id, record, paths in usable:
        names = [p.strip() for p in record["images"]]
        sentences = tuple(_text(s) for s in record["sentences"]) if record.get("sentences") else None
        story = _text(record.get("story")) or " ".join(sentences or ())
        n = seq_len or len(paths)
        if len(paths) < n:
            skipped.append((story_id, -1, f"{len(paths)} images, fewer than seq_len={seq_len}"))
            continue
        if sentences is None and len(paths) != n:
            skipped.append((story_id, -1, f"{len(paths)} images and no 'sentences' to cut the story "
                                          f"into windows of seq_len={seq_len}"))
            continue
        for start in window_starts(len(paths), n, stride if seq_len else 1):
            window = slice(start, start + n)
            reasons = [f"{problems[p]} (photo {name})" for p, name in zip(paths[window], names[window])
                       if problems[p]]
            if reasons:
                skipped.append((story_id, start, "; ".join(reasons)))
                continue
            text = " ".join(sentences[window]) if sentences and n < len(paths) else story
            rows.append({"story_id": story_id, "album_id": story_id, "window": start,
                         "photo_ids": tuple(names[window]), "image_paths": tuple(paths[window]),
                         "sentences": sentences[window] if sentences else (), "text": text,
                         "vist_label": ""})
    return StoryDataset(pd.DataFrame(rows, columns=list(COLUMNS)),
                        pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)))
