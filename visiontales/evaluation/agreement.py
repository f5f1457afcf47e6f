"""Do people agree with each other, and does the judge agree with people?

A judge's means are worth reporting only as far as the judge ranks stories as people do,
and people's means only as far as people agree among themselves. Both are measured on
the same stories, a story being one system's story for one item of a rating sheet:

- **people with people**: Krippendorff's alpha at the ordinal level (the ``krippendorff``
  package) over the raters' 1-10 ratings; 1 is perfect agreement, 0 is what chance gives.
  One filled sheet is one rater; stories rated by one person only do not count.
- **judge with people**: Spearman's rho between the judge's score of each story and the
  mean of its human ratings (scipy), with a 95% percentile bootstrap interval over stories
  (:func:`scipy.stats.bootstrap`, stories resampled as pairs; a resample whose scores are
  all one value has no rho and is left out).

Both need the ``eval`` extra (scipy, krippendorff).
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Mapping

import numpy as np
import pandas as pd

from visiontales.evaluation.human_rating import rated_criteria
from visiontales.utils import require

_WHAT = "agreement between raters and with the judge"
N_RESAMPLES = 2000
COLUMNS = ["alpha", "raters", "alpha_stories", "rho", "rho_low", "rho_high", "rho_stories"]


def spearman(x, y, axis: int = -1):
    """Spearman's rho along ``axis`` (Pearson's r of average ranks), vectorised so that the
    bootstrap computes all resamples at once; equals :func:`scipy.stats.spearmanr`.

    >>> float(spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])))
    0.8
    """
    stats = require("scipy.stats", "eval", _WHAT)
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant side has no rho: nan
        return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def people_alpha(ratings: pd.DataFrame, criterion: str) -> tuple[float, int, int]:
    """Krippendorff's ordinal alpha of ``criterion`` over :func:`read_ratings
    <visiontales.evaluation.human_rating.read_ratings>`' rows: ``(alpha, raters, stories
    rated by two or more)``; alpha is nan without such a story or without any variation."""
    krippendorff = require("krippendorff", "eval", _WHAT)
    matrix = ratings.pivot_table(index="rater", columns=["system", "item"], values=criterion,
                                 aggfunc="mean")
    pairable = int((matrix.notna().sum(axis=0) >= 2).sum())
    if pairable == 0:
        return math.nan, len(matrix), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no variation at all: 0/0
        alpha = krippendorff.alpha(reliability_data=matrix.to_numpy(dtype=float),
                                   level_of_measurement="ordinal", value_domain=list(range(1, 11)))
    return float(alpha), len(matrix), pairable


def judge_rho(judge: pd.Series, people: pd.Series, n_resamples: int = N_RESAMPLES,
              seed: int = 0) -> tuple[float, float, float, int]:
    """``(rho, low, high, stories)``: Spearman's rho between ``judge`` and ``people`` (two
    Series over the same story index; only stories in both count, in index order) and its
    95% percentile bootstrap interval (``seed`` seeds the resampling; a resample whose
    scores are all one value has no rho and is left out); nan where fewer than 3 stories
    or a side never varies."""
    stats = require("scipy.stats", "eval", _WHAT)
    both = pd.concat({"judge": judge, "people": people}, axis=1, join="inner").dropna().sort_index()
    x, y = both["judge"].to_numpy(float), both["people"].to_numpy(float)
    n = len(both)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, n
    rho = float(stats.spearmanr(x, y)[0])
    seeded = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resamples that never vary have no rho
        result = stats.bootstrap((x, y), spearman, paired=True, vectorized=True,
                                 method="percentile", n_resamples=n_resamples,
                                 **{seeded: np.random.default_rng(seed)})
        # scipy's percentile interval, leaving out the resamples without a rho (all one
        # score), which make scipy's own nan; with no such resample the two are the same
        low, high = np.nanpercentile(result.bootstrap_distribution, [2.5, 97.5])
    return rho, float(low), float(high), n


def story_means(ratings: pd.DataFrame) -> pd.DataFrame:
    """Each story's mean rating per criterion, indexed by ``(system, key)``."""
    return ratings.groupby(["system", "key"])[rated_criteria(ratings)].mean()


def judge_frame(judge_scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``{system: score_many() frame}`` as one frame indexed by ``(system, key)``."""
    frames = {name: scores.set_axis(scores.index.astype(str)) for name, scores in judge_scores.items()}
    return pd.concat(frames, names=["system", "key"]) if frames else pd.DataFrame()


def agreement(ratings: pd.DataFrame, judge_scores: Mapping[str, pd.DataFrame] | None = None,
              n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per rated criterion: people's alpha (``alpha``, ``raters``,
    ``alpha_stories``) and, for criteria the judge also scored, its rho with people
    (``rho``, ``rho_low``, ``rho_high``, ``rho_stories``), nan where it does not apply.

    ``ratings`` are :func:`read_ratings <visiontales.evaluation.human_rating.read_ratings>`'
    rows; ``judge_scores`` maps a system name (as on the sheets) to the judge's
    :meth:`score_many <visiontales.evaluation.judge.Judge.score_many>` frame of its
    stories, indexed by prediction key.
    """
    judged = judge_frame(judge_scores or {})
    people = story_means(ratings)
    rows = {}
    for criterion in rated_criteria(ratings):
        alpha, raters, alpha_stories = people_alpha(ratings, criterion)
        rho = (judge_rho(judged[criterion], people[criterion], n_resamples, seed)
               if criterion in judged else (math.nan,) * 3 + (0,))
        rows[criterion] = (alpha, raters, alpha_stories, *rho)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)
    table.index.name = "criterion"
    return table


def _number(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def agreement_lines(table: pd.DataFrame) -> list[str]:
    """``agreement()``'s table in words, one line per criterion, with the number of stories.

    >>> table = pd.DataFrame([[0.5, 2, 40, 0.61, 0.4, 0.77, 40]], columns=COLUMNS,
    ...                      index=pd.Index(["overall"], name="criterion"))
    >>> print(agreement_lines(table)[0])  # doctest: +NORMALIZE_WHITESPACE
    overall: people with people alpha 0.50 (ordinal, 2 raters, 40 stories); judge with
    people rho 0.61 [0.40, 0.77] (40 stories)
    """
    lines = []
    for criterion, row in table.iterrows():
        raters = int(row["raters"])
        line = (f"{criterion}: people with people alpha {_number(row['alpha'])} (ordinal, "
                f"{raters} rater{'s' * (raters != 1)}, {int(row['alpha_stories'])} stories)")
        if row["rho_stories"]:
            line += (f"; judge with people rho {_number(row['rho'])} [{_number(row['rho_low'])}, "
                     f"{_number(row['rho_high'])}] ({int(row['rho_stories'])} stories)")
        lines.append(line)
    return lines


AGREEMENT_NOTE = ("Agreement: Krippendorff's alpha (ordinal) among raters, over stories rated "
                  "by two or more; Spearman's rho between the judge's score and the mean human "
                  "rating of each story, with a 95% percentile bootstrap interval over stories "
                  f"({N_RESAMPLES} resamples; those where a side never varies left out).")
