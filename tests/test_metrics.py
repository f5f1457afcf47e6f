"""metrics.py (and clipscore.py, predictions.py's keys): agreement with pycocoevalcap under the
window protocol, METEOR modes and failures, reference groupings, reference-free scores and CLIP
grounding. normalize_text is tests/test_text.py's; the published protocols tests/test_protocols.py's."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from visiontales.evaluation.clipscore import grounding_score
from visiontales.data.sample import sample_dataset
from visiontales.evaluation.metrics import as_frame, evaluate, reference_free_scores, references_from_dataset
from visiontales.evaluation.predictions import collapse_predictions, keys_for, prediction_keys
from visiontales.data.text import normalize_text

VIST_TEXT = [
    "the family got together for a cookout . they had a lot of delicious food .",
    "[female] was so excited to see her friends at [location] .",
    "we did n't know it would rain , but it 's still a great day !",
    "[male] and [organization] 's members went to the game ... it was 1,000 people !",
]

# raw, mixed-case predictions: normalisation is part of what is compared
PREDICTIONS = {
    "1_2_3": "The family got together for a cookout. They had lots of food!",
    "4_5_6": "[Female] was excited to see her friends.",
    "7_8_9": "It rained, but we didn't care.",
    "10_11_12": "The game was great, the crowd was huge.",
}
REFERENCES = {
    "1_2_3": [VIST_TEXT[0], "we had a cookout with the family . the food was great ."],
    "4_5_6": [VIST_TEXT[1]],
    "7_8_9": [VIST_TEXT[2], "it rained all day . we stayed inside ."],
    "10_11_12": [VIST_TEXT[3], "the crowd at the game was huge .", "we went to a game ."],
}


@pytest.fixture(scope="module")
def ours():
    """evaluate() with its default metrics on the raw predictions."""
    return evaluate(PREDICTIONS, REFERENCES)


@pytest.mark.slow
def test_metrics_match_pycocoevalcap(ours, java):
    """evaluate() next to pycocoevalcap's scorers called directly, on normalised text."""
    gts = {k: [normalize_text(r) for r in refs] for k, refs in REFERENCES.items()}
    res = {k: [normalize_text(p)] for k, p in PREDICTIONS.items()}
    meteor = Meteor()
    with meteor.meteor_p:  # closes the pipes that pycocoevalcap's own cleanup leaves open
        direct = {"METEOR": meteor.compute_score(gts, res)[0]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    direct.update({f"BLEU-{i + 1}": b for i, b in enumerate(bleu)})
    direct["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    direct["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert set(direct) <= set(ours)
    for name, value in direct.items():
        assert ours[name] / 100 == pytest.approx(value, abs=1e-6), name
    assert 0 < ours["METEOR"] < 100 and ours["n"] == len(PREDICTIONS)


@pytest.mark.slow
def test_reference_free_scores_are_included(ours):
    expected = reference_free_scores(PREDICTIONS[k] for k in REFERENCES)
    assert {k: ours[k] for k in expected} == pytest.approx(expected)


def test_missing_java_gives_nan_one_warning_and_the_rest(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java anywhere
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = evaluate(PREDICTIONS, REFERENCES)
    assert math.isnan(scores["METEOR"])
    assert len(caught) == 1 and "java" in str(caught[0].message).lower()
    assert all(not math.isnan(scores[k]) for k in ("BLEU-4", "ROUGE-L", "CIDEr", "distinct-1"))


def test_java_that_fails_to_start_gives_nan_and_one_warning(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java VM' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = evaluate(PREDICTIONS, REFERENCES, metrics=("METEOR", "BLEU"))
    assert math.isnan(scores["METEOR"]) and scores["BLEU-1"] > 0
    assert len(caught) == 1 and "METEOR" in str(caught[0].message)


@pytest.mark.slow
def test_meteor_hter_mode_is_sane(java):
    perfect = {k: refs[0] for k, refs in REFERENCES.items()}
    scores = evaluate(perfect | {"4_5_6": PREDICTIONS["4_5_6"]}, REFERENCES,
                      metrics=("METEOR",), meteor_mode="hter")
    assert 50 < scores["METEOR"] <= 100
    assert set(scores) == {"METEOR", "n", "protocol"} and scores["protocol"] == "window"


def test_key_mismatch_and_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="no prediction.*7_8_9"):
        evaluate({"1_2_3": "x"}, {"1_2_3": ["x"], "7_8_9": ["y"]}, metrics=("BLEU",))
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate({"k": "x"}, {"k": ["x"]}, metrics=("SPICE",))
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate({"k": "x"}, {"k": []}, metrics=("BLEU",))


@pytest.fixture
def vist_frame():
    # album a: two workers' stories over photos 1,2,3 (story s1 has two windows), one
    # story over 4,5,6; album b: one story
    rows = [
        ("s1", "a", 0, ("1", "2", "3"), "one ."),
        ("s1", "a", 1, ("2", "3", "4"), "two ."),
        ("s2", "a", 0, ("1", "2", "3"), "three ."),
        ("s3", "a", 0, ("4", "5", "6"), "four ."),
        ("s4", "b", 0, ("7", "8", "9"), "five ."),
    ]
    return pd.DataFrame(rows, columns=["story_id", "album_id", "window", "photo_ids", "text"])


def test_sequence_protocol_groups_stories_over_the_same_photos(vist_frame):
    refs = references_from_dataset(vist_frame)
    assert refs == {"1_2_3": ["one .", "three ."], "2_3_4": ["two ."],
                    "4_5_6": ["four ."], "7_8_9": ["five ."]}
    keys = prediction_keys(vist_frame)
    assert keys == ["1_2_3", "2_3_4", "1_2_3", "4_5_6", "7_8_9"]
    assert keys_for(vist_frame) == {"1_2_3": 0, "2_3_4": 1, "4_5_6": 3, "7_8_9": 4}
    preds = collapse_predictions(keys, ["p0", "p1", "p2", "p3", "p4"])
    assert preds["1_2_3"] == "p0" and set(preds) == set(refs)
    assert evaluate(preds, refs, metrics=("BLEU",))["n"] == 4


def test_protocols_on_the_shipped_sample_dataset():
    dataset = sample_dataset("val")
    assert all(normalize_text(t) == t for t in dataset.frame["text"])  # already VIST form
    by_sequence = references_from_dataset(dataset)
    assert len(by_sequence) == len(keys_for(dataset)) < len(dataset)
    shared = [k for k, refs in by_sequence.items() if len(refs) == 2]
    assert shared  # two workers' stories over the same photos
    by_album = references_from_dataset(dataset, by="album")
    assert sum(map(len, by_album.values())) == sum(map(len, by_sequence.values())) == len(dataset)
    assert set(by_album) == set(dataset.frame["album_id"])


class _Dataset:  # StoryDataset's duck type
    def __init__(self, frame):
        self.frame = frame


def test_album_protocol_uses_every_story_of_the_album(vist_frame):
    dataset = _Dataset(vist_frame)
    refs = references_from_dataset(dataset, by="album")
    assert refs == {"a": ["one .", "two .", "three .", "four ."], "b": ["five ."]}
    assert keys_for(dataset, by="album") == {"a": 0, "b": 4}
    preds = collapse_predictions(prediction_keys(dataset, by="album"), list("vwxyz"))
    assert preds == {"a": "v", "b": "z"}
    with pytest.raises(ValueError, match="sequence' or 'album"):
        prediction_keys(dataset, by="story")


def test_reference_free_scores_on_known_stories():
    looping = "the dog ran the dog ran the dog ran"
    scores = reference_free_scores([looping, "A cat sat."])
    assert scores["length"] == (9 + 4) / 2
    assert scores["distinct-1"] == pytest.approx(100 * 7 / 13)  # the dog ran a cat sat .
    # looping: 6 four-grams, 3 unique -> 0.5; "a cat sat ." -> 1 four-gram, 0
    assert scores["repetition"] == pytest.approx(100 * 0.5 / 2)
    assert reference_free_scores(["a b c d e"])["distinct-2"] == 100.0


def test_as_frame_has_one_row_per_system():
    frame = as_frame({"ours": {"BLEU-1": 40.0, "CIDEr": 5.0}, "base": {"BLEU-1": 30.0}})
    assert list(frame.index) == ["ours", "base"] and frame.index.name == "system"
    assert np.isnan(frame.loc["base", "CIDEr"])


# --- grounding with a tiny random open_clip model --------------------------------------

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "vt-test-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("vt-test-tiny-clip")
    return model, preprocess, open_clip.get_tokenizer("vt-test-tiny-clip")


def _images(seed: int, n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


STORIES = ["a dog runs on the beach .", "we ate cake at the party .", "snow fell on the city ."]


def test_grounding_score_invariants(tiny_clip, tmp_path):
    model, preprocess, tokenizer = tiny_clip
    sequences = [_images(seed) for seed in range(3)]
    scores = grounding_score(STORIES, sequences, model, preprocess, tokenizer)
    assert len(scores) == 3 and all(0.0 <= s <= 2.5 for s in scores)
    # deterministic, independent of batching, and files score like the same PIL images
    again = grounding_score(STORIES, sequences, model, preprocess, tokenizer, batch_size=2)
    assert again == pytest.approx(scores, abs=1e-5)
    paths = []
    for i, image in enumerate(sequences[0]):
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    from_files = grounding_score(STORIES[:1], [paths], model, preprocess, tokenizer)
    assert from_files == pytest.approx(scores[:1], abs=1e-5)
    # a story's score depends on which images it is paired with
    crossed = [grounding_score([STORIES[0]], [seq], model, preprocess, tokenizer)[0]
               for seq in sequences]
    assert len({round(s, 6) for s in crossed}) > 1
    assert crossed[0] == pytest.approx(scores[0], abs=1e-5)
    assert model.training  # the caller's train/eval mode is restored


def test_grounding_score_checks_lengths(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    with pytest.raises(ValueError, match="2 stories but 1"):
        grounding_score(STORIES[:2], [_images(0)], model, preprocess, tokenizer)
