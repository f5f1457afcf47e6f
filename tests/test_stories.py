"""Your own photo sequences: load_stories reads JSON lines and CSV with load_vist's checks,
and `visiontales train/generate/evaluate --stories` take the same file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import visiontales as vt
from visiontales.data.stories import load_stories


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder ``trip/`` of eight real JPEGs, 0.jpg to 7.jpg, beside where the stories file goes."""
    folder = tmp_path / "trip"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(folder / f"{i}.jpg")
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_json_lines_of_any_length_load_with_paths_relative_to_the_file(tmp_path, photos):
    stories = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "beach", "images": ["trip/0.jpg", "trip/1.jpg"], "story": "we  went to the beach ."},
        {"images": ["trip/2.jpg", "trip/3.jpg", "trip/4.jpg", "trip/5.jpg"], "story": "then we ate ."},
        {"images": [str(photos / "6.jpg")], "sentences": ["one last photo ."]},   # absolute; no story
    ])
    ds = vt.load_stories(stories, progress=False)
    frame = ds.frame
    assert len(ds) == 3 and ds.skipped.empty
    assert frame["story_id"].tolist() == ["beach", "2", "3"]           # the id, else the line number
    assert [len(p) for p in frame["image_paths"]] == [2, 4, 1]
    assert frame["image_paths"][0] == (str(photos / "0.jpg"), str(photos / "1.jpg"))
    assert frame["photo_ids"][0] == ("trip/0.jpg", "trip/1.jpg")       # as written in the file
    assert frame["text"].tolist() == ["we went to the beach .", "then we ate .", "one last photo ."]
    assert frame["sentences"][2] == ("one last photo .",)
    assert frame["album_id"].tolist() == frame["story_id"].tolist()


def test_broken_rows_are_skipped_with_the_reason(tmp_path, photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    stories = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "good", "images": ["trip/0.jpg", "trip/1.jpg"], "story": "fine ."},
        '{"id": "cut", "images": ["trip/0.jpg"',
        {"id": "noimages", "story": "no photos ."},
        {"id": "nostory", "images": ["trip/0.jpg"], "story": "  "},
        {"id": "gone", "images": ["trip/0.jpg", "trip/missing.jpg"], "story": "x ."},
        {"id": "bad", "images": ["trip/broken.jpg"], "story": "x ."},
        {"id": "count", "images": ["trip/0.jpg", "trip/1.jpg"], "sentences": ["only one ."]},
        {"id": "good", "images": ["trip/2.jpg"], "story": "same id again ."},
        ["a", "list"],
    ])
    ds = load_stories(stories, progress=False)
    assert ds.frame["story_id"].tolist() == ["good"]
    reasons = dict(zip(ds.skipped["story_id"], ds.skipped["reason"]))
    assert reasons["2"].startswith("line 2: not valid JSON")
    assert reasons["noimages"] == "'images' must be a non-empty list of image paths"
    assert reasons["nostory"] == "empty story"
    assert reasons["gone"] == "missing image (photo trip/missing.jpg)"
    assert reasons["bad"].startswith("unreadable image") and reasons["bad"].endswith("(photo trip/broken.jpg)")
    assert reasons["count"] == "1 sentences for 2 images"
    assert reasons["good"] == "repeats the id 'good' of an earlier row"
    assert reasons["9"] == "is a list, not an object with 'images' and 'story'"
    assert len(ds.skipped) == 8


def test_windows_when_seq_len_is_given(tmp_path, photos):
    names = [f"trip/{i}.jpg" for i in range(8)]
    stories = write_jsonl(tmp_path / "mine.jsonl", [
        {"id": "five", "images": names[:5], "sentences": [f"s{i} ." for i in range(5)]},
        {"id": "three", "images": names[5:8], "story": "a whole story ."},
        {"id": "four", "images": names[:4], "story": "cannot be cut ."},
        {"id": "two", "images": names[:2], "sentences": ["a .", "b ."]},
    ])
    ds = load_stories(stories, seq_len=3, progress=False)
    frame = ds.frame
    assert list(zip(frame["story_id"], frame["window"])) == [("five", 0), ("five", 1), ("five", 2), ("three", 0)]
    assert frame["text"].tolist() == ["s0 . s1 . s2 .", "s1 . s2 . s3 .", "s2 . s3 . s4 .", "a whole story ."]
    assert frame["photo_ids"][1] == tuple(names[1:4])
    reasons = dict(zip(ds.skipped["story_id"], ds.skipped["reason"]))
    assert reasons == {"four": "4 images and no 'sentences' to cut the story into windows of seq_len=3",
                       "two": "2 images, fewer than seq_len=3"}
    assert len(load_stories(stories, seq_len=3, stride=2, progress=False)) == 3   # five: 0, 2; three


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=6), seq_len=st.integers(1, 5),
       stride=st.integers(1, 3))
