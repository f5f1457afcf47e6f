"""Agreement among raters and between the judge and people, and the one table of systems:
the figures equal krippendorff's and scipy's computed directly on a hand-made ratings set,
and ``visiontales evaluate --judge ... --human ...`` puts them with the table, in the CSV,
the JSON and the report."""
from __future__ import annotations

import json
import math

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import visiontales as vt
from visiontales.evaluation.agreement import agreement, agreement_lines, spearman
from visiontales.evaluation.comparison import comparison_table, readable
from visiontales.evaluation.human_rating import (
    aggregate_ratings, export_rating_sheet, read_ratings,
)
from visiontales.evaluation.metrics import references_from_dataset
from visiontales.evaluation.predictions import write_predictions

CRITERIA = ["coherence", "overall"]
KEYS = [f"{i}_{i + 1}" for i in range(0, 12, 2)]  # 6 items
SYSTEMS = {"ours": {k: f"our story for {k} ." for k in KEYS},
           "base": {k: f"a base story for {k} ." for k in KEYS}}
# hand-made: (rater, system, key) -> (coherence, overall); carol rates the first 4 items only
RATINGS = {}
for r, rater in enumerate(["alice", "bob", "carol"]):
    for s, system in enumerate(SYSTEMS):
        for i, key in enumerate(KEYS[:4] if rater == "carol" else KEYS):
            base = 8 - 4 * s + (i % 3) - 1
            RATINGS[rater, system, key] = (min(10, max(1, base + (r == 1) * (i % 2))),
                                           min(10, max(1, base + r - 1)))
JUDGE = {system: pd.DataFrame({"coherence": [9 - 4 * s + (i % 3) for i in range(6)],
                               "overall": [8 - 3 * s + (i * 5 % 4) for i in range(6)]},
                              index=pd.Index(KEYS, name="key"))
         for s, system in enumerate(SYSTEMS)}


def fill(sheet_csv, answer_key, rater, out):
    sheet = pd.read_csv(sheet_csv, dtype=str, keep_default_na=False)
    items = json.loads(answer_key.read_text())["items"]
    keep = []
    for index, row in sheet.iterrows():
        system = items[row["item"]]["labels"][row["label"]]
        values = RATINGS.get((rater, system, row["key"]))
        if values is not None:
            sheet.loc[index, CRITERIA] = [str(v) for v in values]
            keep.append(index)
    sheet.loc[keep].to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def sheets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rating")
    paths = export_rating_sheet(SYSTEMS, folder, criteria=CRITERIA, seed=1)
    filled = [fill(paths["csv"], paths["answer_key"], r, folder / f"{r}.csv")
              for r in ("alice", "bob", "carol")]
    return filled, paths["answer_key"]


def test_ratings_are_read_one_row_per_rater_and_story(sheets):
    filled, key = sheets
    ratings = read_ratings(filled, key)
    assert list(ratings.columns) == ["rater", "item", "key", "system", *CRITERIA]
    assert len(ratings) == len(RATINGS)
    for row in ratings.itertuples():
        rater = row.rater.rsplit("/", 1)[-1][:-4]
        assert (row.coherence, row.overall) == RATINGS[rater, row.system, row.key]
    with pytest.raises(ValueError, match="given twice"):
        read_ratings([filled[0], filled[0]], key)


def test_alpha_equals_krippendorff_and_rho_equals_scipy(sheets):
    table = agreement(read_ratings(*sheets), JUDGE, seed=7)
    stories = [(system, key) for system in SYSTEMS for key in KEYS]
    for c, criterion in enumerate(CRITERIA):
        matrix = [[RATINGS.get((rater, *story), (np.nan,) * 2)[c] for story in stories]
                  for rater in ("alice", "bob", "carol")]
        alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
        assert table.loc[criterion, "alpha"] == pytest.approx(alpha, abs=1e-12)
        assert table.loc[criterion, ["raters", "alpha_stories"]].tolist() == [3, 12]

        ordered = sorted(stories)  # stories in (system, key) order, as agreement() takes them
        judge = np.array([JUDGE[s].loc[k, criterion] for s, k in ordered], dtype=float)
        people = np.array([np.mean([RATINGS[r, s, k][c] for r in ("alice", "bob", "carol")
                                    if (r, s, k) in RATINGS]) for s, k in ordered])
        assert table.loc[criterion, "rho"] == pytest.approx(stats.spearmanr(judge, people)[0])
        direct = stats.bootstrap((judge, people), lambda a, b: stats.spearmanr(a, b)[0],
                                 paired=True, vectorized=False, method="percentile",
                                 n_resamples=2000, random_state=np.random.default_rng(7))
        assert table.loc[criterion, "rho_low"] == pytest.approx(direct.confidence_interval.low)
        assert table.loc[criterion, "rho_high"] == pytest.approx(direct.confidence_interval.high)
        assert table.loc[criterion, "rho_stories"] == 12
    assert -1 <= table["rho_low"].min() < table["rho_high"].max() <= 1


