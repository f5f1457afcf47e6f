"""Rubric scores from a language-model judge, each criterion an integer from 1 to 10.

The default rubric is Table 1's four criteria of the instruction tuning and RL recipe
(coherence, relevance, emotional depth, overall quality; see
:mod:`visiontales.recipes.instructions`), also the judge behind its reward of eq. 2
(:class:`visiontales.recipes.rl.JudgeReward`). ``criteria="narrative"`` is its Table 4
(character development, plot progression, emotional engagement, overall), and any other
criteria can be named (:func:`rubric`): the prompt and the strict parser follow them.

Each story is judged on its own, never next to another story: judges favour whichever
story comes first in a pairwise prompt (position bias). The prompt also says that length
is not quality, since judges otherwise reward longer answers (verbosity bias).
:class:`OpenAICompatibleJudge` talks to any ``/v1/chat/completions`` server through
:class:`visiontales.evaluation.http_client.ChatClient` (retries, Retry-After, timeouts,
a disk cache, so a re-run never asks twice).

>>> class Constant(Judge):
...     def score(self, story, images=None, key=None):
...         return JudgeScores(7, 7, 5, 6)
>>> Constant().score_many(["a story .", "another ."], progress=False)["overall"].tolist()
[6, 6]
"""
from __future__ import annotations

import abc
import json
import os
import re
from typing import Hashable, Iterator, Mapping, Sequence, Union

import pandas as pd

from visiontales.data.images import ImageLike, image_data_url
from visiontales.evaluation.http_client import (
    ChatClient, EndpointError, fan_out, shorten, user_message,
)

CRITERIA = ("coherence", "relevance", "emotional_depth", "overall")  # Tables 1 and 2
NARRATIVE_CRITERIA = ("character_development", "plot_progression", "emotional_engagement",
                      "overall")  # Table 4
RUBRICS = {"quality": CRITERIA, "narrative": NARRATIVE_CRITERIA}

QUESTIONS = {
    "coherence": "do the sentences follow one another as one connected story, with "
                 "consistent characters and events?",
    "relevance": "does the story fit the photos, describing what they show in the order shown?",
    "emotional_depth": "does the story convey feelings, atmosphere or meaning beyond a list of "
                       "what is visible?",
    "overall": "overall quality as a story a person would enjoy reading.",
    "character_development": "are the people in the story distinct and consistent from photo "
                             "to photo, and do we learn something about them as it goes on?",
    "plot_progression": "do events build on one another from a beginning to an end, rather "
                        "than a list of separate scenes?",
    "emotional_engagement": "does the story make the reader feel something or care about "
                            "what happens?",
}

RubricSpec = Union[None, str, Sequence[str], Mapping[str, str]]

RUBRIC_TEMPLATE = """You are an expert judge of visual stories: short stories written for a \
sequence of photos.
{photos}

Rate the story below on each criterion, an integer from 1 (very poor) to 10 (excellent):
{criteria}

Length is not quality: do not reward a story for being longer or penalise it for being \
short. Judge this story on its own merits.

Story:
\"\"\"{story}\"\"\"

Answer with only a JSON object and nothing else:
{answer}"""

_WITH_PHOTOS = "The {n} photos the story was written for are attached, in order."
_WITHOUT_PHOTOS = ("The photos are not shown to you: rate relevance by how concretely the "
                   "story describes scenes a sequence of photos could show.")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class JudgeError(EndpointError):
    """A judge gave no usable answer (unreachable server, HTTP error, malformed reply)."""


def rubric(spec: RubricSpec = None) -> dict[str, str]:
    """Criterion name -> the question the judge is asked about it.

    ``spec``: None (Table 1's four, :data:`CRITERIA`), a preset name from :data:`RUBRICS`
    (``"quality"``, ``"narrative"``), criterion names (a known name brings its question from
    :data:`QUESTIONS`, another is asked as it reads), ``"name=question"`` strings, or a
    ``{name: question}`` mapping. Names are lowercased, with ``-`` and spaces as ``_``.

    >>> list(rubric("narrative"))
    ['character_development', 'plot_progression', 'emotional_engagement', 'overall']
    >>> rubric(["Plot-Progression", "humour=does it make the reader smile?"])["humour"]
    'does it make the reader smile?'
    """
    if spec is None:
        spec = CRITERIA
    if isinstance(spec, str):
        spec = RUBRICS.get(spec, (spec,))
    elif not isinstance(spec, Mapping) and len(spec) == 1 and spec[0] in RUBRICS:
        spec = RUBRICS[spec[0]]
    pairs = (spec.items() if isinstance(spec, Mapping)
             else (item.partition("=")[::2] for item in spec))
    out: dict[str, str] = {}
    for raw, question in pairs:
        name = re.sub(r"[-\s]+", "_", raw.strip().lower())
        if not _NAME.fullmatch(name):
            raise ValueError(f"criterion {raw!r}: use letters, digits and _ (e.g. plot_progression)")
        if name in out:
            raise ValueError(f"criterion {name!r} is named twice")
        out[name] = question.strip() or QUESTIONS.get(name) or f"the story's {name.replace('_', ' ')}."
    if not out:
        raise ValueError(f"name at least one criterion, or a preset: {sorted(RUBRICS)}")
    return out


