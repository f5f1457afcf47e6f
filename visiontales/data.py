"""VIST story-in-sequence (SIS) data: read the annotations, cut stories into windows.

A VIST story is five photos of one Flickr album, one sentence each. `load_vist` orders each
story by `worker_arranged_photo_order` and cuts it into windows of `seq_len` photos; the
`StoryDataset` it returns has one row per window in `frame`, and what was left out, with
the reason, in `skipped`. Image files (finding, checking, loading) are
:mod:`visiontales.images`'s job.

>>> ds = sample_dataset("val")
>>> ds.frame.columns.tolist()[:3]
['story_id', 'album_id', 'window']
"""
from __future__ import annotations

import operator
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import pandas as pd

from .images import candidate_names, check_image
from .utils import progress_bar, read_json

PathLike = Union[str, os.PathLike]

SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"
COLUMNS = ("story_id", "album_id", "window", "photo_ids", "image_paths", "sentences", "text",
           "vist_label")
SKIPPED_COLUMNS = ("story_id", "window", "reason")
REQUIRED_FIELDS = ("story_id", "photo_flickr_id", "worker_arranged_photo_order", "text")


# ----------------------------------------------------------------------------- dataset

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

        >>> sample_dataset("val").select(range(4)).frame.shape[0]
        4
        """
        rows = self.frame.iloc[indices if isinstance(indices, slice) else list(indices)]
        return StoryDataset(rows, self.skipped.copy())


# ----------------------------------------------------------------------------- VIST

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


def window_starts(n_images: int, seq_len: int, stride: int) -> range:
    """First-image indices of the windows of a story with `n_images` photos.

    >>> list(window_starts(5, 3, 1)), list(window_starts(5, 3, 2)), list(window_starts(2, 3, 1))
    ([0, 1, 2], [0, 2], [])
    """
    return range(0, n_images - seq_len + 1, stride)


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


def check_images(paths: Sequence[str | None], progress: bool) -> list[str | None]:
    """The problem of each image (None if fine; a None path is a missing image), on threads:
    checking is I/O bound, and real VIST has ~200k files."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checks = pool.map(lambda p: "missing image" if p is None else check_image(p), paths)
        return list(progress_bar(checks, total=len(paths), desc="checking images", disable=not progress))


def load_vist(annotations: PathLike, images: PathLike, seq_len: int = 3, stride: int = 1,
              progress: bool = True) -> StoryDataset:
    """Read a VIST story-in-sequence JSON and its image folder into a `StoryDataset`.

    Stories are grouped by `story_id`, ordered by `worker_arranged_photo_order` (never by
    file order) and cut into windows of `seq_len` photos every `stride` photos. Each image
    is checked once; windows with a missing/unreadable image or an empty sentence, and
    stories that are too short or have duplicate/missing orders, go to `skipped`.

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


# ----------------------------------------------------------------------------- shipped data

def frame_of(data: StoryDataset | pd.DataFrame) -> pd.DataFrame:
    """The rows of a StoryDataset, or a frame of rows as it is (functions take either)."""
    return data if isinstance(data, pd.DataFrame) else data.frame


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