def test_vectorised_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 5, (50, 9)), rng.integers(1, 11, (50, 9))
    expected = [stats.spearmanr(a, b)[0] for a, b in zip(x, y)]
    np.testing.assert_allclose(spearman(x, y), expected, equal_nan=True)


def test_one_rater_or_a_constant_judge_has_no_agreement(sheets):
    filled, key = sheets
    flat = {s: frame.assign(overall=5) for s, frame in JUDGE.items()}
    table = agreement(read_ratings(filled[:1], key), flat)
    assert math.isnan(table.loc["overall", "alpha"]) and table.loc["overall", "alpha_stories"] == 0
    assert math.isnan(table.loc["overall", "rho"]) and table.loc["overall", "rho_stories"] == 12
    assert "alpha n/a (ordinal, 1 rater, 0 stories)" in agreement_lines(table)[1]


def test_comparison_table_has_judge_and_human_means_with_t_intervals(sheets):
    ratings = read_ratings(*sheets)
    table = comparison_table({"ours": {"BLEU-4": 20.0}, "base": {"BLEU-4": 10.0}}, JUDGE, ratings)
    scores = JUDGE["base"]["overall"]
    half = stats.t.ppf(0.975, 5) * scores.std(ddof=1) / math.sqrt(6)
    assert table.loc["base", "judge_overall"] == pytest.approx(scores.mean())
    assert table.loc["base", "judge_overall_ci95"] == pytest.approx(half)
    human = aggregate_ratings(*sheets)
    for column in ("coherence", "coherence_ci95", "n", "ratings"):
        assert table.loc["ours", f"human_{column}"] == pytest.approx(human.loc["ours", column])
    assert readable(table).loc["base", "judge_overall"] == f"{scores.mean():.2f} ± {half:.2f}"
    with pytest.raises(ValueError, match=r"rate \['base'\].*NAME=FILE"):
        comparison_table({"ours": {}}, None, ratings)


@pytest.mark.slow  # the judge scores 144 stories over HTTP
def test_evaluate_puts_metrics_judge_people_and_agreement_in_one_table(serve, tmp_path, cli):
    val = vt.sample_dataset("val")
    refs = references_from_dataset(val)
    good = {k: v[0] for k, v in refs.items()}
    write_predictions(tmp_path / "good.jsonl", good, val)
    write_predictions(tmp_path / "bad.jsonl", {k: f"we went to {k} ." for k in refs}, val)

    def judge_reply(n, body):  # the stand-in judge likes longer stories
        story = body["messages"][0]["content"].split('"""')[1]
        score = min(10, len(story.split()) // 3 + 1)
        return 200, json.dumps({"coherence": score, "overall": score}), 0
    server = serve(judge_reply)

    systems = ("--predictions", "ours=good.jsonl", "--predictions", "base=bad.jsonl")
    out = cli("sheet", "export", "--sample", "val", *systems, "--max-items", "6", "--criteria",
              *CRITERIA, "--out", "rating", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    key = json.loads((tmp_path / "rating" / "answer_key.json").read_text())
    assert key["criteria"] == CRITERIA
    sheet = pd.read_csv(tmp_path / "rating" / "sheet.csv", dtype=str, keep_default_na=False)
    for r, rater in enumerate(("alice", "bob")):
        for index, row in sheet.iterrows():
            mine = key["items"][row["item"]]["labels"][row["label"]] == "ours"
            value = (7 if mine else 3) + (int(row["item"]) + r) % 3
            sheet.loc[index, CRITERIA] = [str(value), str(value)]
        sheet.to_csv(tmp_path / f"{rater}.csv", index=False)

    out = cli("evaluate", "--sample", "val", *systems, "--metrics", "reference_free",
              "--judge", server.base_url, "--judge-model", "judge", "--judge-cache", "cache",
              "--judge-criteria", *CRITERIA, "--human", "alice.csv", "bob.csv",
              "--answer-key", "rating/answer_key.json", "--out", "results", "--report", "r.html",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(server.requests) == 2 * len(refs)
    table = pd.read_csv(tmp_path / "results.csv", index_col="system")
    for column in ("distinct-2", "judge_overall", "judge_overall_ci95", "human_overall",
                   "human_overall_ci95", "human_n"):
        assert column in table.columns
    assert table.loc["ours", "judge_overall"] > table.loc["base", "judge_overall"]
    assert table.loc["ours", "human_n"] == 6
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["agreement"]) == set(CRITERIA)
    overall = saved["agreement"]["overall"]
    assert overall["raters"] == 2 and overall["alpha_stories"] == 12 and overall["rho_stories"] == 12
    assert overall["rho_low"] <= overall["rho"] <= overall["rho_high"] and overall["rho"] > 0.5
    assert "overall: people with people alpha" in out.stdout and "(12 stories)" in out.stdout
    assert "±" in out.stdout
    report = (tmp_path / "r.html").read_text()
    assert "judge with people rho" in report and "Krippendorff" in report and "±" in report

    missing = cli("evaluate", "--sample", "val", *systems, "--metrics", "reference_free",
                  "--human", "alice.csv", cwd=tmp_path)
    assert missing.returncode == 2 and "--answer-key" in missing.stderr
