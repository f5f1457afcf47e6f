"""evaluate / report / sheet commands: two systems side by side from prediction files."""
import csv
import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import visiontales as vt
from visiontales.evaluation.metrics import references_from_dataset
from visiontales.evaluation.predictions import read_predictions, write_predictions


def run(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "visiontales", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    """Two prediction files over the sample val split: a copy of one reference, and a constant."""
    folder = tmp_path_factory.mktemp("preds")
    val = vt.sample_dataset("val")
    refs = references_from_dataset(val)
    good = {k: v[0] for k, v in refs.items()}
    bad = {k: "we went there and it was a day ." for k in refs}
    write_predictions(folder / "good.jsonl", good, val)
    write_predictions(folder / "bad.jsonl", bad, val)
    return folder, refs


def test_prediction_files_round_trip(systems):
    folder, refs = systems
    back = read_predictions(folder / "good.jsonl")
    assert back == {k: v[0] for k, v in refs.items()}
    first = json.loads((folder / "good.jsonl").read_text().splitlines()[0])
    assert first["photo_ids"] == first["key"].split("_")


@pytest.mark.slow
def test_evaluate_prints_one_row_per_system_and_writes_csv_json(systems):
    folder, refs = systems
    out = run("evaluate", "--sample", "val", "--predictions", "good.jsonl", "--predictions",
              "baseline=bad.jsonl", "--metrics", "BLEU", "CIDEr", "reference_free",
              "--out", "results", "--report", "report.html", cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(folder / "results.csv") as f:
        rows = {r["system"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"good", "baseline"}
    assert float(rows["good"]["BLEU-4"]) > 50 > float(rows["baseline"]["BLEU-4"])
    assert float(rows["good"]["CIDEr"]) > float(rows["baseline"]["CIDEr"])
    saved = json.loads((folder / "results.json").read_text())
    assert saved["protocol"]["by"] == "sequence" and set(saved["systems"]) == {"good", "baseline"}
    assert "good" in out.stdout and "baseline" in out.stdout and "BLEU-4" in out.stdout

    texts = []

    class Collect(HTMLParser):
        def handle_data(self, data):
            texts.append(data)
    Collect().feed((folder / "report.html").read_text())
    page = " ".join(texts)
    assert all(key in page for key in refs)               # every sequence is in the report


@pytest.mark.slow
def test_evaluate_with_grounding_model(systems, tmp_path, cli):
    folder, refs = systems
    model = vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train"))
    model.save_pretrained(tmp_path / "m")
    out = cli("evaluate", "--sample", "val", "--predictions", "good.jsonl", "--metrics", "ROUGE-L",
              "--grounding-model", str(tmp_path / "m"), "--out", str(tmp_path / "g"), cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    value = json.loads((tmp_path / "g.json").read_text())["systems"]["good"]["grounding"]
    assert 0 <= value <= 2.5


def test_report_command_writes_html(systems, tmp_path, cli):
    folder, _ = systems
    out = cli("report", "--sample", "val", "--predictions", "good.jsonl", "--predictions", "bad.jsonl",
              "--metrics", "BLEU", "--out", str(tmp_path / "r.html"), "--max-items", "5", cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    html = (tmp_path / "r.html").read_text()
    assert html.count('class="item"') == 5 and "data:image/jpeg;base64" in html


def test_window_protocol_says_it_is_not_comparable(systems, tmp_path, cli):
    folder, _ = systems
    out = cli("evaluate", "--sample", "val", "--predictions", "good.jsonl", "--metrics", "BLEU",
              "--out", str(tmp_path / "w"), cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "protocol window" in out.stdout and "NOT comparable to published" in out.stdout
    protocol = json.loads((tmp_path / "w.json").read_text())["protocol"]
    assert (protocol["name"], protocol["seq_len"], protocol["meteor_mode"]) == ("window", 3, "standard")


def test_arel_protocol_scores_album_keyed_files(tmp_path, cli):
    """AREL's {album_id: [story]} file over whole stories, with the generate flags' spelling."""
    from visiontales.data.sample import SAMPLE_DATA_DIR
    stories = vt.sample_dataset("val", seq_len=5)
    albums = references_from_dataset(stories, by="album")
    (tmp_path / "prediction_test.json").write_text(json.dumps({k: [v[0]] for k, v in albums.items()}))
    args = ("evaluate", "--annotations", str(SAMPLE_DATA_DIR / "val.story-in-sequence.json"),
            "--images-dir", str(SAMPLE_DATA_DIR / "images"), "--predictions", "prediction_test.json",
            "--metrics", "BLEU", "--protocol")
    out = cli(*args, "arel", "--out", "a", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "protocol arel: AREL's album evaluation" in out.stdout
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["protocol"]["by"] == "album" and saved["protocol"]["seq_len"] == 5
    assert saved["systems"]["prediction_test"]["n"] == len(albums)
    wrong = cli(*args, "vist-challenge", cwd=tmp_path)  # album keys are not photo sequences
    assert wrong.returncode == 2 and "photo sequences" in wrong.stderr
    for flags, message in ((("--seq-len", "3"), "whole 5-photo stories"),
                           (("--by", "sequence"), "keys predictions by album"),
                           (("--meteor-mode", "standard"), "-t hter")):
        out = cli(*args, "arel", *flags, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_missing_predictions_are_named(systems, tmp_path, cli):
    folder, refs = systems
    partial = dict(list(read_predictions(folder / "good.jsonl").items())[:3])
    write_predictions(tmp_path / "partial.jsonl", partial)
    out = cli("evaluate", "--sample", "val", "--predictions", str(tmp_path / "partial.jsonl"),
              "--metrics", "BLEU", cwd=tmp_path)
    assert out.returncode == 2 and "has no story for" in out.stderr and "Traceback" not in out.stderr


def test_sheet_export_and_aggregate(systems, tmp_path, cli):
    folder, _ = systems
    out = cli("sheet", "export", "--sample", "val", "--predictions", "ours=good.jsonl", "--predictions",
              "baseline=bad.jsonl", "--out", str(tmp_path / "rating"), "--max-items", "4", cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    sheet = tmp_path / "rating" / "sheet.csv"
    with open(sheet) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert not {"ours", "baseline"} & {cell for row in rows for cell in row.values()}  # blind
    key = json.loads((tmp_path / "rating" / "answer_key.json").read_text())
    for row in rows:        # the rater likes the copied references
        system = key["items"][row["item"]]["labels"][row["label"]]
        for c in ("coherence", "relevance", "emotional_depth", "overall"):
            row[c] = 9 if system == "ours" else 3
    with open(tmp_path / "filled.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = cli("sheet", "aggregate", str(tmp_path / "filled.csv"), "--answer-key",
              str(tmp_path / "rating" / "answer_key.json"), "--out", str(tmp_path / "agg.csv"), cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    with open(tmp_path / "agg.csv") as f:
        agg = {r["system"]: r for r in csv.DictReader(f)}
    assert float(agg["ours"]["overall"]) == 9 and float(agg["baseline"]["overall"]) == 3
    assert "overall: people with people alpha n/a (ordinal, 1 rater, 0 stories)" in out.stdout
