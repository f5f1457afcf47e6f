"""LVLM storytellers and the HTTP client they share with the judge, against a real
chat-completions server on 127.0.0.1 that tells stories and scores them, and fails some
requests on the way (503, 429 with Retry-After, malformed JSON, a hang past the timeout)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import threading

import pytest
from chat_server import Raw, image_urls, message_text
from PIL import Image

import visiontales as vt
from visiontales.evaluation.http_client import EndpointError, retry_after_seconds
from visiontales.evaluation.judge import CRITERIA, OpenAICompatibleJudge
from visiontales.evaluation.predictions import prediction_keys, read_predictions
from visiontales.evaluation.storytellers import STORY_PROMPT, EndpointStoryteller

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def colour_of(url: str) -> str:
    """The name of the colour nearest a data URL's middle pixel."""
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    pixel = image.getpixel((image.width // 2, image.height // 2))
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], pixel)))


def answer(body: dict) -> str:
    """What the stand-in model says: a story naming the photos' colours in order, or the
    rubric's scores (the story's word count, capped at 10, for every criterion asked)."""
    text = message_text(body)
    if "Answer with only a JSON object" in text:
        story = text.split('"""')[1]
        names = text[text.rindex("{"):].split('"')[1::2]
        return json.dumps({name: min(10, len(story.split())) for name in names})
    return "Story: " + " then ".join(colour_of(u) for u in image_urls(body)) + " ."


FAILURES = ("503", "429", "malformed", "hang", None)


def digest_of(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def flaky(timeout: float):
    """``reply`` that fails the first request of each distinct body in turn as FAILURES
    says (503, 429 with Retry-After: 1, a reply that is not JSON, a hang past ``timeout``,
    no failure), then answers it; ``reply.failed`` maps a body's hash to its failure."""
    lock, seen = threading.Lock(), {}

    def reply(n, body):
        digest = digest_of(body)
        with lock:
            first = digest not in seen
            if first:
                seen[digest] = FAILURES[len(seen) % len(FAILURES)]
        failure = seen[digest] if first else None
        if failure == "503":
            return 503, "overloaded", 0
        if failure == "429":
            return 429, "slow down", 0, {"Retry-After": "1"}
        if failure == "malformed":
            return 200, Raw('{"choices": [{"message": '), 0
        return 200, answer(body), 2 * timeout if failure == "hang" else 0

    reply.failed = seen
    return reply


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, rgb in COLOURS.items():
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (64, 48), rgb).save(paths[name])
    return paths


