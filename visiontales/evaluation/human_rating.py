"""Blind human rating: export a sheet, let people fill it, aggregate like the human
evaluation of the instruction tuning and RL recipe (see :mod:`visiontales.recipes.instructions`;
its section 4.3 and Table 2): mean per criterion and system, here with a 95% interval.

Per item, the systems' stories appear under letters (A, B, C...) drawn at random for
that item, so a rater cannot learn which letter is which system; only the separate
``answer_key.json`` (keep it away from raters) maps letters back.

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> paths = export_rating_sheet({"ours": {"k1": "a story ."}, "base": {"k1": "b story ."}}, out)
>>> sorted(paths)
['answer_key', 'csv', 'html']
"""
from __future__ import annotations

import html
import math
import os
import random
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import pandas as pd

from visiontales.evaluation.judge import CRITERIA
from visiontales.data.images import ImageLike
from visiontales.evaluation.report import page, photos_html
from visiontales.utils import atomic_path, read_json, require, write_json

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_COLUMNS = ("rater", "item", "key", "system")


def _t_critical(n: int) -> float:
    """Two-sided 95% critical value for a mean of ``n`` values (nan when n < 2)."""
    if n < 2:
        return math.nan
    stats = require("scipy.stats", "eval", "95% intervals of human ratings")
    return float(stats.t.ppf(0.975, n - 1))


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def export_rating_sheet(
    systems: Mapping[str, Mapping[Hashable, str]],
    out_dir: str | os.PathLike,
    items: Mapping[Hashable, Sequence[ImageLike]] | None = None,
    seed: int = 0,
    criteria: Sequence[str] = CRITERIA,
) -> dict[str, Path]:
    """Write ``sheet.csv``, ``sheet.html`` (printable, with photos when ``items`` maps
    keys to image paths) and the secret ``answer_key.json``; return their paths.

    ``sheet.csv`` has one row per (item, label) with columns ``item, key, label, story``
    and one empty column per criterion for a rater to fill with integers 1-10. Every
    system must have a story for the same keys. The same ``seed`` gives the same sheet.

    >>> import tempfile
    >>> paths = export_rating_sheet({"ours": {"k1": "a dog ran .", "k2": "we ate ."},
    ...                              "base": {"k1": "a dog .", "k2": "food ."}}, tempfile.mkdtemp())
    >>> sorted(paths), len(pd.read_csv(paths["csv"]))
    (['answer_key', 'csv', 'html'], 4)
    """
    if not 2 <= len(systems) <= len(_LETTERS):
        raise ValueError(f"need 2 to {len(_LETTERS)} systems to compare, got {len(systems)}")
    names = list(systems)
    keys = list(systems[names[0]])
    for name in names[1:]:
        if set(systems[name]) != set(keys):
            missing = [k for k in keys if k not in systems[name]][:3]
            extra = [k for k in systems[name] if k not in systems[names[0]]][:3]
            raise ValueError(f"system {name!r} must have stories for the same keys as "
                             f"{names[0]!r}: missing e.g. {missing}, extra e.g. {extra}")
    rng = random.Random(seed)
    rows, answer = [], {}
    for number, key in enumerate(keys, start=1):
        order = rng.sample(names, len(names))  # letter i -> order[i], fresh for each item
        answer[str(number)] = {"key": str(key),
                               "labels": {_LETTERS[i]: name for i, name in enumerate(order)}}
        for i, name in enumerate(order):
            rows.append({"item": number, "key": str(key), "label": _LETTERS[i],
                         "story": systems[name][key], **{c: "" for c in criteria}})
    sheet = pd.DataFrame(rows, columns=["item", "key", "label", "story", *criteria])

    out = Path(out_dir)
    paths = {"csv": out / "sheet.csv", "html": out / "sheet.html",
             "answer_key": out / "answer_key.json"}
    _write_csv(sheet, paths["csv"])
    write_json(paths["answer_key"], {"seed": seed, "criteria": list(criteria), "items": answer})
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(_sheet_html(sheet, keys, items or {}, criteria), encoding="utf-8")
    return paths


def _sheet_html(sheet: pd.DataFrame, keys: list, items: Mapping, criteria: Sequence[str]) -> str:
    boxes = "".join(f"<td>{html.escape(c.replace('_', ' '))}: ____</td>" for c in criteria)
    parts = [f"<p>Rate each story from 1 (very poor) to 10 (excellent) on "
             f"{', '.join(c.replace('_', ' ') for c in criteria)}. Judge each story on its "
             f"own; a longer story is not a better one.</p>"]
    for (number, rows), key in zip(sheet.groupby("item", sort=True), keys):
        block = [f'<section class="item"><h2>item {number}</h2>',
                 photos_html(items.get(key, []))]
        for row in rows.itertuples():
            block.append(f'<p class="story"><b>{row.label}</b> {html.escape(row.story)}</p>'
                         f'<table class="metrics"><tr>{boxes}</tr></table>')
        parts.append("\n".join(block) + "</section>")
    return page("Story rating sheet", "\n".join(parts))


