"""VIST metrics (BLEU, METEOR, ROUGE-L, CIDEr) under a named protocol, and reference-free
scores.

The n-gram metrics are pycocoevalcap's own scorer classes and METEOR is its jar
(:mod:`visiontales.evaluation.meteor`); ``COCOEvalCap.evaluate`` is not used: it builds SPICE, which
downloads 385 MB. Which references go with which prediction, and how the published VIST
numbers were computed, is :mod:`visiontales.evaluation.protocols`' (``window``, ``arel``,
``vist-challenge``). CLIP grounding (CLIPScore) is :mod:`visiontales.evaluation.clipscore`'s and the
prediction keys are :mod:`visiontales.evaluation.predictions`'; both are importable from here as well.

>>> refs = {"1_2_3": ["we went to the beach .", "the beach was sunny ."]}
>>> scores = evaluate({"1_2_3": "We went to the beach."}, refs, metrics=("BLEU",))
>>> round(scores["BLEU-1"], 1), scores["protocol"]
(100.0, 'window')
"""
from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

import pandas as pd

from visiontales.evaluation import meteor as _meteor
from visiontales.evaluation.clipscore import CLIPSCORE_WEIGHT, grounding_score  # noqa: F401  (visiontales.evaluation.metrics.*)
from visiontales.evaluation.predictions import collapse_predictions, keys_for, prediction_keys  # noqa: F401
from visiontales.evaluation.protocols import (  # noqa: F401
    METEOR_MODE,
    PROTOCOLS,
    protocol_keys,
    protocol_references,
    references_from_dataset,
    vist_challenge_meteor,
)
from visiontales.data.text import normalize_text
from visiontales.utils import require

METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "reference_free")
ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
REFERENCE_FREE = ("distinct-1", "distinct-2", "repetition", "length")  # the reference_free family


def metric_families(names: Iterable[str]) -> list[str]:
    """The :data:`METRICS` families ``evaluate(metrics=...)`` must run for score ``names``.

    >>> metric_families(["BLEU-4", "CIDEr", "distinct-2"])
    ['BLEU', 'CIDEr', 'reference_free']
    """
    names = list(names)
    return sorted({family for family in METRICS for name in names
                   if name.lower().startswith(family.lower())
                   or (family == "reference_free" and name in REFERENCE_FREE)})


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
        out[REFERENCE_FREE[n - 1]] = 100.0 * len(set(grams)) / len(grams) if grams else 0.0
    reps = []
    for toks in tokenised:
        grams = _ngrams(toks, 4)
        reps.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    out["repetition"] = 100.0 * sum(reps) / len(reps) if reps else 0.0
    out["length"] = sum(map(len, tokenised)) / len(tokenised) if tokenised else 0.0
    return out


def _check_keys(predictions: Mapping, references: Mapping) -> None:
    if not references:
        raise ValueError("no references to score against; build them with protocol_references()")
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same keys: {len(missing)} keys have no "
            f"prediction (e.g. {missing[:3]}), {len(extra)} predictions have no reference "
            f"(e.g. {extra[:3]}); key both with protocol_keys()/protocol_references()")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings")
        if not isinstance(predictions[key], str):
            raise TypeError(f"predictions[{key!r}] must be a str, got "
                            f"{type(predictions[key]).__name__}")


