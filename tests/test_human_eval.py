"""human_eval.py: blind sheet export, answer key, filled-sheet validation and aggregation."""
from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from visiontales.evaluation.human_rating import CRITERIA, aggregate_ratings, export_rating_sheet

KEYS = [f"{i}_{i + 1}_{i + 2}" for i in range(0, 24, 3)]  # 8 items
SYSTEMS = {name: {key: f"story {n} for {key} ." for key in KEYS}
           for n, name in enumerate(["ours", "llava", "gpt2"])}
STORY_TO_SYSTEM = {story: name for name, stories in SYSTEMS.items() for story in stories.values()}
# known ratings per system and criterion
KNOWN = {"ours": (9, 8, 7, 9), "llava": (7, 7, 6, 7), "gpt2": (4, 5, 3, 4)}


def _fill(sheet_csv, out, shift=None):
    """A rater's filled copy: each story gets its system's KNOWN ratings (+ shift)."""
    sheet = pd.read_csv(sheet_csv, dtype=str, keep_default_na=False)
    for index, row in sheet.iterrows():
        system = STORY_TO_SYSTEM[row["story"]]
        for criterion, value in zip(CRITERIA, KNOWN[system]):
            sheet.loc[index, criterion] = str(value + (shift(system, row) if shift else 0))
    sheet.to_csv(out, index=False)
    return out


@pytest.fixture
def exported(tmp_path):
    return export_rating_sheet(SYSTEMS, tmp_path / "rating", seed=3)


def test_sheet_is_blind_and_answer_key_maps_back(exported):
    sheet = pd.read_csv(exported["csv"], dtype=str, keep_default_na=False)
    assert list(sheet.columns) == ["item", "key", "label", "story", *CRITERIA]
    assert (sheet[list(CRITERIA)] == "").all().all()
    assert not any(name in " ".join(sheet["story"]) for name in SYSTEMS)
    answer = json.loads(exported["answer_key"].read_text())
    for row in sheet.itertuples():
        assert sorted(sheet[sheet["item"] == row.item]["label"]) == ["A", "B", "C"]
        assert answer["items"][row.item]["labels"][row.label] == STORY_TO_SYSTEM[row.story]
        assert answer["items"][row.item]["key"] == row.key
    # letters are drawn per item: "A" is not always the same system
    behind_a = {answer["items"][item]["labels"]["A"] for item in answer["items"]}
    assert len(behind_a) > 1


def test_same_seed_same_sheet_other_seed_other_letters(exported, tmp_path):
    again = export_rating_sheet(SYSTEMS, tmp_path / "again", seed=3)
    assert again["csv"].read_text() == exported["csv"].read_text()
    other = export_rating_sheet(SYSTEMS, tmp_path / "other", seed=4)
    assert other["csv"].read_text() != exported["csv"].read_text()


def test_aggregate_recovers_known_means(exported, tmp_path):
    alice = _fill(exported["csv"], tmp_path / "alice.csv")
    bob = _fill(exported["csv"], tmp_path / "bob.csv")
    table = aggregate_ratings([alice, bob], exported["answer_key"])
    assert set(table.index) == set(SYSTEMS) and table.index.name == "system"
    for system, values in KNOWN.items():
        for criterion, value in zip(CRITERIA, values):
            assert table.loc[system, criterion] == pytest.approx(value)
            assert table.loc[system, f"{criterion}_ci95"] == pytest.approx(0.0)
        assert table.loc[system, "n"] == len(KEYS) and table.loc[system, "ratings"] == 16


def test_interval_is_a_t_interval_over_items(exported, tmp_path):
    # ours: +1 on odd items from both raters -> per-item means alternate 9 and 10
    def shift(system, row):
        return int(system == "ours" and int(row["item"]) % 2 == 1)

    files = [_fill(exported["csv"], tmp_path / f"r{i}.csv", shift) for i in range(2)]
    table = aggregate_ratings(files, exported["answer_key"])
    per_item = pd.Series([10 if item % 2 == 1 else 9 for item in range(1, 9)], dtype=float)
    half = stats.t.ppf(0.975, 7) * per_item.std(ddof=1) / math.sqrt(8)
    assert table.loc["ours", "coherence"] == pytest.approx(per_item.mean())
    assert table.loc["ours", "coherence_ci95"] == pytest.approx(half)
    assert table.loc["gpt2", "coherence_ci95"] == pytest.approx(0.0)


@pytest.mark.parametrize("bad", ["11", "0", "7.5", "", "good"])
def test_bad_rating_names_file_and_row(exported, tmp_path, bad):
    filled = _fill(exported["csv"], tmp_path / "carol.csv")
    sheet = pd.read_csv(filled, dtype=str, keep_default_na=False)
    sheet.loc[4, "relevance"] = bad
    sheet.to_csv(filled, index=False)
    with pytest.raises(ValueError, match=r"carol\.csv: row 6 .*relevance is .*1 to 10"):
        aggregate_ratings([filled], exported["answer_key"])


def test_sheet_from_another_export_is_refused(exported, tmp_path):
    filled = _fill(exported["csv"], tmp_path / "dave.csv")
    sheet = pd.read_csv(filled, dtype=str, keep_default_na=False)
    sheet.loc[0, "label"] = "Z"
    sheet.to_csv(filled, index=False)
    with pytest.raises(ValueError, match="dave.csv: row 2 .*not in the answer key"):
        aggregate_ratings([filled], exported["answer_key"])


def test_mismatched_systems_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same keys"):
        export_rating_sheet({"a": {"k1": "x"}, "b": {"k2": "y"}}, tmp_path)
    with pytest.raises(ValueError, match="2 to 26 systems"):
        export_rating_sheet({"a": {"k1": "x"}}, tmp_path)


def test_printable_sheet_has_stories_and_photos(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (300, 200), "green").save(photo)
    paths = export_rating_sheet(SYSTEMS, tmp_path / "out", items={KEYS[0]: [photo, photo]})
    source = paths["html"].read_text()
    text: list[str] = []
    parser = HTMLParser()
    parser.handle_data = text.append
    parser.feed(source)
    joined = " ".join(text)
    assert all(story in joined for story in STORY_TO_SYSTEM)
    assert source.count("data:image/jpeg;base64,") == 2
    assert not any(name in joined for name in SYSTEMS)  # the printable sheet is blind too
