"""Rubric scores from a language-model judge: coherence, relevance, emotional depth and
overall quality, each an integer from 1 to 10: the evaluation rubric of the instruction
tuning and RL recipe (see :mod:`visiontales.recipes.instructions`; its Tables 1-2), and the
judge behind its reward of eq. 2 (:class:`visiontales.recipes.rl.JudgeReward`).

Each story is judged on its own, never next to another story: judges favour whichever
story comes first in a pairwise prompt (position bias). The prompt also says that length
is not quality, since judges otherwise reward longer answers (verbosity bias).
:class:`OpenAICompatibleJudge` talks to any ``/v1/chat/completions`` server (vLLM,
llama.cpp, Ollama, OpenAI) with the standard library only, retries transient failures
and caches every answer on disk, so a re-run never asks twice.

>>> class Constant(Judge):
...     def score(self, story, images=None, key=None):
...         return JudgeScores(7, 7, 5, 6)
>>> Constant().score_many(["a story .", "another ."], progress=False)["overall"].tolist()
[6, 6]
"""
from __future__ import annotations

import abc
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Hashable, Sequence

import pandas as pd

from visiontales.data.images import ImageLike, image_data_url
from visiontales.utils import atomic_path, progress_bar, read_json

CRITERIA = ("coherence", "relevance", "emotional_depth", "overall")

RUBRIC_PROMPT = """You are an expert judge of visual stories: short stories written for a \
sequence of photos.
{photos}

Rate the story below on four criteria, each an integer from 1 (very poor) to 10 (excellent):
- coherence: do the sentences follow one another as one connected story, with consistent \
characters and events?
- relevance: does the story fit the photos, describing what they show in the order shown?
- emotional_depth: does the story convey feelings, atmosphere or meaning beyond a list of \
what is visible?
- overall: overall quality as a story a person would enjoy reading.

Length is not quality: do not reward a story for being longer or penalise it for being \
short. Judge this story on its own merits.

Story:
\"\"\"{story}\"\"\"

Answer with only a JSON object and nothing else:
{"coherence": <int>, "relevance": <int>, "emotional_depth": <int>, "overall": <int>}"""

_WITH_PHOTOS = "The {n} photos the story was written for are attached, in order."
_WITHOUT_PHOTOS = ("The photos are not shown to you: rate relevance by how concretely the "
                   "story describes scenes a sequence of photos could show.")


class JudgeError(RuntimeError):
    """A judge gave no usable answer (unreachable server, HTTP error, malformed reply)."""


@dataclass(frozen=True)
class JudgeScores:
    """One story's rubric scores, integers from 1 to 10.

    >>> JudgeScores(coherence=8, relevance=7, emotional_depth=6, overall=7).as_dict()["overall"]
    7
    """

    coherence: int
    relevance: int
    emotional_depth: int
    overall: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def parse_scores(text: str) -> JudgeScores:
    """Strictly parse a judge's answer: one JSON object (a ```json fence is fine) with all
    four criteria as integers in 1..10; anything else raises :class:`JudgeError`.

    >>> parse_scores('```json\\n{"coherence": 8, "relevance": 7, "emotional_depth": 5, '
    ...              '"overall": 7}\\n```')
    JudgeScores(coherence=8, relevance=7, emotional_depth=5, overall=7)
    """
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL | re.IGNORECASE)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    try:
        obj = json.loads(body[start:end + 1]) if 0 <= start < end else None
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise JudgeError(f"the judge's answer holds no JSON object: {_shorten(text)!r}")
    bad = [c for c in CRITERIA if not (type(obj.get(c)) is int and 1 <= obj[c] <= 10)]
    if bad:
        raise JudgeError(f"the judge's answer needs integer 1..10 for {bad}: {_shorten(text)!r}")
    return JudgeScores(**{c: obj[c] for c in CRITERIA})


def _message_text(reply: dict) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return f"(no choices[0].message.content in the reply: {_shorten(json.dumps(reply))})"
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


class Judge(abc.ABC):
    """Scores one story at a time; :meth:`score_many` fans out over ``max_concurrency``
    threads and returns a DataFrame (index ``key``, one int column per criterion)."""

    max_concurrency: int = 1

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
        results: list[JudgeScores | None] = [None] * len(stories)
        failures: list[str] = []
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool, \
                progress_bar(total=len(stories), desc="judging", unit="story",
                     disable=not progress) as bar:
            futures = {pool.submit(self.score, s, im, k): i
                       for i, (s, im, k) in enumerate(zip(stories, images, keys))}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except JudgeError as err:
                    failures.append(f"{keys[i]!r}: {err}")
                bar.update(1)
        if failures:
            raise JudgeError(f"{len(failures)} of {len(stories)} stories got no score; "
                             f"first: {failures[0]}")
        frame = pd.DataFrame([r.as_dict() for r in results], columns=list(CRITERIA),
                             index=pd.Index(keys, name="key"))
        return frame.astype("int64")


