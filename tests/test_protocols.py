"""protocols.py, metrics.evaluate(protocol=...) and `visiontales evaluate --protocol`: the
published VIST protocols against an independent re-computation on a VIST-format set on disk.

The re-computation reads the SIS file as AREL's data preparation and the VIST challenge's
scorer do (raw storylet text, their kept stories, their grouping) and scores with
pycocoevalcap's scorer classes and a METEOR jar process of its own, started with `-t hter`
and spoken to line by line as AREL's wrapper and the challenge's scorer use it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as pycoco_meteor
from pycocoevalcap.rouge.rouge import Rouge

from visiontales.data.vist import load_vist
from visiontales.data.sample import sample_dataset
from visiontales.evaluation.metrics import evaluate
from visiontales.evaluation.predictions import read_predictions
from visiontales.evaluation.protocols import keyed_by, protocol_keys, protocol_references

# VIST-form sentences holding the token shapes of real VIST text
SENTENCES = [
    "[male] and [female] went to the st. louis fair w/ mr. [male] .",
    "we did n't know it 's `` the best '' ride -- but it was .",
    "the jack-o-lanterns were lit ( all of them ) : what a night..",
    "ms. [female] and dr. [male] were there ... i 'm sure they 'd come back .",
    "[organization] 's soldiers-to-be watched t.v with the d.j jr. ok. ?",
    "we 're happy , you 've seen it and they 'll go !",
    "the [location] was crowded today .",
    "everyone had a great time at the party .",
    "there were lots of pumpkins and [male] carved one .",
    "the kids played games in the yard .",
    "we ate cake and ice cream .",
    "at the end of the day we went home .",
]


def _story(i: int, album: str, photos: range, texts: dict[int, str] | None = None) -> list[dict]:
    texts = texts or {}
    return [{"album_id": album, "photo_flickr_id": str(p),
             "text": texts.get(k, SENTENCES[(i * 5 + k) % len(SENTENCES)])}
            for k, p in enumerate(photos)]


def _stories() -> list[list[dict]]:
    return [
        _story(0, "a1", range(101, 106)),
        _story(1, "a1", range(101, 106)),              # a second story over the same photos
        _story(2, "a1", range(106, 111)),              # the album's other photos
        _story(3, "a2", range(201, 206)),
        _story(4, "a2", range(201, 206)),
        _story(5, "a3", range(301, 306)),              # photo 303 is missing: not kept
        _story(6, "a3", range(306, 311)),
        _story(7, "a4", range(401, 406)),              # photo 402 is missing: the album is gone
        # storylets with stray spaces, as some VIST text has
        _story(8, "a5", range(501, 506), {1: "it was n't bad . ", 4: "we left at 10:30 . "}),
    ]


MISSING = ("303", "402")


@pytest.fixture(scope="module")
def vist_set(tmp_path_factory, make_vist):
    """A VIST SIS file in VIST's own order (each story's storylets in order) and its images."""
    return make_vist(tmp_path_factory.mktemp("vist"), _stories(), missing=MISSING, shuffle=False)


# --- the re-computation: the SIS file read as AREL and the challenge read it -------------

def _published_stories(sis: Path, images: Path) -> dict[str, dict]:
    """story_id -> album, photo ids and storylet texts in the file's order, for the stories
    whose five photos all exist (AREL keeps those; the challenge dropped the others)."""
    stories: dict[str, dict] = {}
    for [storylet] in json.loads(sis.read_text())["annotations"]:
        story = stories.setdefault(storylet["story_id"], {"album": storylet["album_id"],
                                                          "photos": [], "texts": []})
        story["photos"].append(storylet["photo_flickr_id"])
        story["texts"].append(storylet["text"])
    return {sid: s for sid, s in stories.items()
            if sum((images / f"{p}.jpg").exists() for p in s["photos"]) == 5}


def _arel_references(sis: Path, images: Path) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for story in _published_stories(sis, images).values():
        refs.setdefault(story["album"], []).append(" ".join(story["texts"]))
    return refs


def _challenge_references(sis: Path, images: Path) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for story in _published_stories(sis, images).values():
        refs.setdefault("_".join(story["photos"]), []).append(" ".join(story["texts"]).strip())
    return refs


class _MeteorJar:
    """METEOR 1.5's jar, as AREL's wrapper and the challenge run it: `-t hter`."""

    def __init__(self):
        jar_dir = os.path.dirname(os.path.abspath(pycoco_meteor.__file__))
        # text lines as UTF-8, as pycocoevalcap (str.encode()) and the vist_eval wrappers write them
        self.proc = subprocess.Popen(["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-",
                                      "-stdio", "-t", "hter"], cwd=jar_dir, text=True,
                                     encoding="utf-8", stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, line: str, answers: int = 1) -> list[str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return [self.proc.stdout.readline().strip() for _ in range(answers)]

    def stats(self, hypothesis: str, references: list[str]) -> str:
        hypothesis = hypothesis.replace("|||", "").replace("  ", " ")  # as AREL's _stat
        return self._ask(" ||| ".join(("SCORE", " ||| ".join(references), hypothesis)))[0]

    def corpus(self, stats: list[str]) -> float:
        return float(self._ask("EVAL ||| " + " ||| ".join(stats), len(stats) + 1)[-1])

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def _arel_scores(refs: dict[str, list[str]], preds: dict[str, str], jar=None) -> dict[str, float]:
    """AlbumEvaluator's four scorers on the strings as given (0-1 scale)."""
    gts, res = refs, {k: [preds[k]] for k in refs}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{i + 1}": b for i, b in enumerate(bleu)}
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    if jar is not None:
        out["METEOR"] = jar.corpus([jar.stats(preds[k], refs[k]) for k in refs])
    return out


