"""visiontales.data.dataset and visiontales.data.images: VIST loading, windows, skips, image decoding,
the shipped sample data."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from visiontales.data.dataset import COLUMNS, StoryDataset
from visiontales.data.sample import SAMPLE_DATA_DIR, sample_dataset, sample_vocabulary
from visiontales.data.vist import load_vist
from visiontales.data.images import UnreadableImageError, check_image, find_image, load_image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_sample_data.py"


def load(ann, images, **kwargs) -> StoryDataset:
    return load_vist(ann, images, progress=False, **kwargs)


def story_ids(i: int) -> list[str]:
    """Photo ids `make_vist` gives story i by default, in worker order."""
    return [str(30000 + 100 * i + k) for k in range(5)]


# ----------------------------------------------------------------------------- grouping, windows

def test_groups_by_story_and_orders_by_worker_order_not_file_order(make_vist, tmp_path):
    orders = [3, 0, 4, 1, 2]
    stories = [[{"worker_arranged_photo_order": o, "photo_flickr_id": f"{i}00{o}",
                 "text": f"s{i} o{o} ."} for o in orders] for i in range(1, 4)]
    ann, images = make_vist(tmp_path, stories)
    in_file = [(s["story_id"], s["worker_arranged_photo_order"])
               for [s] in json.loads(ann.read_text())["annotations"]]
    assert in_file != sorted(in_file)  # the file really is shuffled

    ds = load(ann, images, seq_len=5)
    assert ds.frame["story_id"].tolist() == ["1000", "1001", "1002"]
    for i, row in zip(range(1, 4), ds):
        assert row["photo_ids"] == tuple(f"{i}00{o}" for o in range(5))
        assert row["sentences"] == tuple(f"s{i} o{o} ." for o in range(5))
        assert row["text"] == " ".join(row["sentences"])
        assert [Path(p).name for p in row["image_paths"]] == [f"{p}.jpg" for p in row["photo_ids"]]


@pytest.mark.parametrize("seq_len, stride, starts", [
    (3, 1, [0, 1, 2]), (3, 2, [0, 2]), (5, 1, [0]), (1, 2, [0, 2, 4]), (2, 3, [0, 3]),
    (4, 5, [0])])
def test_windows(make_vist, tmp_path, seq_len, stride, starts):
    ann, images = make_vist(tmp_path)
    ds = load(ann, images, seq_len=seq_len, stride=stride)
    assert len(ds) == 3 * len(starts) and ds.skipped.empty
    for i, (story_id, rows) in enumerate(ds.frame.groupby("story_id", sort=True)):
        assert rows["window"].tolist() == starts
        for start, row in zip(starts, rows.itertuples()):
            assert row.photo_ids == tuple(story_ids(i)[start:start + seq_len])
            assert row.text == " ".join(f"story {i} sentence {k} ."
                                        for k in range(start, start + seq_len))


def test_text_strips_each_sentence_and_joins_with_one_space(make_vist, tmp_path):
    texts = ["  we went out . ", "\tit rained .\n", "the end ."]
    ann, images = make_vist(tmp_path, [[{"text": t} for t in texts]])
    row = load(ann, images)[0]
    assert row["sentences"] == ("we went out .", "it rained .", "the end .")
    assert row["text"] == "we went out . it rained . the end ."


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=6),
       seq_len=st.integers(1, 6), stride=st.integers(1, 4))
def test_window_count_property(make_vist, tmp_path_factory, lengths, seq_len, stride):
    # make_vist is a plain function, safe to share between examples; each gets a folder
    stories = [[{"photo_flickr_id": str(k)} for k in range(n)] for n in lengths]
    ann, images = make_vist(tmp_path_factory.mktemp("prop"), stories, image_size=8)
    ds = load(ann, images, seq_len=seq_len, stride=stride)
    assert len(ds) == sum(max(0, (n - seq_len) // stride + 1) for n in lengths)
    assert len(ds.skipped) == sum(n < seq_len for n in lengths)
    assert (ds.frame["photo_ids"].map(len) == seq_len).all()


# ----------------------------------------------------------------------------- skips

def write_truncated_jpeg(path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, "JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "missing image": lambda path: path.unlink(),
    "unreadable image: empty file": lambda path: path.write_bytes(b""),
    "unreadable image: truncated": write_truncated_jpeg,
    "unreadable image: not an image": lambda path: path.write_text("this is not a photo\n"),
}


@pytest.mark.parametrize("reason", list(DAMAGE))
def test_bad_image_skips_only_its_windows(make_vist, tmp_path, reason):
    ann, images = make_vist(tmp_path)
    bad = story_ids(0)[4]
    DAMAGE[reason](find_image(images, bad))
    ds = load(ann, images)
    assert len(ds) == 8  # story 0 keeps windows 0 and 1; stories 1 and 2 keep all three
    assert ds.frame.loc[ds.frame["story_id"] == "1000", "window"].tolist() == [0, 1]
    [skip] = ds.skipped.to_dict("records")
    assert (skip["story_id"], skip["window"]) == ("1000", 2)
    assert skip["reason"].startswith(reason) and bad in skip["reason"]


def test_bad_image_in_the_middle_skips_every_window_holding_it(make_vist, tmp_path):
    ann, images = make_vist(tmp_path)
    find_image(images, story_ids(1)[2]).write_bytes(b"")
    ds = load(ann, images)
    assert sorted(set(ds.frame["story_id"])) == ["1000", "1002"] and len(ds) == 6
    assert ds.skipped[["story_id", "window"]].values.tolist() == [["1001", 0], ["1001", 1],
                                                                   ["1001", 2]]


def test_empty_sentence_skips_its_windows(make_vist, tmp_path):
    stories = [[{}, {"text": "   "}, {}, {}, {}], [{}] * 5]
    ann, images = make_vist(tmp_path, stories)
    ds = load(ann, images)
    assert ds.frame["story_id"].tolist() == ["1000", "1001", "1001", "1001"]
    assert ds.frame["window"].tolist()[0] == 2
    assert ds.skipped["window"].tolist() == [0, 1]
    assert ds.skipped["reason"].str.contains("empty sentence at position 1").all()


@pytest.mark.parametrize("story, reason", [
    ([{}, {}], "story has 2 images, fewer than seq_len=3"),
    ([{"worker_arranged_photo_order": o} for o in (0, 1, 2, 2, 3)],
     "duplicate worker_arranged_photo_order 2"),
    ([{"worker_arranged_photo_order": o} for o in (0, 1, 3, 4)],
     "missing worker_arranged_photo_order 2"),
])
def test_whole_story_skips(make_vist, tmp_path, story, reason):
    ann, images = make_vist(tmp_path, [[{}] * 5, story, [{}] * 5])
    ds = load(ann, images)
    assert len(ds) == 6 and "1001" not in set(ds.frame["story_id"])
    assert ds.skipped.to_dict("records") == [{"story_id": "1001", "window": -1, "reason": reason}]


# ----------------------------------------------------------------------------- images

def save_two_frame_gif(path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:])


def save_rgba(path: Path, mode: str) -> None:
    image = Image.new(mode, (16, 16), (10, 200, 30, 255) if mode == "RGBA" else (60, 255))
    image.paste((0, 0, 0, 0) if mode == "RGBA" else (0, 0), (0, 0, 8, 16))  # transparent half
    image.save(path, "PNG")


def save_16bit(path: Path) -> None:
    pixels = np.array([[0, 32896, 65535, 65535]] * 4, dtype=np.uint16)  # 32896 = 128 * 257
    Image.fromarray(pixels).save(path, "PNG")


def save_exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.new("RGB", (20, 10), (0, 128, 0)).save(path, "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize("name, write, size, pixels", [
    ("palette.gif", save_two_frame_gif, (16, 16), {(0, 0): (255, 0, 0)}),  # first frame
    ("cmyk.jpg", lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, "JPEG"),
     (16, 16), {}),
    ("gray.png", lambda p: Image.new("L", (16, 16), 128).save(p), (16, 16),
     {(3, 3): (128, 128, 128)}),
    ("rgba.png", lambda p: save_rgba(p, "RGBA"), (16, 16),
     {(0, 0): (255, 255, 255), (12, 0): (10, 200, 30)}),
    ("la.png", lambda p: save_rgba(p, "LA"), (16, 16),
     {(0, 0): (255, 255, 255), (12, 0): (60, 60, 60)}),
    ("sixteen.png", save_16bit, (4, 4), {(0, 0): (0, 0, 0), (1, 0): (128, 128, 128),
                                         (3, 0): (255, 255, 255)}),
    ("bilevel.bmp", lambda p: Image.new("1", (8, 8), 1).save(p), (8, 8),
     {(0, 0): (255, 255, 255)}),
    ("rotated.jpg", save_exif_rotated, (10, 20), {}),
])
def test_load_image_converts_every_mode_to_rgb(tmp_path, name, write, size, pixels):
    path = tmp_path / name
    write(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == size
    for xy, rgb in pixels.items():
        assert np.abs(np.subtract(image.getpixel(xy), rgb)).max() <= 2, (xy, image.getpixel(xy))
    if name == "cmyk.jpg":  # CMYK (0, 255, 255, 0) is red
        r, g, b = image.getpixel((8, 8))
        assert r > 200 and g < 60 and b < 60
    assert check_image(path) is None


@pytest.fixture
def bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 * 64 > 2 * 100: PIL refuses it
    return path


@pytest.mark.parametrize("reason", list(DAMAGE) + ["unreadable image: decompression bomb"])
def test_unreadable_images_raise_and_check_reports(tmp_path, request, reason):
    if "bomb" in reason:
        path = request.getfixturevalue("bomb")
    else:
        path = tmp_path / "photo.jpg"
        Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
        DAMAGE[reason](path)
    assert check_image(path).startswith(reason)
    with pytest.raises(UnreadableImageError, match=re.escape(str(path))) as info:
        load_image(path)
    assert isinstance(info.value, ValueError) and reason in str(info.value)


def test_jpeg_with_bytes_after_its_end_marker_is_fine(tmp_path):
    path = tmp_path / "padded.jpg"
    Image.new("RGB", (32, 32), (9, 99, 199)).save(path)
    path.write_bytes(path.read_bytes() + b"\0" * 5000)  # some cameras pad files
    assert check_image(path) is None and load_image(path).size == (32, 32)


def test_find_image_tries_every_extension(tmp_path):
    names = ["1.jpg", "2.PNG", "3", "4.gif", "5.jpeg", "6.bmp", "7.JPG", "8.jpg", "8"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    expected = {"1": "1.jpg", "2": "2.PNG", "3": "3", "4": "4.gif", "5": "5.jpeg",
                "6": "6.bmp", "7": "7.JPG", "8": "8.jpg"}
    for photo_id, name in expected.items():
        assert find_image(tmp_path, photo_id) == tmp_path / name
    assert find_image(tmp_path, 1) == tmp_path / "1.jpg"
    assert find_image(tmp_path, "9") is None


def test_load_vist_with_mixed_extensions(make_vist, tmp_path):
    exts = dict(zip(story_ids(0), ["", ".png", ".gif", ".jpeg", ".BMP"]))
    ann, images = make_vist(tmp_path, [[{}] * 5], image_exts=exts)
    row = load(ann, images, seq_len=5)[0]
    assert [Path(p).name for p in row["image_paths"]] == [pid + ext for pid, ext in exts.items()]
    assert all(Path(p).is_absolute() for p in row["image_paths"])
    assert all(load_image(p).mode == "RGB" for p in row["image_paths"])


# ----------------------------------------------------------------------------- JSON errors

def test_ids_are_strings_and_vist_label_comes_from_albums(make_vist, tmp_path):
    stories = [[{"story_id": 7, "album_id": 55, "photo_flickr_id": 900 + k} for k in range(3)],
               [{"story_id": 8, "album_id": 56} for _ in range(3)]]
    ann, images = make_vist(tmp_path, stories, albums={55: "beach"})
    ds = load(ann, images)
    assert ds.frame["story_id"].tolist() == ["7", "8"]
    assert ds.frame["album_id"].tolist() == ["55", "56"]
    assert ds[0]["photo_ids"] == ("900", "901", "902")
    assert ds.frame["vist_label"].tolist() == ["beach", ""]


@pytest.mark.parametrize("name, content, message", [
    ("broken.json", '{"annotations": [[{"story_id": "1",', "not valid JSON ("),
    ("dii.json", '{"images": [], "albums": []}', "no 'annotations' key"),
    ("list.json", '[[{"story_id": "1"}]]', "no 'annotations' key"),
])
def test_unusable_json_names_the_file(tmp_path, name, content, message):
    (tmp_path / "images").mkdir()
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{name}: {message}")):
        load(tmp_path / name, tmp_path / "images")


@pytest.mark.parametrize("field", ["story_id", "photo_flickr_id", "worker_arranged_photo_order",
                                   "text"])
def test_missing_field_names_file_field_and_index(make_vist, tmp_path, field):
    ann, images = make_vist(tmp_path)
    data = json.loads(ann.read_text())
    del data["annotations"][3][0][field]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"sis\.json: annotation 3 has no '{field}'$"):
        load(ann, images)


def test_bad_order_value_and_non_utf8_bytes(make_vist, tmp_path):
    ann, images = make_vist(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"][0][0]["worker_arranged_photo_order"] = "first"
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 0 has 'worker_arranged_photo_order'"):
        load(ann, images)
    ann.write_bytes('{"annotations": [[{"text": "café"}]]}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"sis\.json: not UTF-8") as info:
        load(ann, images)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_missing_paths_and_bad_arguments(make_vist, tmp_path):
    ann, images = make_vist(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load(tmp_path / "nope.json", images)
    with pytest.raises(FileNotFoundError, match="no_images"):
        load(ann, tmp_path / "no_images")
    for kwargs in ({"seq_len": 0}, {"stride": 0}, {"seq_len": 2.5}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            load(ann, images, **kwargs)


# ----------------------------------------------------------------------------- StoryDataset

def test_dataset_protocol(make_vist, tmp_path):
    ann, images = make_vist(tmp_path, missing=(story_ids(2)[0],))
    ds = load(ann, images)
    assert list(ds.frame.columns) == list(COLUMNS) == [
        "story_id", "album_id", "window", "photo_ids", "image_paths", "sentences", "text",
        "vist_label"]
    assert list(ds.skipped.columns) == ["story_id", "window", "reason"]
    assert repr(ds) == "StoryDataset(8 windows from 3 stories, 1 skipped)"
    assert list(ds) == [ds[i] for i in range(len(ds))]
    assert ds[-1] == ds[7] and isinstance(ds[0]["window"], int)
    with pytest.raises(IndexError):
        ds[8]
    assert ds.texts == ds.frame["text"].tolist()
    paths = ds.image_paths
    assert len(paths) == len(set(paths)) == 14 and paths[:3] == list(ds[0]["image_paths"])

    subset = ds.select([7, 0])
    assert [r["window"] for r in subset] == [2, 0] and subset.skipped.equals(ds.skipped)
    assert len(ds.select(slice(0, 3))) == 3
    again = StoryDataset.from_frame(ds.frame, ds.skipped)
    pd.testing.assert_frame_equal(again.frame, ds.frame)


def test_from_records(tmp_path):
    ds = StoryDataset.from_records([["a/1.jpg", "a/2.png"], [tmp_path / "3.gif"]],
                                   ["one two .", "three ."],
                                   sentences=[["one .", "two ."], ["three ."]])
    assert list(ds.frame.columns) == list(COLUMNS) and len(ds) == 2
    assert ds.frame["story_id"].tolist() == ["0", "1"]
    assert ds[0]["photo_ids"] == ("1", "2") and ds[1]["photo_ids"] == ("3",)
    assert all(Path(p).is_absolute() for p in ds.image_paths)
    assert ds[0]["sentences"] == ("one .", "two .") and ds[0]["vist_label"] == ""
    assert StoryDataset.from_records([["x.jpg"]], ["x ."], story_ids=[42])[0]["story_id"] == "42"
    with pytest.raises(ValueError, match="2 image sequences but 1 texts"):
        StoryDataset.from_records([["a.jpg"], ["b.jpg"]], ["only one ."])
    with pytest.raises(ValueError, match="story_ids"):
        StoryDataset.from_records([["a.jpg"]], ["a ."], story_ids=["1", "2"])
    with pytest.raises(ValueError, match=r"sentences\[0\] has 1 sentences for 2 images"):
        StoryDataset.from_records([["a.jpg", "b.jpg"]], ["a ."], sentences=[["a ."]])
    with pytest.raises(ValueError, match="non-empty list of paths"):
        StoryDataset.from_records(["a.jpg"], ["a ."])


def test_from_frame_validates_and_fills():
    with pytest.raises(ValueError, match="text"):
        StoryDataset.from_frame(pd.DataFrame({"story_id": ["1"], "photo_ids": [("9",)]}))
    with pytest.raises(ValueError, match="photo_ids or image_paths"):
        StoryDataset.from_frame(pd.DataFrame({"story_id": ["1"], "text": ["t"]}))
    df = pd.DataFrame({"story_id": [5, 5, 6], "photo_ids": [(1, 2), (2, 3), (7, 8)],
                       "text": ["a", "b", "c"]}, index=[10, 11, 12])
    ds = StoryDataset.from_frame(df)
    assert list(ds.frame.columns) == list(COLUMNS)
    assert ds.frame["story_id"].tolist() == ["5", "5", "6"]
    assert ds.frame["window"].tolist() == [0, 1, 0]
    assert ds[0]["photo_ids"] == ("1", "2") and ds[0]["image_paths"] == ()
    assert ds[2]["album_id"] == "" and ds[2]["vist_label"] == "" and ds.skipped.empty


# ----------------------------------------------------------------------------- shipped sample data

@pytest.fixture(scope="module")
def sample():
    return {split: sample_dataset(split, seq_len=5) for split in ("train", "val")}


def test_sample_dataset_shape(sample):
    vocab = sample_vocabulary()
    train, val = sample["train"], sample["val"]
    assert len(train) + len(val) >= 60  # seq_len=5: one window per story
    for ds in (train, val):
        assert ds.skipped.empty and (ds.frame["photo_ids"].map(len) == 5).all()
        assert set(ds.frame["vist_label"]) == set(vocab["events"])
        per_album = ds.frame.groupby("album_id")["story_id"].nunique()
        assert (per_album == 2).sum() >= 2  # albums told twice, by different workers
        for _, twice in ds.frame[ds.frame["album_id"].isin(per_album[per_album == 2].index)] \
                .groupby("album_id"):
            assert twice["photo_ids"].nunique() == 1 and twice["text"].nunique() == 2
    assert set(train.frame["album_id"]).isdisjoint(val.frame["album_id"])
    assert len(sample_dataset("train")) == 3 * len(train)  # default seq_len=3, stride=1
    with pytest.raises(ValueError, match="'test'"):
        sample_dataset("test")


def test_sample_vocabulary():
    vocab = sample_vocabulary()
    assert len(vocab["objects"]) == 8 and len(vocab["events"]) == 5
    assert len(vocab["emotions"]) >= 6 and set(vocab["colors"]) == set(vocab["objects"])


def test_every_sample_sentence_names_exactly_its_object(sample):
    objects = sample_vocabulary()["objects"]
    for ds in sample.values():
        for row in ds:
            named = []
            for sentence in row["sentences"]:
                assert sentence == " ".join(sentence.split()) and sentence == sentence.lower()
                [obj] = [w for w in sentence.split() if w in objects]
                assert sum(sentence.count(o) for o in objects) == 1  # not even as a substring
                named.append(obj)
            assert len(set(named)) == 5  # five distinct objects per album


def generator_module():
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # reads all 750 shipped photos
def test_sample_images_load_and_show_the_named_object(sample):
    """Each photo shows the object its sentence names, large and in that object's colour:
    counting the pixels near each object's colour finds it in every image."""
    objects = sample_vocabulary()["objects"]
    drawn = generator_module().OBJECTS
    palette = np.array([drawn[o][1] for o in objects], dtype=np.float32)  # (8, 3)
    shares, named, paths = [], [], []
    for ds in sample.values():
        for row in ds:
            for path, sentence in zip(row["image_paths"], row["sentences"]):
                image = load_image(path)
                assert image.mode == "RGB" and image.size == (96, 96)
                pixels = np.asarray(image, dtype=np.float32).reshape(-1, 1, 3)
                near = np.sqrt(((pixels - palette) ** 2).sum(-1)) < 40  # (96 * 96, 8)
                shares.append(near.mean(0))
                named.append(next(w for w in sentence.split() if w in objects))
                paths.append(path)
    shares, named = np.array(shares), np.array(named)
    assert len(set(paths)) == 750 and set(named) == set(objects)  # 150 albums x 5 photos
    assert (np.array(objects)[shares.argmax(1)] == named).mean() > 0.95
    assert shares.max(1).mean() > 0.1  # drawn large
    suffixes = Counter(Path(p).suffix for p in paths)
    assert {".jpg", ".png", ".gif", ".jpeg", ".bmp", ""} <= set(suffixes)
    assert suffixes[".jpg"] > len(paths) / 2