def _settings(protocol: str, metrics, meteor_mode, normalize) -> tuple[set[str], str, bool]:
    """The protocol's defaults for what the caller left as None, and what it forbids."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    published = protocol != "window"
    if metrics is None:
        metrics = ("METEOR",) if protocol == "vist-challenge" else METRICS
    wanted = {m.lower() for m in metrics}
    if unknown := wanted - {m.lower() for m in METRICS}:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    if protocol == "vist-challenge" and wanted != {"meteor"}:
        raise ValueError("protocol 'vist-challenge' has one metric, METEOR; use protocol='arel' "
                         "or 'window' for the others")
    meteor_mode = meteor_mode or METEOR_MODE[protocol]
    if meteor_mode not in _meteor.MODES:
        raise ValueError(f"meteor_mode must be one of {_meteor.MODES}, got {meteor_mode!r}")
    if published and meteor_mode != "hter":
        raise ValueError(f"protocol {protocol!r} runs METEOR with -t hter, as published; "
                         f"leave meteor_mode out, or use protocol='window'")
    return wanted, meteor_mode, (not published) if normalize is None else normalize


def evaluate(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] | None = None,
    meteor_mode: str | None = None,
    normalize: bool | None = None,
    protocol: str = "window",
) -> dict[str, float | str]:
    """Corpus metrics of one system under ``protocol``, all scaled x100 (``length`` is in
    tokens), plus ``n`` (keys scored) and ``protocol`` (its name).

    Build ``references`` (and the keys to predict) with
    :func:`~visiontales.evaluation.protocols.protocol_references` and
    :func:`~visiontales.evaluation.protocols.protocol_keys`; the protocols are described there.

    - ``window`` (default): ``BLEU-1``..``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``
      (pycocoevalcap's CIDEr-D, IDF from these references) and the
      :func:`reference_free_scores`; both sides through :func:`normalize_text`
      (``normalize=False``: as given, whitespace collapsed); ``meteor_mode="standard"``
      (pycocoevalcap's) or ``"hter"``. Not comparable to published VIST tables.
    - ``arel``: the same metrics exactly as AREL's evaluator computes them: the strings as
      given (not even whitespace touched: ROUGE-L splits on single spaces), METEOR ``hter``.
    - ``vist-challenge``: ``METEOR`` only: the challenge's best-per-key mean.

    For ``arel`` and ``vist-challenge`` the references are always scored as given;
    ``normalize=True`` tidies the predictions (free text from a model that does not write
    VIST's form). Without Java, METEOR is ``nan`` with one warning and the rest is computed.

    >>> evaluate({"k": "a dog runs ."}, {"k": ["a dog runs ."]}, metrics=("ROUGE-L",))
    {'ROUGE-L': 100.0, 'n': 1, 'protocol': 'window'}
    """
    wanted, meteor_mode, normalize = _settings(protocol, metrics, meteor_mode, normalize)
    _check_keys(predictions, references)
    if protocol == "window":
        clean = normalize_text if normalize else (lambda s: " ".join(s.split()))
        gts = {k: [clean(r) for r in refs] for k, refs in references.items()}
    else:
        clean = normalize_text if normalize else str
        gts = {k: list(refs) for k, refs in references.items()}
    res = {k: [clean(predictions[k])] for k in references}
    if protocol == "vist-challenge":
        return {"METEOR": vist_challenge_meteor({k: r[0] for k, r in res.items()}, gts),
                "n": len(res), "protocol": protocol}

    # start the JVM first: it loads its tables (seconds) while the Python metrics run
    scorers = {name: require(f"pycocoevalcap.{name}.{name}", "eval", "the VIST metrics")
               for name in ("bleu", "rouge", "cider") if wanted - {"reference_free"}}
    meteor = _meteor.start(meteor_mode) if "meteor" in wanted else None
    scores: dict[str, float] = {}
    try:
        if "bleu" in wanted:
            bleu, _ = scorers["bleu"].Bleu(4).compute_score(gts, res, verbose=0)
            scores.update({f"BLEU-{i + 1}": 100.0 * b for i, b in enumerate(bleu)})
        if "rouge-l" in wanted:
            scores["ROUGE-L"] = 100.0 * float(scorers["rouge"].Rouge().compute_score(gts, res)[0])
        if "cider" in wanted:
            scores["CIDEr"] = 100.0 * float(scorers["cider"].Cider().compute_score(gts, res)[0])
    except BaseException:
        if meteor is not None:
            meteor.close()
        raise
    if "meteor" in wanted:
        scores["METEOR"] = 100.0 * _meteor.finish(meteor, gts, res)[0]
    out: dict[str, float | str] = {name: scores[name] for name in ORDER if name in scores}
    if "reference_free" in wanted:
        out.update(reference_free_scores([r[0] for r in res.values()], normalize=False))
    return {**out, "n": len(res), "protocol": protocol}


def as_frame(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per system (index ``system``), one column per metric.

    >>> as_frame({"ours": {"BLEU-1": 40.0}, "baseline": {"BLEU-1": 30.0}}).loc["ours", "BLEU-1"]
    np.float64(40.0)
    """
    frame = pd.DataFrame.from_dict({k: dict(v) for k, v in results.items()}, orient="index")
    frame.index.name = "system"
    return frame