def _challenge_score(refs: dict[str, list[str]], preds: dict[str, str], jar) -> float:
    """Each story against each reference alone, the best per sequence, the mean."""
    best = [max(jar.corpus([jar.stats(preds[k], [ref])]) for ref in refs[k]) for k in refs]
    return sum(best) / len(best)


# AREL writes its predictions as {album_id: [story]}; its stories start with two spaces
AREL_PREDICTIONS = {
    "a1": "  [male] went to the st. louis fair w/ mr. [male] . it was n't `` bad '' .",
    "a2": "  we 're happy -- the kids played games in the yard ... and ate cake .",
    "a3": "the jack-o-lanterns were lit : what a night.. i 'm sure they 'd  come back .",
    "a5": "  there were lots of pumpkins . we left at 10:30 . ",
}
CHALLENGE_PREDICTIONS = {
    "101_102_103_104_105": "[male] and [female] went to the fair w/ dr. [male] .",
    "106_107_108_109_110": "we did n't know it was `` the best '' ride -- ok. ?",
    "201_202_203_204_205": "the [location] was crowded . everyone had a great time .",
    "306_307_308_309_310": "  the kids played games in the yard and ate cake .",
    "501_502_503_504_505": "it was n't bad . we left at 10:30 .",
}


# VIST text is not all ASCII (café, piñata, names of places): stories and predictions that are
UNICODE_SENTENCES = [
    "we ate crème brûlée at the café in zürich .",
    "the piñata broke and señor [male] laughed .",
    "my grandmother 's jalapeño soup was très bon !",
    "we said `` tschüss '' to the façade of the old hôtel .",
    "the kids wrote 你好 and こんにちは on the board .",
    "[female] took a photo of the fjord at ålesund .",
    "it was a naïve plan , but the smörgåsbord was great .",
    "at the end of the day we drove back to são paulo .",
]
UNICODE_STORIES = [
    [{"album_id": "u1", "photo_flickr_id": str(p), "text": UNICODE_SENTENCES[(p + shift) % 8]}
     for p in range(701 + first, 706 + first)]
    for first, shift in ((0, 0), (0, 3), (5, 1), (10, 5))
]
UNICODE_STORIES[3] = [dict(s, album_id="u2") for s in UNICODE_STORIES[3]]
UNICODE_PREDICTIONS = {
    "u1": "  we ate crème brûlée at the café . señor [male] laughed at the piñata .",
    "u2": "[female] took a photo at ålesund . the smörgåsbord was très bon !",
}