def rubric_prompt(criteria: RubricSpec = None, template: str = RUBRIC_TEMPLATE) -> str:
    """``template`` with ``{criteria}`` (one line per criterion and its question) and
    ``{answer}`` (the JSON object to answer with) filled in; ``{photos}`` and ``{story}``
    stay for each request."""
    questions = rubric(criteria)
    listing = "\n".join(f"- {name}: {question}" for name, question in questions.items())
    answer = "{" + ", ".join(f'"{name}": <int>' for name in questions) + "}"
    return template.replace("{criteria}", listing).replace("{answer}", answer)


RUBRIC_PROMPT = rubric_prompt(CRITERIA)


class JudgeScores(Mapping[str, int]):
    """One story's rubric scores, integers from 1 to 10, by criterion, in the rubric's order.

    Positional values are Table 1's four (:data:`CRITERIA`); names give any rubric.
    Scores read as attributes or by key, and compare equal to the same scores.

    >>> JudgeScores(coherence=8, relevance=7, emotional_depth=6, overall=7).as_dict()["overall"]
    7
    >>> JudgeScores(8, 7, 6, 7).overall, JudgeScores(plot_progression=6)["plot_progression"]
    (7, 6)
    """

    __slots__ = ("_scores",)

    def __init__(self, *values: int, **named: int):
        if len(values) > len(CRITERIA):
            raise TypeError(f"{len(values)} positional scores; name them beyond {CRITERIA}")
        scores = dict(zip(CRITERIA, values))
        twice = sorted(set(scores) & set(named))
        if twice:
            raise TypeError(f"scores given twice: {twice}")
        scores.update(named)
        if not scores:
            raise TypeError("JudgeScores needs at least one score")
        object.__setattr__(self, "_scores", scores)

    def __getitem__(self, criterion: str) -> int:
        return self._scores[criterion]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._scores[name]
        except KeyError:
            raise AttributeError(f"no {name!r} score; criteria: {list(self._scores)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("JudgeScores are read-only")

    def __hash__(self) -> int:
        return hash(tuple(self._scores.items()))

    def __repr__(self) -> str:
        return "JudgeScores(" + ", ".join(f"{k}={v!r}" for k, v in self._scores.items()) + ")"

    def as_dict(self) -> dict[str, int]:
        return dict(self._scores)


def parse_scores(text: str, criteria: Sequence[str] = CRITERIA) -> JudgeScores:
    """Strictly parse a judge's answer: one JSON object (a ```json fence is fine) with every
    criterion as an integer in 1..10 (other keys are ignored); else :class:`JudgeError`.

    >>> parse_scores('```json\\n{"coherence": 8, "relevance": 7, "emotional_depth": 5, '
    ...              '"overall": 7}\\n```')
    JudgeScores(coherence=8, relevance=7, emotional_depth=5, overall=7)
    >>> parse_scores('{"plot_progression": 6, "note": "ok"}', ["plot_progression"])
    JudgeScores(plot_progression=6)
    """
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL | re.IGNORECASE)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    try:
        obj = json.loads(body[start:end + 1]) if 0 <= start < end else None
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise JudgeError(f"the judge's answer holds no JSON object: {shorten(text)!r}")
    bad = [c for c in criteria if not (type(obj.get(c)) is int and 1 <= obj[c] <= 10)]
    if bad:
        raise JudgeError(f"the judge's answer needs integer 1..10 for {bad}: {shorten(text)!r}")
    return JudgeScores(**{c: obj[c] for c in criteria})


