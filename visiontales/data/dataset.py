"""StoryDataset: one example per window of consecutive photos, backed by a pandas frame.

Every loader (:mod:`~visiontales.data.vist`, :mod:`~visiontales.data.stories`, the shipped
:mod:`~visiontales.data.sample`) returns one, with what it left out and why in ``skipped``.
"""
from __future__ import annotations

import operator
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import pandas as pd

from visiontales.data.images import check_image
from visiontales.utils import progress_bar

PathLike = Union[str, os.PathLike]

COLUMNS = ("story_id", "album_id", "window", "photo_ids", "image_paths", "sentences", "text",
           "vist_label")
SKIPPED_COLUMNS = ("story_id", "window", "reason")


def _normalise_skipped(skipped: pd.DataFrame | None) -> pd.DataFrame:
    """`skipped` with exactly `SKIPPED_COLUMNS` and their types (empty for None)."""
    skipped = pd.DataFrame(columns=list(SKIPPED_COLUMNS)) if skipped is None else skipped
    if absent := [c for c in SKIPPED_COLUMNS if c not in skipped.columns]:
        raise ValueError(f"skipped frame lacks column(s) {absent}; it has {list(skipped.columns)}")
    return skipped[list(SKIPPED_COLUMNS)].astype(
        {"story_id": str, "window": "int64", "reason": str}).reset_index(drop=True)