def _relative_differences(ours: dict, direct: dict) -> dict[str, float]:
    return {name: abs(ours[name] / 100 - value) / abs(value) for name, value in direct.items()}


# --- fast: references, keys, the n-gram metrics, prediction files, errors ------------------

@pytest.fixture(scope="module")
def stories(vist_set):
    sis, images = vist_set
    return load_vist(sis, images, seq_len=5, progress=False)


def test_references_are_the_published_ones(vist_set, stories):
    sis, images = vist_set
    arel = protocol_references(stories, "arel", annotations=sis)
    assert {k: sorted(v) for k, v in arel.items()} == \
        {k: sorted(v) for k, v in _arel_references(sis, images).items()}
    assert set(arel) == {"a1", "a2", "a3", "a5"} and len(arel["a1"]) == 3 and len(arel["a3"]) == 1
    assert "it was n't bad .  " in arel["a5"][0] and arel["a5"][0].endswith("10:30 . ")  # raw text
    challenge = protocol_references(stories, "vist-challenge")
    # the challenge keeps a storylet's stray spaces too; METEOR splits on whitespace runs
    assert challenge == {k: [" ".join(r.split()) for r in refs]
                         for k, refs in _challenge_references(sis, images).items()}
    assert len(challenge["101_102_103_104_105"]) == 2
    assert list(protocol_keys(stories, "arel")) == list(arel)
    assert list(protocol_keys(stories, "vist-challenge")) == list(challenge)
    # without the SIS file: load_vist's stripped sentences, the same but for the stray spaces
    stripped = protocol_references(stories, "arel")
    assert stripped["a5"] == [" ".join(arel["a5"][0].split())] and stripped["a1"] == arel["a1"]


def test_arel_ngram_metrics_equal_a_direct_computation(vist_set, stories):
    sis, images = vist_set
    refs = protocol_references(stories, "arel", annotations=sis)
    ours = evaluate(AREL_PREDICTIONS, refs, metrics=("BLEU", "ROUGE-L", "CIDEr"), protocol="arel")
    direct = _arel_scores(_arel_references(sis, images), AREL_PREDICTIONS)
    assert max(_relative_differences(ours, direct).values()) < 1e-6
    assert ours["protocol"] == "arel" and ours["n"] == 4
    # the window protocol tidies whitespace, so AREL's two leading spaces change ROUGE-L
    window = evaluate(AREL_PREDICTIONS, refs, metrics=("ROUGE-L",), normalize=False)
    assert window["ROUGE-L"] != pytest.approx(ours["ROUGE-L"], rel=1e-6)


def test_published_protocols_refuse_what_they_never_did(stories):
    refs = protocol_references(stories, "vist-challenge")
    preds = {k: v[0] for k, v in refs.items()}
    with pytest.raises(ValueError, match="one metric, METEOR"):
        evaluate(preds, refs, metrics=("BLEU",), protocol="vist-challenge")
    with pytest.raises(ValueError, match="-t hter"):
        evaluate(preds, refs, meteor_mode="standard", protocol="arel")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(preds, refs, protocol="coco")
    with pytest.raises(ValueError, match="keys predictions by album"):
        keyed_by("arel", "sequence")
    windows = sample_dataset("val")  # 3-photo windows
    for protocol in ("arel", "vist-challenge"):
        with pytest.raises(ValueError, match=r"seq_len=5"):
            protocol_references(windows, protocol)


def test_vist_challenge_without_java_is_nan_with_one_warning(stories, monkeypatch, tmp_path):
    refs = protocol_references(stories, "vist-challenge")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java anywhere
    with pytest.warns(RuntimeWarning, match="no `java`") as caught:
        scores = evaluate({k: v[0] for k, v in refs.items()}, refs, protocol="vist-challenge")
    assert math.isnan(scores["METEOR"]) and scores["n"] == len(refs) and len(caught) == 1


def test_arel_joins_storylets_in_story_order_and_keeps_their_text(make_vist, tmp_path):
    texts = {k: f"part {k} ." for k in range(5)} | {2: "part 2 . "}
    sis, images = make_vist(tmp_path, [_story(0, "a", range(1, 6), texts)], shuffle=True)
    refs = protocol_references(load_vist(sis, images, seq_len=5, progress=False), "arel",
                               annotations=sis)
    assert refs == {"a": ["part 0 . part 1 . part 2 .  part 3 . part 4 ."]}


