"""Evaluation protocols: which stories are references for which prediction, and how a
score is aggregated. The published VIST numbers come from two of them.

- ``arel``: AREL's album evaluation (Wang et al. 2018, "No Metrics Are Perfect";
  ``vist_eval/album_eval.py`` in eric-xw/AREL, whose ``AlbumEvaluator`` comes from
  lichengunc/vist_eval). One prediction per album; its references are every kept story of
  the album (kept: all five photos present), each the five storylets' ``text`` joined by a
  space. pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr (IDF from these references) and the
  corpus METEOR with ``-t hter``, all on the strings as they are: no tokeniser, no
  lowercasing, no whitespace tidying.
- ``vist-challenge``: the NAACL 2018 VIST challenge's METEOR
  (windx0303/VIST-Challenge-NAACL-2018, ``EvalVISTSharedTask.java``). One prediction per
  photo sequence (the five photo ids in ``worker_arranged_photo_order``); its references
  are every story over that exact sequence. METEOR ``hter`` of the prediction against each
  reference alone, the best per sequence, the mean over sequences. METEOR only. (The
  challenge's leaderboard also scored against three extra stories per sequence that were
  never released, and left out the sequences whose photos had left Flickr.)
- ``window``: visiontales' own: every ``seq_len``-photo window (3 by default) keyed by its
  photo sequence (or album), text normalised by :func:`~visiontales.data.text.normalize_text`,
  standard METEOR. Handy while developing; no published table uses it.

Prediction keys are :func:`~visiontales.evaluation.predictions.prediction_keys`' ``by="album"`` (album
id) for ``arel`` and ``by="sequence"`` (photo ids joined by ``_``) for the other two.

>>> import visiontales as vt
>>> val = vt.sample_dataset("val", seq_len=5)
>>> refs = protocol_references(val, "arel")
>>> sorted(refs) == sorted(set(val.frame["album_id"])) and list(protocol_keys(val, "arel")) == list(refs)
True
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from visiontales.data.dataset import frame_of
from visiontales.evaluation.meteor import segment_meteor
from visiontales.evaluation.predictions import keys_for, prediction_keys
from visiontales.utils import read_json

PROTOCOLS = {
    "window": "visiontales' own window protocol: NOT comparable to published VIST tables",
    "arel": "AREL's album evaluation (Wang et al. 2018, eric-xw/AREL vist_eval): comparable "
            "to AREL's published scores and to papers that use AREL's evaluator",
    "vist-challenge": "the NAACL 2018 VIST challenge's METEOR scorer (best over single "
                      "references per photo sequence, mean over sequences)",
}
KEYED_BY = {"arel": "album", "vist-challenge": "sequence"}  # window: the caller's choice
METEOR_MODE = {"window": "standard", "arel": "hter", "vist-challenge": "hter"}  # the defaults
STORY_LENGTH = 5  # photos in a VIST story; the published protocols score whole stories


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")


def keyed_by(protocol: str, by: str | None = None) -> str:
    """How ``protocol`` keys predictions: ``"album"`` or ``"sequence"``. ``by`` is the
    ``window`` protocol's choice (default ``"sequence"``); the others fix it.

    >>> keyed_by("arel"), keyed_by("window"), keyed_by("window", "album")
    ('album', 'sequence', 'album')
    """
    _check_protocol(protocol)
    fixed = KEYED_BY.get(protocol)
    if fixed and by not in (None, fixed):
        raise ValueError(f"protocol {protocol!r} keys predictions by {fixed}, not by {by}; "
                         f"leave `by` out (it is a choice of the 'window' protocol)")
    return fixed or by or "sequence"


def _check_whole_stories(frame, protocol: str) -> None:
    lengths = {len(ids) for ids in frame["photo_ids"]}
    if lengths != {STORY_LENGTH} or not frame["story_id"].is_unique:
        raise ValueError(
            f"protocol {protocol!r} scores whole {STORY_LENGTH}-photo stories, one row each; "
            f"this dataset has {sorted(lengths)}-photo rows"
            f"{'' if frame['story_id'].is_unique else ' and several rows per story'}: "
            f"load it with load_vist(..., seq_len={STORY_LENGTH})")
    if protocol == "arel" and (frame["album_id"] == "").any():
        raise ValueError("protocol 'arel' groups stories by album, and some rows have no "
                         "album_id; use a VIST story-in-sequence file (load_vist)")


def references_from_dataset(dataset, by: str = "sequence") -> dict[str, list[str]]:
    """Reference stories per evaluation key, from the rows' ``text``.

    - ``by="sequence"`` (default): key = the photo ids joined by ``_``; the references
      are the texts of every row over that exact, ordered photo sequence (VIST often has
      several workers' stories over the same photos).
    - ``by="album"``: key = album id; the references are the texts of *all* the album's
      rows, whatever photos they show. With whole stories (``seq_len=5``) this is AREL's
      grouping; :func:`protocol_references` checks that for the published protocols.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"album_id": ["a", "a"], "photo_ids": [("1", "2"), ("1", "2")],
    ...                       "text": ["one .", "two ."]})
    >>> references_from_dataset(frame)
    {'1_2': ['one .', 'two .']}
    """
    refs: dict[str, list[str]] = {}
    for key, text in zip(prediction_keys(dataset, by), frame_of(dataset)["text"]):
        refs.setdefault(key, []).append(str(text))
    return refs


def arel_story_texts(annotations: str | os.PathLike) -> dict[str, str]:
    """Each story's text as AREL's data preparation joins it from a VIST SIS file: the
    storylets' ``text`` untouched (not even stripped), joined by one space.

    ``load_vist`` strips each sentence, and ROUGE-L splits on single spaces, so a storylet
    with a trailing space (VIST has some) is one more empty token in AREL's reference. AREL
    joins in file order; this joins in ``worker_arranged_photo_order``, the same wherever the
    file lists a story's storylets in order (AREL's code relies on it), and still the story's
    order where a file does not (the shipped sample shuffles them).
    """
    storylets: dict[str, list[tuple[int, str]]] = {}
    for item in read_json(annotations)["annotations"]:
        storylet = item[0] if isinstance(item, list) else item
        storylets.setdefault(str(storylet["story_id"]), []).append(
            (int(storylet["worker_arranged_photo_order"]), str(storylet["text"])))
    return {story_id: " ".join(text for _, text in sorted(parts, key=lambda p: p[0]))
            for story_id, parts in storylets.items()}


def protocol_references(dataset, protocol: str = "window", by: str | None = None,
                        annotations: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """The references of each prediction key under ``protocol`` (see the module docstring).

    ``dataset`` is what ``load_vist`` read: for ``arel`` and ``vist-challenge``, with
    ``seq_len=5``, so that a story with a missing or unreadable photo is left out, as AREL
    and the challenge left them out. ``annotations`` (the same SIS file) makes ``arel``
    take each story's text exactly as AREL joined it (:func:`arel_story_texts`); METEOR,
    the challenge's only metric, does not see the difference.

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val", seq_len=5)
    >>> refs = protocol_references(val, "vist-challenge")
    >>> max(map(len, refs.values()))  # two workers' stories over the same five photos
    2
    """
    by = keyed_by(protocol, by)
    frame = frame_of(dataset)
    if protocol == "window":
        return references_from_dataset(frame, by)
    _check_whole_stories(frame, protocol)
    if protocol == "arel" and annotations is not None:
        raw = arel_story_texts(annotations)
        if absent := [s for s in frame["story_id"] if s not in raw]:
            raise ValueError(f"{annotations}: no story {absent[0]!r} ({len(absent)} of the "
                             f"dataset's stories are absent); pass the file it was read from")
        frame = frame.assign(text=[raw[s] for s in frame["story_id"]])
    return references_from_dataset(frame, by)


def protocol_keys(dataset, protocol: str = "window", by: str | None = None) -> dict[str, int]:
    """Each prediction key of ``protocol`` mapped to its first row: the photos to tell one
    story for (AREL generated one story per album, from its first kept story's photos)."""
    by = keyed_by(protocol, by)
    if protocol != "window":
        _check_whole_stories(frame_of(dataset), protocol)
    return keys_for(dataset, by)


def vist_challenge_meteor(predictions: Mapping[str, str],
                          references: Mapping[str, Sequence[str]]) -> float:
    """The challenge's score, x100: for each key, the best METEOR (``hter``) of its story
    against each reference alone; then the mean over keys. One Java process."""
    keys = list(references)
    pairs = [(predictions[k], [ref]) for k in keys for ref in references[k]]
    scores = iter(segment_meteor(pairs, mode="hter"))
    best = [max(next(scores) for _ in references[k]) for k in keys]
    return 100.0 * sum(best) / len(best)
