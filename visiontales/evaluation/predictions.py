"""Predictions: one story per evaluation key, how the keys are made, and prediction files.

A key names what one story is for: a row's photo ids joined by ``_`` (``by="sequence"``)
or its album id (``by="album"``, AREL's protocol). Generation, the prediction files and
:func:`visiontales.evaluation.metrics.evaluate` all key stories this way, so the keys live here,
below evaluation, and metrics imports them.

A prediction file is what ``visiontales generate --out`` writes and ``visiontales
evaluate --predictions`` reads: one JSON object per line with ``key`` (see
:func:`prediction_keys`), ``story`` and, for reading by people, ``photo_ids``. Also read:

- one JSON object ``{key: story}``, or ``{album_id: [story]}`` as AREL writes its
  ``prediction_test.json`` (keyed by album id: the ``arel`` protocol's keys; the first
  story of a list is scored, as AREL did);
- a NAACL 2018 VIST challenge submission, ``{"output_stories": [{"album_id": ...,
  "photo_sequence": [five photo ids], "story_text_normalized": ...}, ...]}``, keyed by the
  photo ids joined by ``_`` (the ``vist-challenge`` protocol's keys).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from visiontales.data.dataset import frame_of
from visiontales.utils import atomic_path, read_json


def prediction_keys(dataset, by: str = "sequence") -> list[str]:
    """The evaluation key of every row of ``dataset.frame``, in row order.

    ``by="sequence"``: the row's photo ids joined by ``_``; ``by="album"``: its album id.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"album_id": ["a", "a"], "photo_ids": [("1", "2"), ("2", "3")]})
    >>> prediction_keys(frame), prediction_keys(frame, by="album")
    (['1_2', '2_3'], ['a', 'a'])
    """
    frame = frame_of(dataset)
    if by == "sequence":
        return ["_".join(str(p) for p in ids) for ids in frame["photo_ids"]]
    if by == "album":
        return [str(a) for a in frame["album_id"]]
    raise ValueError(f"by must be 'sequence' or 'album', got {by!r}")


def keys_for(dataset, by: str = "sequence") -> dict[str, int]:
    """Each evaluation key mapped to the position of its first row: generate one story per key.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"album_id": ["a", "a"], "photo_ids": [("1", "2"), ("1", "2")]})
    >>> keys_for(frame)
    {'1_2': 0}
    """
    first: dict[str, int] = {}
    for row, key in enumerate(prediction_keys(dataset, by)):
        first.setdefault(key, row)
    return first


def collapse_predictions(keys: Sequence[str], stories: Sequence[str]) -> dict[str, str]:
    """Per-row stories -> one story per key; the first row of a key wins (as AREL did).

    >>> collapse_predictions(["a", "a", "b"], ["first", "second", "third"])
    {'a': 'first', 'b': 'third'}
    """
    if len(keys) != len(stories):
        raise ValueError(f"{len(keys)} keys but {len(stories)} stories; give one story per row")
    out: dict[str, str] = {}
    for key, story in zip(keys, stories):
        out.setdefault(key, story)
    return out


def predict(model, dataset, by: str = "sequence", **generate_kwargs) -> dict[str, str]:
    """One story per evaluation key of ``dataset`` (the first window of each key).

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val").select(range(4))
    >>> preds = predict(vt.StoryModel.tiny(), val, max_new_tokens=3)
    >>> list(preds) == list(keys_for(val)) and all(isinstance(s, str) for s in preds.values())
    True
    """
    first_rows = keys_for(dataset, by)
    frame = dataset.frame
    sequences = [list(frame["image_paths"].iloc[row]) for row in first_rows.values()]
    stories = model.generate(sequences, **generate_kwargs)
    return dict(zip(first_rows, stories))


def write_predictions(path: str | os.PathLike, predictions: dict[str, str], dataset=None,
                      by: str = "sequence") -> Path:
    """Write ``{key: story}`` as JSON lines (atomically); with ``dataset``, add photo ids."""
    photos = {}
    if dataset is not None:
        for key, ids in zip(prediction_keys(dataset, by), dataset.frame["photo_ids"]):
            photos.setdefault(key, list(ids))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for key, story in predictions.items():
                record = {"key": key, "story": story}
                if key in photos:
                    record["photo_ids"] = photos[key]
                f.write(json.dumps(record) + "\n")
    return path


def _story(path: Path, key: str, value) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[0]  # AREL's {album_id: [story]}
    if not isinstance(value, str):
        raise ValueError(f"{path}: the story of {key!r} must be a string or a list of strings, "
                         f"got {type(value).__name__}")
    return value


def _challenge_stories(path: Path, stories) -> dict[str, str]:
    """A VIST challenge submission's ``output_stories``, keyed by photo sequence."""
    out: dict[str, str] = {}
    for number, story in enumerate(stories if isinstance(stories, list) else [None]):
        if not isinstance(story, dict) or not isinstance(story.get("photo_sequence"), list) \
                or not isinstance(story.get("story_text_normalized"), str):
            raise ValueError(f"{path}: output_stories[{number}] needs 'photo_sequence' (a list "
                             f"of photo ids) and 'story_text_normalized' (a string)")
        key = "_".join(str(p) for p in story["photo_sequence"])
        if key in out:  # the challenge rejects such a file
            raise ValueError(f"{path}: photo sequence {key} has more than one story")
        out[key] = story["story_text_normalized"]
    return out


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Read a prediction file (see the module docstring for the formats) as ``{key: story}``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.jsonl"
    >>> _ = p.write_text('{"key": "1_2_3", "story": "a day ."}\\n')
    >>> read_predictions(p)
    {'1_2_3': 'a day .'}
    >>> _ = p.write_text('{"72157": ["  i went to the park ."]}')  # AREL's prediction_test.json
    >>> read_predictions(p)
    {'72157': '  i went to the park .'}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prediction file")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.rstrip():
        data = read_json(path)
        if "output_stories" in data:
            return _challenge_stories(path, data["output_stories"])
        if "key" not in data:
            return {str(k): _story(path, str(k), v) for k, v in data.items()}
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "story" not in record or "key" not in record:
            raise ValueError(f"{path}:{number}: each line needs 'key' and 'story'")
        out[str(record["key"])] = str(record["story"])
    return out