def test_prediction_files_of_the_published_formats(tmp_path):
    arel = tmp_path / "prediction_test.json"
    arel.write_text(json.dumps({k: [v] for k, v in AREL_PREDICTIONS.items()}))
    assert read_predictions(arel) == AREL_PREDICTIONS  # leading spaces kept
    submission = {"team_name": "t", "output_stories": [
        {"album_id": "a", "photo_sequence": key.split("_"), "story_text_normalized": story}
        for key, story in CHALLENGE_PREDICTIONS.items()]}
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(submission))
    assert read_predictions(path) == CHALLENGE_PREDICTIONS
    submission["output_stories"].append(submission["output_stories"][0])
    path.write_text(json.dumps(submission))
    with pytest.raises(ValueError, match="more than one story"):
        read_predictions(path)


@pytest.fixture(scope="module")
def unicode_set(tmp_path_factory, make_vist):
    return make_vist(tmp_path_factory.mktemp("vist-unicode"), UNICODE_STORIES, shuffle=False)


def test_arel_on_non_ascii_stories_equals_a_direct_computation(unicode_set):
    """AREL's evaluator reads the SIS file with json.load and scores the strings as they are:
    the references keep every non-ASCII character, and the n-gram metrics equal pycocoevalcap's
    scorers on the raw strings."""
    sis, images = unicode_set
    stories = load_vist(sis, images, seq_len=5, progress=False)
    refs = protocol_references(stories, "arel", annotations=sis)
    assert refs == _arel_references(sis, images) and len(refs["u1"]) == 3
    assert "we ate crème brûlée at the café in zürich ." in refs["u1"][0]
    ours = evaluate(UNICODE_PREDICTIONS, refs, metrics=("BLEU", "ROUGE-L", "CIDEr"), protocol="arel")
    direct = _arel_scores(refs, UNICODE_PREDICTIONS)
    assert direct["BLEU-4"] > 0 and max(_relative_differences(ours, direct).values()) < 1e-6
    # the accents count: the same stories with them stripped score differently
    ascii_only = {k: v.encode("ascii", "ignore").decode() for k, v in UNICODE_PREDICTIONS.items()}
    assert evaluate(ascii_only, refs, metrics=("BLEU",), protocol="arel")["BLEU-4"] != pytest.approx(ours["BLEU-4"])


def test_window_normalisation_of_non_ascii_text_tokenises_as_ptb(java):
    """The window protocol tidies free text into VIST's Penn Treebank form; on accented and
    non-Latin text its tokens are pycocoevalcap's PTBTokenizer's (which also drops punctuation)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer
    from visiontales.data.text import normalize_text
    texts = ["The Café's crème brûlée was great!", "We visited Zürich, then Málaga.",
             "Señor Müller didn't come to the fiesta in São Paulo.", "我们 去了 公园。",
             'Straße "naïve" façade -- über cool.',
             *(t for t in UNICODE_SENTENCES if "[" not in t)]  # PTB writes [male] as -lsb- male -rsb-
    ptb = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    ours = [" ".join(w for w in normalize_text(t).split() if w not in PUNCTUATIONS) for t in texts]
    assert ours == [ptb[i][0] for i in range(len(texts))]


# --- slow: METEOR and the command line, against the jar run by hand -----------------------

@pytest.fixture(scope="module")
def jar(java):
    """The test's own METEOR process, one for the module."""
    jar = _MeteorJar()
    yield jar
    jar.close()


