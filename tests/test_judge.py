"""judge.py against a real chat-completions server on 127.0.0.1: success, malformed
answers, timeouts, retries, HTTP errors, the on-disk cache, images, concurrency and rubrics
of any criteria."""
from __future__ import annotations

import base64
import io
import json
import re
import time

import pytest
from PIL import Image

from visiontales.evaluation.judge import (
    CRITERIA, NARRATIVE_CRITERIA, QUESTIONS, RUBRIC_PROMPT, Judge, JudgeError, JudgeScores,
    OpenAICompatibleJudge, parse_scores, rubric, rubric_prompt,
)

GOOD = '{"coherence": 8, "relevance": 7, "emotional_depth": 5, "overall": 6}'


def _judge(server, **kwargs) -> OpenAICompatibleJudge:
    kwargs = {"timeout": 5, "backoff": 0.01, **kwargs}
    return OpenAICompatibleJudge(server.base_url, "judge-model", **kwargs)


def test_success_sends_one_story_per_standard_request(serve, monkeypatch):
    monkeypatch.setenv("VT_TEST_KEY", "sekret")
    server = serve(lambda n, body: (200, GOOD, 0))
    scores = _judge(server, api_key_env="VT_TEST_KEY").score("we went to the beach .")
    assert scores == JudgeScores(coherence=8, relevance=7, emotional_depth=5, overall=6)
    [body] = server.requests
    path, headers = server.headers[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    [message] = body["messages"]
    assert message["role"] == "user" and isinstance(message["content"], str)
    assert "we went to the beach ." in message["content"]
    assert "Length is not quality" in message["content"]


def test_malformed_answer_is_asked_again_then_raised(serve):
    server = serve(lambda n, body: (200, "What a lovely story! I'd give it an 8.", 0))
    with pytest.raises(JudgeError, match="no JSON object.*lovely story"):
        _judge(server).score("a story .", key="k1")
    assert len(server.requests) == 2


def test_malformed_then_good_answer_succeeds(serve):
    server = serve(lambda n, body: (200, '{"coherence": 11}' if n == 1 else GOOD, 0))
    assert _judge(server).score("a story .").overall == 6
    assert len(server.requests) == 2


def test_timeout_is_retried_then_raised(serve):
    server = serve(lambda n, body: (200, GOOD, 1.0))
    start = time.monotonic()
    with pytest.raises(JudgeError, match="after 2 attempts"):
        _judge(server, timeout=0.2, max_retries=1).score("a story .")
    assert len(server.requests) == 2 and time.monotonic() - start < 2


def test_server_error_is_retried(serve):
    server = serve(lambda n, body: (500, "overloaded", 0) if n == 1 else (200, GOOD, 0))
    assert _judge(server).score("a story .").coherence == 8
    assert len(server.requests) == 2


def test_client_error_is_not_retried(serve):
    server = serve(lambda n, body: (404, "model not found", 0))
    with pytest.raises(JudgeError, match="HTTP 404.*model not found"):
        _judge(server).score("a story .")
    assert len(server.requests) == 1


def test_cache_means_a_rerun_never_asks_again(serve, tmp_path):
    server = serve(lambda n, body: (200, GOOD, 0))
    stories = ["one .", "two .", "three ."]
    first = _judge(server, cache_dir=tmp_path).score_many(stories, keys=["a", "b", "c"],
                                                         progress=False)
    assert len(server.requests) == 3
    again = _judge(server, cache_dir=tmp_path).score_many(stories, keys=["a", "b", "c"],
                                                         progress=False)
    assert len(server.requests) == 3
    assert again.equals(first) and list(first.index) == ["a", "b", "c"]
    assert list(first.columns) == list(CRITERIA) and (first.dtypes == "int64").all()
    _judge(server, cache_dir=tmp_path).score("four .")  # a new story is asked
    assert len(server.requests) == 4
    assert not list(tmp_path.glob("*.tmp"))  # writes were atomic


def test_images_travel_as_jpeg_data_urls(serve):
    server = serve(lambda n, body: (200, GOOD, 0))
    photos = [Image.new("RGB", (1024, 768), "red"), Image.new("RGB", (300, 200), "blue")]
    _judge(server, send_images=True).score("a red and a blue day .", images=photos)
    parts = server.requests[0]["messages"][0]["content"]
    assert parts[0]["type"] == "text" and "2 photos" in parts[0]["text"]
    urls = [p["image_url"]["url"] for p in parts[1:]]
    assert len(urls) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    sizes = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in urls]
    assert sizes == [(512, 384), (300, 200)]
    _judge(server).score("a red and a blue day .", images=photos)  # send_images=False
    assert isinstance(server.requests[1]["messages"][0]["content"], str)


def test_concurrency_limit_is_respected(serve):
    server = serve(lambda n, body: (200, GOOD, 0.3))
    frame = _judge(server, max_concurrency=3).score_many([f"story {i} ." for i in range(7)],
                                                          progress=False)
    assert len(frame) == 7 and len(server.requests) == 7
    assert server.max_active == 3


