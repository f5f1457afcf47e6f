"""The small VIST-format dataset shipped in the package: 150 albums of procedurally drawn
photos whose sentences name what each photo shows, so a model that looks at the photos can
be told from one that does not (offline demo, tests, notebook).

>>> ds = sample_dataset("val")
>>> ds.frame.columns.tolist()[:3]
['story_id', 'album_id', 'window']
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontales.data.dataset import StoryDataset
from visiontales.data.vist import load_vist
from visiontales.utils import read_json

SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"


def sample_dataset(split: str = "train", seq_len: int = 3, stride: int = 1) -> StoryDataset:
    """The small procedurally drawn VIST-format dataset shipped with the package.

    >>> train, val = sample_dataset("train"), sample_dataset("val")
    >>> set(train.frame["album_id"]).isdisjoint(val.frame["album_id"])
    True
    """
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; the sample dataset has 'train' and 'val'")
    return load_vist(SAMPLE_DATA_DIR / f"{split}.story-in-sequence.json",
                     SAMPLE_DATA_DIR / "images", seq_len=seq_len, stride=stride,
                     progress=False)


def sample_vocabulary() -> dict[str, Any]:
    """The sample dataset's vocabulary: objects, events, emotions and each object's colour.

    >>> len(sample_vocabulary()["objects"])
    8
    """
    return read_json(SAMPLE_DATA_DIR / "vocabulary.json")