@pytest.mark.slow
def test_arel_protocol_on_the_command_line_equals_arels_evaluator(vist_set, jar, cli, tmp_path):
    sis, images = vist_set
    predictions = tmp_path / "prediction_test.json"
    predictions.write_text(json.dumps({k: [v] for k, v in AREL_PREDICTIONS.items()}))
    out = cli("evaluate", "--references", str(sis), "--images", str(images), "--predictions",
              f"arel={predictions}", "--protocol", "arel", "--metrics", "BLEU", "METEOR",
              "ROUGE-L", "CIDEr", "--out", str(tmp_path / "scores"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "protocol arel: AREL's album evaluation" in out.stdout
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["protocol"]["name"] == "arel" and saved["protocol"]["meteor_mode"] == "hter"
    ours = saved["systems"]["arel"]
    direct = _arel_scores(_arel_references(sis, images), AREL_PREDICTIONS, jar)
    differences = _relative_differences(ours, direct)
    print("arel: max relative difference per metric", differences)
    assert max(differences.values()) < 1e-6 and ours["n"] == 4
    assert 0 < direct["METEOR"] < 1


@pytest.mark.slow
def test_published_protocols_on_non_ascii_stories_equal_their_scorers(unicode_set, jar, cli, tmp_path):
    """METEOR on non-ASCII stories: the command line's arel and vist-challenge scores equal the
    jar spoken to as the published wrappers do (each line written as UTF-8)."""
    sis, images = unicode_set
    predictions = tmp_path / "prediction_test.json"
    predictions.write_text(json.dumps({k: [v] for k, v in UNICODE_PREDICTIONS.items()}, ensure_ascii=False),
                           encoding="utf-8")
    out = cli("evaluate", "--references", str(sis), "--images", str(images), "--predictions",
              f"arel={predictions}", "--protocol", "arel", "--out", str(tmp_path / "arel"))
    assert out.returncode == 0, out.stderr[-2000:]
    ours = json.loads((tmp_path / "arel.json").read_text())["systems"]["arel"]
    direct = _arel_scores(_arel_references(sis, images), UNICODE_PREDICTIONS, jar)
    assert max(_relative_differences(ours, direct).values()) < 1e-6 and 0 < direct["METEOR"] < 1

    refs = _challenge_references(sis, images)
    stories = {key: UNICODE_PREDICTIONS["u2" if key.startswith("711") else "u1"].strip() for key in refs}
    submission = tmp_path / "submission.json"
    submission.write_text(json.dumps({"output_stories": [
        {"album_id": "x", "photo_sequence": key.split("_"), "story_text_normalized": story}
        for key, story in stories.items()]}, ensure_ascii=False), encoding="utf-8")
    out = cli("evaluate", "--references", str(sis), "--images", str(images), "--predictions",
              f"ours={submission}", "--protocol", "vist-challenge", "--out", str(tmp_path / "challenge"))
    assert out.returncode == 0, out.stderr[-2000:]
    ours = json.loads((tmp_path / "challenge.json").read_text())["systems"]["ours"]
    direct = _challenge_score(refs, stories, jar)
    assert abs(ours["METEOR"] / 100 - direct) / direct < 1e-6


@pytest.mark.slow
def test_vist_challenge_protocol_on_the_command_line_equals_the_challenge(vist_set, jar, cli,
                                                                          tmp_path):
    sis, images = vist_set
    submission = tmp_path / "submission.json"
    submission.write_text(json.dumps({"output_stories": [
        {"album_id": "x", "photo_sequence": key.split("_"), "story_text_normalized": story}
        for key, story in CHALLENGE_PREDICTIONS.items()]}))
    out = cli("evaluate", "--references", str(sis), "--images", str(images), "--predictions",
              f"ours={submission}", "--protocol", "vist-challenge", "--out", str(tmp_path / "s"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "protocol vist-challenge: the NAACL 2018 VIST challenge" in out.stdout
    ours = json.loads((tmp_path / "s.json").read_text())["systems"]["ours"]
    assert set(ours) == {"METEOR", "n", "protocol"} and ours["n"] == 5
    direct = _challenge_score(_challenge_references(sis, images), CHALLENGE_PREDICTIONS, jar)
    difference = abs(ours["METEOR"] / 100 - direct) / direct
    print("vist-challenge: relative difference of METEOR", difference)
    assert difference < 1e-6
    # the challenge's max over single references is not AREL's corpus METEOR over all of them
    refs = _challenge_references(sis, images)
    corpus = jar.corpus([jar.stats(CHALLENGE_PREDICTIONS[k], refs[k]) for k in refs])
    assert abs(corpus - direct) > 1e-4
