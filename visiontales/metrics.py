"""VIST metrics (BLEU, METEOR, ROUGE-L, CIDEr), reference-free scores and the protocol
that pairs predictions with references.

The n-gram metrics are pycocoevalcap's own scorer classes, run on text that
:func:`normalize_text` put in VIST's form, so numbers agree with the VIST literature.
``COCOEvalCap.evaluate`` is not used: it builds SPICE, which downloads 385 MB.
CLIP grounding (CLIPScore) is :mod:`visiontales.clipscore`'s, and how predictions are
keyed is :mod:`visiontales.predictions`'s; both are importable from here as well.

>>> refs = {"1_2_3": ["we went to the beach .", "the beach was sunny ."]}
>>> scores = evaluate({"1_2_3": "We went to the beach."}, refs, metrics=("BLEU",))
>>> round(scores["BLEU-1"], 1)
100.0
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Hashable, Iterable, Mapping, Sequence

import pandas as pd

from .clipscore import CLIPSCORE_WEIGHT, grounding_score  # noqa: F401  (visiontales.metrics.*)
from .data import frame_of
from .predictions import collapse_predictions, keys_for, prediction_keys  # noqa: F401
from .text import normalize_text
from .utils import require

METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "reference_free")

# --- references protocol ---------------------------------------------------------------

def references_from_dataset(dataset, by: str = "sequence") -> dict[str, list[str]]:
    """Reference stories per evaluation key, from the rows' ``text``.

    - ``by="sequence"`` (default): key = the photo ids joined by ``_``; the references
      are the texts of every row over that exact, ordered photo sequence (VIST often has
      several workers' stories over the same photos).
    - ``by="album"``: AREL's protocol (Wang et al. 2018, after the VIST challenge's
      ``AlbumEvaluator``): key = album id; the references are the texts of *all* the
      album's stories, whatever photos they used, and each album is scored with one
      prediction: the first one generated for it. AREL's stories were the whole
      five-image stories; here they are the dataset's windows, so with ``seq_len=5`` this
      is exactly AREL's setting and with shorter windows it is its window-level analogue.

    Predictions must be keyed the same way: see
    :func:`~visiontales.predictions.prediction_keys`, :func:`~visiontales.predictions.keys_for`
    and :func:`~visiontales.predictions.collapse_predictions`.

    >>> frame = pd.DataFrame({"album_id": ["a", "a"], "photo_ids": [("1", "2"), ("1", "2")],
    ...                       "text": ["one .", "two ."]})
    >>> references_from_dataset(frame)
    {'1_2': ['one .', 'two .']}
    """
    refs: dict[str, list[str]] = {}
    for key, text in zip(prediction_keys(dataset, by), frame_of(dataset)["text"]):
        refs.setdefault(key, []).append(str(text))
    return refs


# --- METEOR ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _meteor_class() -> type:
    """pycocoevalcap's ``Meteor``, subclassed here on first use: pycocoevalcap is the
    ``eval`` extra, so nothing imports it before METEOR is asked for."""
    meteor = require("pycocoevalcap.meteor.meteor", "eval", "METEOR")

    class Meteor(meteor.Meteor):
        """pycocoevalcap's METEOR 1.5 wrapper with a chosen task, readable failures and a close.

        ``standard`` launches exactly pycocoevalcap's command (``-l en -norm``). ``hter`` is
        the command of AREL's ``vist_eval/meteor/meteor.py`` (commented there as "MSR VIST
        group's measurement"): ``-t hter`` instead of ``-l en -norm``, same protocol (all
        references on one SCORE line, the corpus score of one EVAL line).
        """

        def __init__(self, mode: str = "standard"):
            # set before Popen, so a failed start never leaves close() without them
            self.lock = threading.Lock()
            self.meteor_p = None
            task = ["-t", "hter"] if mode == "hter" else ["-l", "en", "-norm"]
            self.meteor_cmd = ["java", "-jar", "-Xmx2G", meteor.METEOR_JAR,
                               "-", "-", "-stdio", *task]
            # a file, not a pipe: a pipe nobody reads can fill up and hang the JVM
            self._stderr = tempfile.TemporaryFile()
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd, cwd=os.path.dirname(os.path.abspath(meteor.__file__)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

        def stderr_tail(self) -> str:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace").strip()[-300:]

        def close(self) -> None:
            # no lock: a failed call leaves pycocoevalcap's lock held
            proc, self.meteor_p = getattr(self, "meteor_p", None), None
            if proc is not None:
                proc.kill()
                proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    try:
                        stream.close()
                    except OSError:  # a dead JVM's stdin may still hold unflushed bytes
                        pass
            if hasattr(self, "_stderr"):
                self._stderr.close()

        __del__ = close

    return Meteor


def _meteor_failed(reason: str) -> float:
    # stacklevel: warn() <- _meteor_failed <- _start/_finish_meteor <- evaluate <- caller
    warnings.warn(f"METEOR is reported as nan: {reason}", RuntimeWarning, stacklevel=4)
    return float("nan")


def _start_meteor(mode: str):
    """The METEOR process, or None after one warning when Java is missing."""
    if shutil.which("java") is None:
        _meteor_failed("no `java` on PATH; install a JRE, e.g. "
                       "`apt-get install default-jre-headless`")
        return None
    try:
        return _meteor_class()(mode)
    except OSError as err:
        _meteor_failed(f"could not start Java ({err})")
        return None


def _finish_meteor(meteor, gts: dict, res: dict) -> float:
    if meteor is None:
        return float("nan")  # _start_meteor already warned
    # "|||" separates fields in METEOR's protocol; pycocoevalcap strips it from hypotheses only
    gts = {k: [r.replace("|||", " ") for r in refs] for k, refs in gts.items()}
    try:
        return 100.0 * float(meteor.compute_score(gts, res)[0])
    except (OSError, ValueError) as err:
        return _meteor_failed(f"the METEOR jar failed ({err!r}; java said: "
                              f"{meteor.stderr_tail()!r})")


# --- corpus metrics --------------------------------------------------------------------

def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def reference_free_scores(stories: Iterable[str], normalize: bool = True) -> dict[str, float]:
    """Scores that need no reference, on normalised tokens (percentages except ``length``).

    - ``distinct-1``/``distinct-2``: corpus-level unique n-grams / all n-grams (Li et al.
      2016); low values mean every story says the same thing.
    - ``repetition``: seq-rep-4 (Welleck et al. 2020), the mean over stories of
      ``1 - unique 4-grams / 4-grams`` within the story; catches decoding loops.
    - ``length``: mean tokens per story (punctuation counts as a token).

    >>> reference_free_scores(["a b a b a b", "c d"])["distinct-1"]
    50.0
    """
    tokenised = [(normalize_text(s) if normalize else s).split() for s in stories]
    out: dict[str, float] = {}
    for n in (1, 2):
        grams = [g for toks in tokenised for g in _ngrams(toks, n)]
        out[f"distinct-{n}"] = 100.0 * len(set(grams)) / len(grams) if grams else 0.0
    reps = []
    for toks in tokenised:
        grams = _ngrams(toks, 4)
        reps.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    out["repetition"] = 100.0 * sum(reps) / len(reps) if reps else 0.0
    out["length"] = sum(map(len, tokenised)) / len(tokenised) if tokenised else 0.0
    return out


def _check_keys(predictions: Mapping, references: Mapping) -> None:
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same keys: {len(missing)} keys have no "
            f"prediction (e.g. {missing[:3]}), {len(extra)} predictions have no reference "
            f"(e.g. {extra[:3]}); key both with prediction_keys()/references_from_dataset()")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings")
        if not isinstance(predictions[key], str):
            raise TypeError(f"predictions[{key!r}] must be a str, got "
                            f"{type(predictions[key]).__name__}")


def evaluate(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = METRICS,
    meteor_mode: str = "standard",
    normalize: bool = True,
) -> dict[str, float]:
    """Corpus metrics of one system, all scaled x100 (``length`` is in tokens).

    Returns ``BLEU-1``..``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr`` (pycocoevalcap's,
    i.e. CIDEr-D with IDF from these references), the :func:`reference_free_scores` when
    ``"reference_free"`` is asked for, and ``n`` (stories scored). Without Java, METEOR is
    ``nan`` with one warning and the rest is still computed. ``meteor_mode="hter"`` runs
    METEOR as AREL's VIST evaluation did (``-t hter``, see ``_meteor_class``).
    ``normalize=False`` scores the text as given, only collapsing whitespace (METEOR talks
    to Java line by line).

    >>> evaluate({"k": "a dog runs ."}, {"k": ["a dog runs ."]}, metrics=("ROUGE-L",))
    {'ROUGE-L': 100.0, 'n': 1}
    """
    wanted = {m.lower() for m in metrics}
    unknown = wanted - {m.lower() for m in METRICS}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    if meteor_mode not in ("standard", "hter"):
        raise ValueError(f"meteor_mode must be 'standard' or 'hter', got {meteor_mode!r}")
    _check_keys(predictions, references)
    clean = normalize_text if normalize else (lambda s: " ".join(s.split()))
    res = {k: [clean(predictions[k])] for k in references}
    gts = {k: [clean(r) for r in refs] for k, refs in references.items()}

    # start the JVM first: it loads its tables (seconds) while the Python metrics run
    scorers = {name: require(f"pycocoevalcap.{name}.{name}", "eval", "the VIST metrics")
               for name in ("bleu", "rouge", "cider") if wanted - {"reference_free"}}
    meteor = _start_meteor(meteor_mode) if "meteor" in wanted else None
    scores: dict[str, float] = {}
    try:
        if "bleu" in wanted:
            bleu, _ = scorers["bleu"].Bleu(4).compute_score(gts, res, verbose=0)
            scores.update({f"BLEU-{i + 1}": 100.0 * b for i, b in enumerate(bleu)})
        if "rouge-l" in wanted:
            scores["ROUGE-L"] = 100.0 * float(scorers["rouge"].Rouge().compute_score(gts, res)[0])
        if "cider" in wanted:
            scores["CIDEr"] = 100.0 * float(scorers["cider"].Cider().compute_score(gts, res)[0])
        if "meteor" in wanted:
            scores["METEOR"] = _finish_meteor(meteor, gts, res)
    finally:
        if meteor is not None:
            meteor.close()
    order = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    out = {name: scores[name] for name in order if name in scores}
    if "reference_free" in wanted:
        out.update(reference_free_scores([r[0] for r in res.values()], normalize=False))
    out["n"] = len(res)
    return out


def as_frame(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per system (index ``system``), one column per metric.

    >>> as_frame({"ours": {"BLEU-1": 40.0}, "baseline": {"BLEU-1": 30.0}}).loc["ours", "BLEU-1"]
    np.float64(40.0)
    """
    frame = pd.DataFrame.from_dict({k: dict(v) for k, v in results.items()}, orient="index")
    frame.index.name = "system"
    return frame