def _normalise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Validate `df` and return a copy with exactly `COLUMNS`, in order, with their types."""
    missing = [c for c in ("story_id", "text") if c not in df.columns]
    if "photo_ids" not in df.columns and "image_paths" not in df.columns:
        missing.append("photo_ids or image_paths")
    if missing:
        raise ValueError(f"StoryDataset frame lacks required column(s) {missing}; "
                         f"it has {list(df.columns)}")
    df, empty = df.reset_index(drop=True), [()] * len(df)
    out = pd.DataFrame({"story_id": df["story_id"].astype(str)})
    for column in ("album_id", "vist_label"):
        out[column] = df[column].fillna("").astype(str) if column in df else ""
    out["window"] = (df["window"] if "window" in df  # else: position within the story
                     else out.groupby("story_id", sort=False).cumcount()).astype("int64")
    out["image_paths"] = ([tuple(os.path.abspath(p) for p in ps) for ps in df["image_paths"]]
                          if "image_paths" in df else empty)
    out["photo_ids"] = ([tuple(str(p) for p in ps) for ps in df["photo_ids"]] if "photo_ids" in df
                        else [tuple(Path(p).stem for p in ps) for ps in out["image_paths"]])
    out["sentences"] = [tuple(s) for s in df["sentences"]] if "sentences" in df else empty
    out["text"] = df["text"].astype(str)
    return out[list(COLUMNS)]


class StoryDataset:
    """One example per window of consecutive photos, backed by a pandas DataFrame.

    `frame` has the columns `COLUMNS`: story_id, album_id, window (index of the window's
    first photo in its story), photo_ids, image_paths (absolute), sentences (one per
    photo), text (the sentences joined by one space), vist_label ("" if unknown).
    `skipped` lists what was left out: story_id, window (-1 for a whole story), reason.

    >>> ds = StoryDataset.from_records([["a.jpg", "b.jpg"]], ["two photos ."])
    >>> len(ds), ds[0]["photo_ids"]
    (1, ('a', 'b'))
    """

    def __init__(self, frame: pd.DataFrame, skipped: pd.DataFrame | None = None) -> None:
        self.frame = _normalise_frame(frame)
        self.skipped = _normalise_skipped(skipped)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index, n = operator.index(index), len(self.frame)
        if not -n <= index < n:
            raise IndexError(f"window {index} out of range for a dataset of {n} windows")
        row = {column: self.frame[column].iat[index] for column in COLUMNS}
        row["window"] = int(row["window"])
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.frame.itertuples(index=False):
            yield {**row._asdict(), "window": int(row.window)}

    def __repr__(self) -> str:
        return (f"StoryDataset({len(self)} windows from {self.frame['story_id'].nunique()} "
                f"stories, {len(self.skipped)} skipped)")

    @property
    def image_paths(self) -> list[str]:
        """Unique image paths over all windows, in first-seen order."""
        return list(dict.fromkeys(chain.from_iterable(self.frame["image_paths"])))

    @property
    def texts(self) -> list[str]:
        """The story text of every window."""
        return self.frame["text"].tolist()

    @classmethod
    def from_records(cls, image_sequences: Sequence[Sequence[PathLike]], texts: Sequence[str],
                     story_ids: Sequence[str] | None = None,
                     sentences: Sequence[Sequence[str]] | None = None) -> StoryDataset:
        """Build a dataset from parallel lists: one image sequence and one text per example.

        >>> ds = StoryDataset.from_records([["x/1.jpg"], ["x/2.png"]], ["one .", "two ."],
        ...                                story_ids=["s1", "s2"])
        >>> ds.frame["story_id"].tolist()
        ['s1', 's2']
        """
        n = len(image_sequences)
        for name, values in (("texts", texts), ("story_ids", story_ids),
                             ("sentences", sentences)):
            if values is not None and len(values) != n:
                raise ValueError(f"from_records: got {n} image sequences but {len(values)} "
                                 f"{name}; pass one per image sequence")
        for i, paths in enumerate(image_sequences):
            if isinstance(paths, (str, os.PathLike)) or len(paths) == 0:
                raise ValueError(f"from_records: image_sequences[{i}] must be a non-empty "
                                 f"list of paths, got {paths!r}")
            if sentences is not None and len(sentences[i]) != len(paths):
                raise ValueError(f"from_records: sentences[{i}] has {len(sentences[i])} "
                                 f"sentences for {len(paths)} images")
        ids = range(n) if story_ids is None else story_ids
        frame = pd.DataFrame({"story_id": [str(s) for s in ids],
                              "image_paths": [tuple(map(os.fspath, ps)) for ps in image_sequences],
                              "text": [str(t) for t in texts]})
        if sentences is not None:
            frame["sentences"] = [tuple(s) for s in sentences]
        return cls(frame)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, skipped: pd.DataFrame | None = None) -> StoryDataset:
        """Wrap a DataFrame with `story_id`, `text` and `photo_ids` or `image_paths`.

        Missing optional columns are filled: album_id and vist_label "", window the row's
        position within its story, photo_ids the image file stems, sentences ().

        >>> df = pd.DataFrame({"story_id": ["7"], "image_paths": [("a/1.jpg",)], "text": ["hi ."]})
        >>> StoryDataset.from_frame(df)[0]["photo_ids"]
        ('1',)
        """
        return cls(df, skipped)

    def select(self, indices: Iterable[int] | slice) -> StoryDataset:
        """A new dataset with the windows at `indices` (positions); `skipped` is kept.

        >>> StoryDataset.from_records([["a.jpg"], ["b.jpg"], ["c.jpg"]], ["a .", "b .", "c ."]).select([0, 2]).texts
        ['a .', 'c .']
        """
        rows = self.frame.iloc[indices if isinstance(indices, slice) else list(indices)]
        return StoryDataset(rows, self.skipped.copy())


def frame_of(data: StoryDataset | pd.DataFrame) -> pd.DataFrame:
    """The rows of a StoryDataset, or a frame of rows as it is (functions take either)."""
    return data if isinstance(data, pd.DataFrame) else data.frame


def window_starts(n_images: int, seq_len: int, stride: int) -> range:
    """First-image indices of the windows of a story with `n_images` photos.

    >>> list(window_starts(5, 3, 1)), list(window_starts(5, 3, 2)), list(window_starts(2, 3, 1))
    ([0, 1, 2], [0, 2], [])
    """
    return range(0, n_images - seq_len + 1, stride)


def check_images(paths: Sequence[str | None], progress: bool) -> list[str | None]:
    """The problem of each image (None if fine; a None path is a missing image), on threads:
    checking is I/O bound, and real VIST has ~200k files."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checks = pool.map(lambda p: "missing image" if p is None else check_image(p), paths)
        return list(progress_bar(checks, total=len(paths), desc="checking images", disable=not progress))
