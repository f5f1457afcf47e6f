"""One table like Tables 1 and 2 of the instruction tuning and RL recipe (see
:mod:`visiontales.recipes.instructions`): one row per system with its automatic metrics,
the judge's criteria and people's criteria, each criterion a mean over stories with the
half width of its 95% t-interval (``<name>_ci95``: report ``mean ± ci95``). How far the
judge and people agree is :mod:`visiontales.evaluation.agreement`.

>>> import pandas as pd
>>> judged = {"ours": pd.DataFrame({"overall": [6, 8]}, index=["1_2", "3_4"])}
>>> table = comparison_table({"ours": {"BLEU-4": 12.0}}, judge_scores=judged)
>>> table.loc["ours", ["BLEU-4", "judge_overall", "judge_overall_ci95"]].round(2).tolist()
[12.0, 7.0, 12.71]
>>> readable(table).loc["ours", "judge_overall"]
'7.00 ± 12.71'
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from visiontales.evaluation.human_rating import mean_ci95, summarize_ratings

COUNTS = ("n", "human_n", "human_ratings")


def judge_summary(scores: pd.DataFrame) -> dict[str, float]:
    """``judge_<criterion>`` (mean over stories) and ``judge_<criterion>_ci95`` of one
    system's :meth:`score_many <visiontales.evaluation.judge.Judge.score_many>` frame."""
    out: dict[str, float] = {}
    for criterion in scores.columns:
        out[f"judge_{criterion}"], out[f"judge_{criterion}_ci95"] = mean_ci95(scores[criterion])
    return out


def human_summary(ratings: pd.DataFrame) -> pd.DataFrame:
    """:func:`~visiontales.evaluation.human_rating.summarize_ratings`' table with its
    columns named ``human_<criterion>``, ``human_<criterion>_ci95``, ``human_n`` (items)
    and ``human_ratings``."""
    return summarize_ratings(ratings).add_prefix("human_")


def comparison_table(metrics: Mapping[str, Mapping[str, float]] | None = None,
                     judge_scores: Mapping[str, pd.DataFrame] | None = None,
                     ratings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per system (index ``system``): ``metrics`` (``{system: evaluate() result}``),
    then :func:`judge_summary` of ``judge_scores`` (``{system: score_many() frame}``), then
    :func:`human_summary` of ``ratings`` (:func:`read_ratings
    <visiontales.evaluation.human_rating.read_ratings>`' rows). A system missing from one
    part has n/a there; a rated system that is not among the others is refused, since its
    name on the sheets must match."""
    metrics, judge_scores = metrics or {}, judge_scores or {}
    names = list(dict.fromkeys([*metrics, *judge_scores]))
    rows: dict[str, dict] = {name: {**metrics.get(name, {})} for name in names}
    for name, scores in judge_scores.items():
        rows[name].update(judge_summary(scores))
    if ratings is not None:
        human = human_summary(ratings)
        unknown = [s for s in human.index if names and s not in rows]
        if unknown:
            raise ValueError(f"the rating sheets rate {unknown}, which are not among the systems "
                             f"compared ({names}): give each system the name it has on the "
                             f"sheets (--predictions NAME=FILE)")
        for name, row in human.to_dict("index").items():
            rows.setdefault(name, {}).update(row)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "system"
    return table


def readable(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``table`` for reading: each ``<name>`` with a ``<name>_ci95`` column becomes one
    ``"mean ± ci95"`` column, counts are whole, other numbers are rounded to ``digits``,
    missing ones n/a."""
    def text(value, count: bool = False) -> str:
        if isinstance(value, str):
            return value
        if pd.isna(value):
            return "n/a"
        return str(int(value)) if count else f"{value:.{digits}f}"

    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith("_ci95") and column[:-5] in table.columns:
            continue
        count = column in COUNTS or pd.api.types.is_integer_dtype(table[column])
        values = table[column].map(lambda value: text(value, count))
        if f"{column}_ci95" in table.columns:
            values = values + " ± " + table[f"{column}_ci95"].map(text)
        out[column] = values
    return out