def test_score_many_reports_which_story_failed(serve, tmp_path):
    server = serve(lambda n, body: (200, "no idea" if "bad" in json.dumps(body) else GOOD, 0))
    judge = _judge(server, cache_dir=tmp_path, max_concurrency=2)
    with pytest.raises(JudgeError, match="1 of 3 stories.*'k2'"):
        judge.score_many(["good one .", "bad one .", "good two ."], keys=["k1", "k2", "k3"],
                         progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 2  # the good ones are kept for a re-run


@pytest.mark.parametrize("text, problem", [
    ('{"coherence": 8, "relevance": 7, "emotional_depth": 5}', "overall"),
    ('{"coherence": 8, "relevance": 7, "emotional_depth": 5, "overall": 0}', "overall"),
    ('{"coherence": 7.5, "relevance": 7, "emotional_depth": 5, "overall": 6}', "coherence"),
    ('{"coherence": true, "relevance": 7, "emotional_depth": 5, "overall": 6}', "coherence"),
    ('{"coherence": "8", "relevance": 7, "emotional_depth": 5, "overall": 6}', "coherence"),
    ("8/10", "no JSON object"),
])
def test_parse_scores_is_strict(text, problem):
    with pytest.raises(JudgeError, match=problem):
        parse_scores(text)


def test_parse_scores_tolerates_a_fence_and_prose():
    answer = f"Here is my rating:\n```json\n{GOOD}\n```\nThanks."
    assert parse_scores(answer) == parse_scores(GOOD) == JudgeScores(8, 7, 5, 6)


def test_rubric_prompt_names_the_four_criteria_and_judges_alone():
    for criterion in CRITERIA:
        assert f'"{criterion}"' in RUBRIC_PROMPT
    assert RUBRIC_PROMPT.count("{story}") == 1 and "on its own" in RUBRIC_PROMPT


def test_custom_judge_only_needs_score():
    class Lengthy(Judge):
        def score(self, story, images=None, key=None):
            n = min(10, len(story.split()))
            return JudgeScores(n, n, n, n)

    frame = Lengthy().score_many(["a b", "a b c d"], progress=False)
    assert frame["overall"].tolist() == [2, 4] and frame.index.name == "key"


def _rubric_answer(body: dict, value=lambda name: 5) -> str:
    """A judge that answers exactly the criteria its prompt's JSON template asks for."""
    text = body["messages"][0]["content"]
    template = text[text.rindex("{"):text.rindex("}") + 1]
    names = re.findall(r'"(\w+)": <int>', template)
    return json.dumps({name: value(name) for name in names})


def test_custom_criteria_round_trip(serve, tmp_path):
    server = serve(lambda n, body: (200, _rubric_answer(body, lambda name: len(name) % 10 + 1), 0))
    judge = _judge(server, criteria=["Plot progression", "humour=does it make the reader smile?"],
                   cache_dir=tmp_path)
    assert judge.criteria == ("plot_progression", "humour")
    frame = judge.score_many(["a story .", "b story ."], keys=["a", "b"], progress=False)
    assert list(frame.columns) == ["plot_progression", "humour"] and frame.index.name == "key"
    assert frame.loc["a"].tolist() == [len("plot_progression") % 10 + 1, len("humour") % 10 + 1]
    prompt = server.requests[0]["messages"][0]["content"]
    assert "- humour: does it make the reader smile?" in prompt
    assert f"- plot_progression: {QUESTIONS['plot_progression']}" in prompt
    assert prompt.rstrip().endswith('{"plot_progression": <int>, "humour": <int>}')
    assert "coherence" not in prompt
    # the cache keeps the answer text, so a re-run parses it against the same rubric
    again = _judge(server, criteria=["plot_progression", "humour=does it make the reader smile?"],
                   cache_dir=tmp_path).score_many(["a story .", "b story ."], keys=["a", "b"],
                                                  progress=False)
    assert again.equals(frame) and len(server.requests) == 2


def test_narrative_preset_is_table_4_and_feeds_a_judge_reward(serve):
    import pandas as pd
    from visiontales.recipes.rl import JudgeReward
    server = serve(lambda n, body: (
        200, _rubric_answer(body, lambda name: 7 if name == "plot_progression" else 3), 0))
    judge = _judge(server, criteria="narrative")
    assert judge.criteria == NARRATIVE_CRITERIA == (
        "character_development", "plot_progression", "emotional_engagement", "overall")
    rows = pd.DataFrame({"image_paths": [("a.jpg",), ("b.jpg",)]})
    assert JudgeReward(judge, "plot_progression")(["one .", "two ."], rows).tolist() == [7.0, 7.0]
    with pytest.raises(ValueError, match="coherence"):
        JudgeReward(judge, "coherence")


def test_an_answer_missing_a_custom_criterion_is_refused(serve):
    server = serve(lambda n, body: (200, '{"plot_progression": 6}', 0))
    with pytest.raises(JudgeError, match=r"\['humour'\]"):
        _judge(server, criteria=["plot_progression", "humour"]).score("a story .")
    assert len(server.requests) == 2  # asked once more, as any malformed answer


@pytest.mark.parametrize("spec, message", [
    (["plot progression!"], "letters, digits"), (["overall", "Overall"], "named twice"),
    ([], "at least one"),
])
def test_rubric_refuses_bad_names(spec, message):
    with pytest.raises(ValueError, match=message):
        rubric(spec)


def test_a_prompt_that_never_names_the_criteria_is_refused():
    with pytest.raises(ValueError, match="never names"):
        OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", prompt=RUBRIC_PROMPT, criteria="narrative")
    assert rubric_prompt() == RUBRIC_PROMPT  # Table 1's four by default


def test_judge_scores_is_a_read_only_mapping():
    scores = JudgeScores(7, 6, emotional_depth=5, overall=4)
    assert dict(scores) == {"coherence": 7, "relevance": 6, "emotional_depth": 5, "overall": 4}
    assert scores == JudgeScores(coherence=7, relevance=6, emotional_depth=5, overall=4)
    assert JudgeScores(humour=3).humour == 3 and list(JudgeScores(b=1, a=2)) == ["b", "a"]
    with pytest.raises(AttributeError):
        scores.overall = 9
    with pytest.raises(TypeError, match="twice"):
        JudgeScores(7, coherence=7)