def test_window_count_property(tmp_path_factory, lengths, seq_len, stride):
    """Rows with a sentence per photo give floor((n - seq_len) / stride) + 1 windows each."""
    folder = tmp_path_factory.mktemp("prop")
    Image.new("RGB", (8, 8)).save(folder / "p.jpg")
    rows = [{"images": ["p.jpg"] * n, "sentences": [f"w{i} ." for i in range(n)]} for n in lengths]
    ds = load_stories(write_jsonl(folder / "s.jsonl", rows), seq_len=seq_len, stride=stride, progress=False)
    assert len(ds) == sum((n - seq_len) // stride + 1 for n in lengths if n >= seq_len)
    assert len(ds.skipped) == sum(n < seq_len for n in lengths)
    assert all(len(p) == seq_len for p in ds.frame["image_paths"])


def test_csv_gives_the_same_dataset_as_json_lines(tmp_path, photos):
    rows = [{"id": "a", "images": ["trip/0.jpg", "trip/1.jpg", "trip/2.jpg"], "story": "first , then ."},
            {"id": "b", "images": ["trip/3.jpg", "trip/missing.jpg"], "story": "gone ."},
            {"id": "c", "images": ["trip/4.jpg"], "story": "one ."}]
    jsonl = load_stories(write_jsonl(tmp_path / "s.jsonl", rows), progress=False)
    pd.DataFrame({"id": [r["id"] for r in rows], "images": [" ; ".join(r["images"]) for r in rows],
                  "story": [r["story"] for r in rows]}).to_csv(tmp_path / "s.csv", index=False)
    csv = load_stories(tmp_path / "s.csv", progress=False)
    pd.testing.assert_frame_equal(csv.frame, jsonl.frame)
    pd.testing.assert_frame_equal(csv.skipped, jsonl.skipped)
    # a JSON file holding one list of rows reads the same way
    (tmp_path / "s.json").write_text(json.dumps(rows), encoding="utf-8")
    pd.testing.assert_frame_equal(load_stories(tmp_path / "s.json", progress=False).frame, jsonl.frame)


def test_file_level_problems_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.jsonl: stories file not found"):
        load_stories(tmp_path / "absent.jsonl")
    (tmp_path / "s.csv").write_text("photos,text\na.jpg,hi .\n")
    with pytest.raises(ValueError, match=r"s.csv: no column\(s\) \['images', 'story'\]"):
        load_stories(tmp_path / "s.csv")
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown kind of stories file"):
        load_stories(tmp_path / "s.txt")
    (tmp_path / "latin.jsonl").write_bytes('{"story": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_stories(tmp_path / "latin.jsonl")
    for bad in (0, "3", True):
        with pytest.raises(ValueError, match="seq_len must be None or an integer"):
            load_stories(tmp_path / "s.csv", seq_len=bad)


@pytest.mark.slow
def test_your_own_photos_through_train_generate_and_evaluate_on_the_cli(tmp_path, cli):
    """A folder of photos and a stories file: train (with a broken row reported), generate a
    story for each held-out sequence, score them; the same file every step."""
    photos = tmp_path / "my_photos"
    photos.mkdir()
    sample = vt.sample_dataset("train", seq_len=5).frame.head(10)
    rows = []
    for row in sample.itertuples():
        names = []
        for path in row.image_paths:
            shutil.copy(path, photos / Path(path).name)
            names.append(f"my_photos/{Path(path).name}")
        rows.append({"id": row.story_id, "images": names, "sentences": list(row.sentences)})
    lost = {"id": "x", "images": rows[0]["images"][:2] + ["my_photos/none.jpg"], "story": "a ."}
    write_jsonl(tmp_path / "train.jsonl", rows[:8] + [lost])
    write_jsonl(tmp_path / "val.jsonl", rows[8:])

    out = cli("train", "--tiny", "--stories", "train.jsonl", "--val-stories", "val.jsonl", "--seq-len", "3",
              "--epochs", "1", "--batch-size", "8", "--output-dir", "run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "train: StoryDataset(24 windows from 8 stories, 1 skipped)" in out.stdout
    assert "first skipped: x (missing image (photo my_photos/none.jpg))" in out.stdout
    assert (tmp_path / "run" / "final" / "mapper.safetensors").is_file()

    out = cli("generate", "--model", "run/final", "--stories", "val.jsonl", "--out", "preds.jsonl",
              "--max-new-tokens", "8", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    preds = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and preds[0]["key"] == "_".join(rows[8]["images"])   # whole 5-photo sequences

    out = cli("evaluate", "--stories", "val.jsonl", "--predictions", "preds.jsonl", "--metrics", "BLEU",
              "reference_free", "--out", "scores", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["systems"]["preds"]["n"] == 2 and "BLEU-4" in scores["systems"]["preds"]
    assert scores["protocol"]["references"] == "val.jsonl"
    out = cli("evaluate", "--stories", "val.jsonl", "--predictions", "preds.jsonl", "--protocol", "arel",
              cwd=tmp_path)
    assert out.returncode == 2 and "score --stories with --protocol window" in out.stderr