def _ratings(path: Path, answer: dict, criteria: Sequence[str]) -> pd.DataFrame:
    """One filled sheet as rows (item, key, system, criterion values), validated."""
    # utf-8-sig: spreadsheet programs often save a byte-order mark before "item"
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    missing = [c for c in ("item", "label", *criteria) if c not in sheet.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; is this an exported sheet?")
    records = []
    for index, row in sheet.iterrows():
        where = f"{path}: row {index + 2} (item {row['item']}, label {row['label']})"
        entry = answer.get(str(row["item"]).strip(), {})
        labels = entry.get("labels", {})
        if row["label"].strip() not in labels:
            raise ValueError(f"{where}: not in the answer key; was the sheet edited, or is "
                             f"it from another export?")
        record = {"item": str(row["item"]).strip(), "key": entry.get("key"),
                  "system": labels[row["label"].strip()]}
        for criterion in criteria:
            value = row[criterion].strip()
            if not (value.isdigit() and 1 <= int(value) <= 10):
                raise ValueError(f"{where}: {criterion} is {value!r}; ratings must be whole "
                                 f"numbers from 1 to 10")
            record[criterion] = int(value)
        records.append(record)
    return pd.DataFrame(records, columns=["item", "key", "system", *criteria])


def read_ratings(filled_csvs: Sequence[str | os.PathLike],
                 answer_key_path: str | os.PathLike) -> pd.DataFrame:
    """Every rating of the filled sheets, one row per (rater, story): columns ``rater``
    (the sheet's path: one file is one person), ``item``, ``key``, ``system`` and one int
    column per criterion of the answer key (:func:`rated_criteria`). A sheet may hold a
    subset of the rows, so raters can split the items."""
    key = read_json(answer_key_path)
    criteria = list(key["criteria"])
    if not filled_csvs:
        raise ValueError("give at least one filled sheet")
    paths = [Path(p) for p in filled_csvs]
    if len({p.resolve() for p in paths}) < len(paths):
        raise ValueError("the same filled sheet is given twice; one file per rater")
    frames = [_ratings(p, key["items"], criteria).assign(rater=str(p)) for p in paths]
    return pd.concat(frames, ignore_index=True)[[*_ID_COLUMNS, *criteria]]


def rated_criteria(ratings: pd.DataFrame) -> list[str]:
    """The criterion columns of :func:`read_ratings`' rows, in the sheet's order."""
    return [c for c in ratings.columns if c not in _ID_COLUMNS]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and the half width of its 95% t-interval (scipy's t
    distribution, the ``eval`` extra; nan for fewer than 2 values).

    >>> mean_ci95([7, 7, 7])
    (7.0, 0.0)
    """
    values = pd.Series(values, dtype=float)
    n = len(values)
    if n < 2:
        return float(values.mean()) if n else math.nan, math.nan
    return float(values.mean()), _t_critical(n) * float(values.std(ddof=1)) / math.sqrt(n)


def aggregate_ratings(filled_csvs: Sequence[str | os.PathLike],
                      answer_key_path: str | os.PathLike) -> pd.DataFrame:
    """Mean rating per system and criterion with a 95% interval, from filled sheets.

    Ratings of one item are first averaged over raters, then the mean and the t-interval
    (:func:`mean_ci95`) are taken over items: raters of the same story are not
    independent samples. Columns: ``<criterion>`` (mean), ``<criterion>_ci95`` (half
    width, so report ``mean ± ci95``), ``n`` (items), ``ratings``; index ``system``.
    A filled sheet may hold a subset of the rows, so raters can split the items.

    >>> import tempfile
    >>> paths = export_rating_sheet({"ours": {"k1": "a dog ran .", "k2": "we ate ."},
    ...                              "base": {"k1": "a dog .", "k2": "food ."}}, tempfile.mkdtemp())
    >>> sheet = pd.read_csv(paths["csv"])
    >>> for criterion in CRITERIA:  # a rater who gives every story 7
    ...     sheet[criterion] = 7
    >>> sheet.to_csv(paths["csv"], index=False)
    >>> table = aggregate_ratings([paths["csv"]], paths["answer_key"])
    >>> table.loc["ours", ["overall", "overall_ci95", "n"]].tolist()
    [7.0, 0.0, 2.0]
    """
    return summarize_ratings(read_ratings(filled_csvs, answer_key_path))


def summarize_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """:func:`aggregate_ratings`' table from :func:`read_ratings`' rows."""
    criteria = rated_criteria(ratings)
    per_item = ratings.groupby(["system", "item"])[criteria].mean()
    rows = {}
    for system, group in per_item.groupby(level="system"):
        row: dict[str, float] = {}
        for c in criteria:
            row[c], row[f"{c}_ci95"] = mean_ci95(group[c])
        row["n"] = len(group)
        row["ratings"] = int((ratings["system"] == system).sum())
        rows[system] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "system"
    return frame