def test_sample_json_is_vist_format():
    data = json.loads((SAMPLE_DATA_DIR / "train.story-in-sequence.json").read_text())
    assert {"annotations", "images", "albums", "info", "type"} <= set(data)
    assert data["type"] == "story_in_sequence"
    storylets = [item[0] for item in data["annotations"] if len(item) == 1]
    assert len(storylets) == len(data["annotations"])
    fields = {"story_id", "album_id", "photo_flickr_id", "worker_arranged_photo_order", "text",
              "original_text", "storylet_id", "setting", "tier"}
    assert all(fields <= set(s) and s["tier"] == "story-in-sequence" for s in storylets)
    assert all(s[k].isdigit() for s in storylets for k in ("story_id", "photo_flickr_id",
                                                           "album_id"))
    keys = [(s["story_id"], s["worker_arranged_photo_order"]) for s in storylets]
    assert keys != sorted(keys)  # shuffled, as real files are
    assert {"id", "album_id", "title", "url_o", "datetaken"} <= set(data["images"][0])
    assert {"id", "vist_label", "title", "description"} <= set(data["albums"][0])


def test_sample_data_is_small():
    size = sum(p.stat().st_size for p in SAMPLE_DATA_DIR.rglob("*") if p.is_file())
    assert size < 2.5e6


@pytest.mark.slow
def test_generator_is_deterministic(tmp_path):
    outputs = []
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / run)], check=True,
                       capture_output=True)
        files = sorted(p for p in (tmp_path / run).rglob("*") if p.is_file())
        outputs.append({str(p.relative_to(tmp_path / run)): p.read_bytes() for p in files})
    assert len(outputs[0]) == 753 and outputs[0] == outputs[1]
    for name in ("train.story-in-sequence.json", "val.story-in-sequence.json", "vocabulary.json"):
        assert outputs[0][name] == (SAMPLE_DATA_DIR / name).read_bytes(), f"{name} is stale"