class Judge(abc.ABC):
    """Scores one story at a time on :attr:`criteria`; :meth:`score_many` fans out over
    ``max_concurrency`` threads and returns a DataFrame (index ``key``, one int column per
    criterion)."""

    max_concurrency: int = 1
    criteria: tuple[str, ...] = CRITERIA

    @abc.abstractmethod
    def score(self, story: str, images: Sequence[ImageLike] | None = None,
              key: Hashable = None) -> JudgeScores:
        """Rubric scores of ``story`` (written for ``images``); ``key`` names it in errors."""

    def score_many(self, stories: Sequence[str],
                   images: Sequence[Sequence[ImageLike] | None] | None = None,
                   keys: Sequence[Hashable] | None = None,
                   progress: bool = True) -> pd.DataFrame:
        """Score every story; failures are gathered and raised together as one JudgeError
        after the others finished (and, with a cache, were saved)."""
        keys = list(range(len(stories))) if keys is None else list(keys)
        images = [None] * len(stories) if images is None else list(images)
        if not len(stories) == len(keys) == len(images):
            raise ValueError(f"{len(stories)} stories, {len(images)} image lists and "
                             f"{len(keys)} keys: give one of each per story")
        results = fan_out(self.score, list(zip(stories, images, keys)), keys,
                          max_concurrency=self.max_concurrency, desc="judging",
                          failed="got no score", error=JudgeError, progress=progress)
        criteria = list(self.criteria)
        for key, scores in zip(keys, results):
            if any(c not in scores for c in criteria):
                raise JudgeError(f"{key!r}: scores {dict(scores)} lack one of {criteria}")
        frame = pd.DataFrame([[r[c] for c in criteria] for r in results], columns=criteria,
                             index=pd.Index(keys, name="key"))
        return frame.astype("int64")


class OpenAICompatibleJudge(Judge):
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    POSTs ``{base_url}/chat/completions`` (e.g. ``base_url="http://127.0.0.1:8000/v1"``)
    with the API key from ``$api_key_env`` when set (local servers need none). ``criteria``
    is any :func:`rubric` spec (default: Table 1's four). With ``send_images`` the photos
    travel as base64 JPEG data URLs (longest side <= 512 px). Retries (``max_retries``,
    ``backoff``, Retry-After), ``timeout`` and ``cache_dir`` are those of
    :class:`~visiontales.evaluation.http_client.ChatClient`; an unparsable answer is asked
    once more, then raised. ``prompt`` is a template with ``{story}`` and, for the rubric,
    ``{criteria}``, ``{answer}`` and ``{photos}`` (see :data:`RUBRIC_TEMPLATE`).

    With a server running (vLLM, Ollama, llama.cpp, a hosted API)::

        judge = OpenAICompatibleJudge("http://127.0.0.1:8000/v1", "qwen2-vl-7b",
                                      criteria="narrative")
        table = judge.score_many(stories, images=image_sequences)
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 send_images: bool = False, timeout: float = 60, max_retries: int = 3,
                 backoff: float = 1.0, max_concurrency: int = 4,
                 cache_dir: str | os.PathLike | None = None, temperature: float = 0,
                 max_tokens: int = 200, prompt: str = RUBRIC_TEMPLATE,
                 criteria: RubricSpec = None):
        if "{story}" not in prompt:
            raise ValueError("prompt must contain a {story} placeholder")
        self.criteria = tuple(rubric(criteria))
        self.prompt = rubric_prompt(criteria, prompt)
        unnamed = [c for c in self.criteria if c not in self.prompt]
        if unnamed:
            raise ValueError(f"the prompt never names {unnamed}: put {{criteria}} and {{answer}} "
                             f"in it, or name them yourself")
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout=timeout,
                                 max_retries=max_retries, backoff=backoff, cache_dir=cache_dir)
        self.send_images, self.max_concurrency = send_images, max_concurrency
        self.temperature, self.max_tokens = temperature, max_tokens

    def _body(self, story: str, images: Sequence[ImageLike] | None) -> dict:
        urls = ([image_data_url(im, max_side=512) for im in images or []]
                if self.send_images else [])
        photos = _WITH_PHOTOS.format(n=len(urls)) if urls else _WITHOUT_PHOTOS
        # replace(), not format(): the prompt's JSON example and stories contain braces
        text = self.prompt.replace("{photos}", photos).replace("{story}", story.strip())
        return self.client.body([user_message(text, urls)], temperature=self.temperature,
                                max_tokens=self.max_tokens)

    def score(self, story: str, images: Sequence[ImageLike] | None = None,
              key: Hashable = None) -> JudgeScores:
        try:
            return self.client.complete(self._body(story, images),
                                        lambda text: parse_scores(text, self.criteria), key)
        except JudgeError:
            raise
        except EndpointError as err:
            raise JudgeError(str(err)) from None