def test_photos_travel_in_order_as_data_urls_with_the_prompt(serve, photos, monkeypatch):
    monkeypatch.setenv("VT_STORY_KEY", "sekret")
    server = serve(lambda n, body: (200, answer(body), 0))
    teller = EndpointStoryteller(server.base_url, "llava:7b", api_key_env="VT_STORY_KEY", seed=3)
    stories = teller.generate([[photos["red"], photos["green"], photos["blue"]],
                               [photos["blue"], photos["red"]]], progress=False)
    assert stories == ["red then green then blue .", "blue then red ."]  # "Story:" label dropped
    body = next(b for b in server.requests if len(image_urls(b)) == 3)
    assert body["model"] == "llava:7b" and body["temperature"] == 0 and body["seed"] == 3
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": STORY_PROMPT.replace("{n}", "3")}
    assert all(u.startswith("data:image/jpeg;base64,") for u in image_urls(body))
    path, headers = server.headers[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekret"


@pytest.mark.slow  # waits out one Retry-After (1 s) and one timeout, twice over
def test_stories_and_scores_arrive_through_failures_and_a_rerun_asks_nothing(serve, photos, tmp_path):
    timeout = 0.5
    reply = flaky(timeout)
    server = serve(reply)
    colours = ["red", "green", "blue", "white"]
    sequences = [[colours[(i + j) % 4] for j in range(3)] for i in range(4)]
    sequences += [["red", "blue"], ["white", "green"]]
    expected = [" then ".join(seq) + " ." for seq in sequences]
    keys = [f"s{i}" for i in range(len(sequences))]

    def run():
        teller = EndpointStoryteller(server.base_url, "llava", timeout=timeout, backoff=0.05,
                                     max_concurrency=3, cache_dir=tmp_path / "stories")
        judge = OpenAICompatibleJudge(server.base_url, "judge", timeout=timeout, backoff=0.05,
                                      max_concurrency=3, cache_dir=tmp_path / "scores")
        stories = teller.generate([[photos[c] for c in seq] for seq in sequences], progress=False)
        return stories, judge.score_many(stories, keys=keys, progress=False)

    stories, scores = run()
    assert stories == expected
    assert list(scores.columns) == list(CRITERIA) and list(scores.index) == keys
    assert scores["overall"].tolist() == [6, 6, 6, 6, 4, 4]  # the stand-in counts words
    assert len(reply.failed) == 12 and set(reply.failed.values()) == set(FAILURES)
    asked = len(server.requests)
    assert asked == 12 + sum(f is not None for f in reply.failed.values())  # one retry per failure
    # each 429 was asked again after its Retry-After (1 s), not after the 0.05 s backoff
    times: dict[str, list[float]] = {}
    for body, when in zip(server.requests, server.times):
        times.setdefault(digest_of(body), []).append(when)
    waits = [times[d][1] - times[d][0] for d, failure in reply.failed.items() if failure == "429"]
    assert len(waits) == 3 and min(waits) >= 0.95

    again, rescored = run()
    assert len(server.requests) == asked  # served from the caches: no request at all
    assert again == stories and rescored.equals(scores)


def test_a_sequence_without_an_answer_is_named_after_the_others_are_cached(serve, photos, tmp_path):
    server = serve(lambda n, body: (503, "down", 0) if len(image_urls(body)) == 1
                   else (200, answer(body), 0))
    teller = EndpointStoryteller(server.base_url, "m", max_retries=1, backoff=0.01,
                                 cache_dir=tmp_path)
    with pytest.raises(EndpointError, match=r"1 of 2 stories got no story; first: 'sequence 1': "
                                            r"no answer .* after 2 attempts \(last: HTTP 503"):
        teller.generate([[photos["red"], photos["blue"]], [photos["green"]]], progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_an_empty_story_is_asked_again_then_refused(serve, photos):
    server = serve(lambda n, body: (200, "  \n ", 0))
    with pytest.raises(EndpointError, match="no story"):
        EndpointStoryteller(server.base_url, "m").generate([[photos["red"]]], progress=False)
    assert len(server.requests) == 2


def test_retry_after_reads_seconds_and_http_dates():
    from email.utils import formatdate
    import time
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("") == 0.0
    assert 8 <= retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert retry_after_seconds(formatdate(time.time() - 10, usegmt=True)) == 0.0


def test_generate_endpoint_writes_the_library_s_keys(serve, tmp_path, cli):
    server = serve(lambda n, body: (200, answer(body), 0))
    out = cli("generate", "--endpoint", server.base_url, "--endpoint-model", "llava", "--split", "val",
              "--endpoint-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "llava.jsonl"))
    assert out.returncode == 0, out.stderr[-2000:]
    val = vt.sample_dataset("val", seq_len=3)
    keys = list(dict.fromkeys(prediction_keys(val)))
    predictions = read_predictions(tmp_path / "llava.jsonl")
    assert list(predictions) == keys and len(server.requests) == len(keys)
    first = json.loads((tmp_path / "llava.jsonl").read_text().splitlines()[0])
    assert first["photo_ids"] == first["key"].split("_")
    assert all(len(image_urls(body)) == 3 for body in server.requests)
    again = cli("generate", "--endpoint", server.base_url, "--endpoint-model", "llava", "--split", "val",
                "--endpoint-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "again.jsonl"))
    assert again.returncode == 0 and len(server.requests) == len(keys)
    assert read_predictions(tmp_path / "again.jsonl") == predictions


def test_generate_endpoint_tells_a_folder_in_order(serve, photos, tmp_path, cli):
    server = serve(lambda n, body: (200, answer(body), 0))
    out = cli("generate", "--endpoint", server.base_url, "--endpoint-model", "m", "--folder",
              str(photos["red"].parent), "--seq-len", "2", "--json", "--endpoint-prompt", "{n} photos: go",
              "--endpoint-cache", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    told = [json.loads(line) for line in out.stdout.splitlines()]
    assert [t["story"] for t in told] == ["blue then green .", "red then white ."]  # sorted names
    assert message_text(server.requests[0]) == "2 photos: go"


@pytest.mark.parametrize("flags, message", [
    (("--endpoint-model", "m", "--num-beams", "3"), "--num-beams is for a saved --model"),
    (("--endpoint-model", "m", "--prompt", "x", "--sample"), "--prompt (use --endpoint-prompt), --sample are"),
    (("--endpoint-model", "m", "--model", "runs/x"), "not both"),
    ((), "--endpoint-model NAME"),
])
def test_generate_endpoint_refuses_model_flags(photos, cli, flags, message):
    out = cli("generate", "--endpoint", "http://127.0.0.1:9/v1", *flags, str(photos["red"]))
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_generate_needs_a_model_or_an_endpoint(photos, cli):
    out = cli("generate", str(photos["red"]))
    assert out.returncode == 2 and "--model" in out.stderr and "--endpoint" in out.stderr