class OpenAICompatibleJudge(Judge):
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    POSTs ``{base_url}/chat/completions`` (e.g. ``base_url="http://127.0.0.1:8000/v1"``)
    with the API key from ``$api_key_env`` when set (local servers need none). With
    ``send_images`` the photos travel as base64 JPEG data URLs (longest side <= 512 px).
    Timeouts, connection errors, HTTP 429 and 5xx are retried ``max_retries`` times with
    exponential backoff (``backoff * 2**attempt`` s, or the server's Retry-After); other
    HTTP errors are not. An unparsable answer is asked once more, then raised.
    ``cache_dir`` keeps one JSON file per (model, prompt, story, images, temperature).

    With a server running (vLLM, Ollama, llama.cpp, a hosted API)::

        judge = OpenAICompatibleJudge("http://127.0.0.1:8000/v1", "qwen2-vl-7b")
        table = judge.score_many(stories, images=image_sequences)
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 send_images: bool = False, timeout: float = 60, max_retries: int = 3,
                 backoff: float = 1.0, max_concurrency: int = 4,
                 cache_dir: str | os.PathLike | None = None, temperature: float = 0,
                 max_tokens: int = 200, prompt: str = RUBRIC_PROMPT):
        if "{story}" not in prompt:
            raise ValueError("prompt must contain a {story} placeholder")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.send_images = model, api_key_env, send_images
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_concurrency = max_concurrency
        self.temperature, self.max_tokens = temperature, max_tokens
        self.prompt = prompt
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def _body(self, story: str, images: Sequence[ImageLike] | None) -> tuple[dict, str, list]:
        """The request body, its prompt text and the image data URLs it carries."""
        urls = ([image_data_url(im, max_side=512) for im in images or []]
                if self.send_images else [])
        photos = _WITH_PHOTOS.format(n=len(urls)) if urls else _WITHOUT_PHOTOS
        # replace(), not format(): the prompt's JSON example and stories contain braces
        text = self.prompt.replace("{photos}", photos).replace("{story}", story.strip())
        content: str | list = text
        if urls:
            content = [{"type": "text", "text": text}] + [
                {"type": "image_url", "image_url": {"url": u}} for u in urls]
        body = {"model": self.model, "messages": [{"role": "user", "content": content}],
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        return body, text, urls

    def _cache_path(self, text: str, story: str, urls: list[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        identity = {"model": self.model, "prompt": text, "story": story,
                    "temperature": self.temperature,
                    "images": [hashlib.sha256(u.encode()).hexdigest() for u in urls]}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{digest}.json"

    def _post(self, body: dict, key: Hashable) -> dict:
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        data = json.dumps(body).encode()
        last, wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(max(wait, self.backoff * 2 ** (attempt - 1)))
            wait = 0.0
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = _shorten(err.read().decode(errors="replace"))
                if err.code != 429 and err.code < 500:
                    raise JudgeError(f"{key!r}: {self.url} answered HTTP {err.code} (not "
                                     f"retried; check the model name and key): {detail}") from None
                last = f"HTTP {err.code}: {detail}"
                retry_after = err.headers.get("Retry-After", "") if err.headers else ""
                wait = min(float(retry_after), 60.0) if retry_after.isdigit() else 0.0
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError,
                    http.client.HTTPException) as err:
                last = repr(getattr(err, "reason", err))
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise JudgeError(f"{key!r}: {self.url} sent non-JSON: "
                                 f"{_shorten(raw.decode(errors='replace'))!r}") from None
        raise JudgeError(f"{key!r}: no answer from {self.url} after "
                         f"{self.max_retries + 1} attempts (last: {last})")

    def score(self, story: str, images: Sequence[ImageLike] | None = None,
              key: Hashable = None) -> JudgeScores:
        body, text, urls = self._body(story, images)
        cache_path = self._cache_path(text, story, urls)
        if cache_path is not None and cache_path.exists():
            try:
                return parse_scores(json.dumps(read_json(cache_path)["scores"]))
            except (ValueError, KeyError, TypeError, JudgeError):
                pass  # a damaged cache entry is asked again, never trusted
        for attempt in range(2):  # a malformed answer gets one more chance
            content = _message_text(self._post(body, key))
            try:
                scores = parse_scores(content)
                break
            except JudgeError as err:
                if attempt:
                    raise JudgeError(f"{key!r}: {err}") from None
        if cache_path is not None:
            record = {"scores": scores.as_dict(), "raw": content, "model": self.model}
            with atomic_path(cache_path) as tmp:
                tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        return scores
