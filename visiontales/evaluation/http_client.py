"""One client for OpenAI-compatible chat-completions servers (vLLM, Ollama, llama.cpp,
LM Studio, a hosted API), shared by the rubric judge (:mod:`.judge`) and the LVLM
storytellers (:mod:`.storytellers`): retries, Retry-After, timeouts and a disk cache, once.

It uses the standard library's ``urllib`` only, so asking a server needs no extra package.
``timeout`` bounds each wait on the socket (connecting, each read), as ``urllib`` does; a
server that holds a request open past it is asked again, like one that answers 429 or 5xx.

>>> message = user_message("Tell a story.", ["data:image/jpeg;base64,AAAA"])
>>> [part["type"] for part in message["content"]]
['text', 'image_url']
>>> retry_after_seconds("2"), retry_after_seconds(None), retry_after_seconds("soon")
(2.0, 0.0, 0.0)
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Hashable, Sequence, TypeVar

from visiontales.utils import atomic_path, progress_bar, read_json

T = TypeVar("T")


class EndpointError(OSError):
    """A chat endpoint gave no usable answer: unreachable, an HTTP error, a malformed reply.

    An ``OSError``, as ``urllib``'s own ``URLError`` is: something outside the program
    failed, and the command line reports it in one line."""

    def __str__(self) -> str:  # OSError's str() would show a tuple for odd arguments
        return str(self.args[0]) if self.args else ""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters, for error messages.

    >>> shorten("a\\n b   c"), shorten("x" * 5, limit=3)
    ('a b c', 'xxx...')
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def message_text(reply: dict) -> str:
    """The text of a chat-completions reply's first choice (content parts are joined).

    >>> message_text({"choices": [{"message": {"content": "a day ."}}]})
    'a day .'
    """
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return f"(no choices[0].message.content in the reply: {shorten(json.dumps(reply))})"
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def user_message(text: str, image_urls: Sequence[str] = ()) -> dict:
    """A user chat message: plain text, or text then each image as an ``image_url`` part
    in the given order (the form vLLM, Ollama, llama.cpp and hosted APIs accept)."""
    if not image_urls:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": url}} for url in image_urls]}


def retry_after_seconds(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks to wait: a number of seconds or an HTTP date;
    0 when absent or unreadable."""
    value = (value or "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class ChatClient:
    """POSTs to ``{base_url}/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``).

    The API key comes from ``$api_key_env`` when that is set (local servers need none).
    Timeouts, connection errors, replies that are not JSON, HTTP 429 and 5xx are retried
    ``max_retries`` times, after ``backoff * 2**attempt`` s or the server's Retry-After
    (at most ``max_retry_after`` s), whichever is longer; other HTTP errors (a wrong model
    name or key) are raised at once. ``cache_dir`` keeps one JSON file per request body,
    holding the answer's text, so a re-run never asks twice.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60, max_retries: int = 3, backoff: float = 1.0,
                 max_retry_after: float = 60.0, cache_dir: str | os.PathLike | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_retry_after = max_retry_after
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def body(self, messages: list[dict], **options) -> dict:
        """A request body for this client's model; ``options`` (temperature, max_tokens,
        seed...) are added as given."""
        return {"model": self.model, "messages": messages, **options}

    def post(self, body: dict, key: Hashable = None) -> dict:
        """The server's JSON reply to ``body``, retried as the class says; ``key`` names
        the request in errors."""
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
                detail = shorten(err.read().decode(errors="replace"))
                if err.code != 429 and err.code < 500:
                    raise EndpointError(f"{key!r}: {self.url} answered HTTP {err.code} (not "
                                        f"retried; check the model name and key): {detail}") from None
                last = f"HTTP {err.code}: {detail}"
                header = err.headers.get("Retry-After") if err.headers else None
                wait = min(retry_after_seconds(header), self.max_retry_after)
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError,
                    http.client.HTTPException) as err:
                last = repr(getattr(err, "reason", err))
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:  # a proxy's error page, a reply cut short
                last = f"not JSON: {shorten(raw.decode(errors='replace'))!r}"
        raise EndpointError(f"{key!r}: no answer from {self.url} after "
                            f"{self.max_retries + 1} attempts (last: {last})")

    def cache_path(self, body: dict) -> Path | None:
        """The cache file of ``body`` (None without ``cache_dir``): a hash of the whole
        request, so another model, prompt, photo or setting is another entry."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / f"{digest}.json"

    def complete(self, body: dict, parse: Callable[[str], T], key: Hashable = None) -> T:
        """``parse`` of the answer's text: from the cache when it holds a parsable answer,
        else from the server. ``parse`` raises :class:`EndpointError` on an unusable answer,
        which is asked once more, then raised."""
        path = self.cache_path(body)
        if path is not None and path.exists():
            try:
                return parse(read_json(path)["content"])
            except (ValueError, KeyError, TypeError, EndpointError):
                pass  # a damaged cache entry is asked again, never trusted
        for attempt in range(2):
            content = message_text(self.post(body, key))
            try:
                result = parse(content)
                break
            except EndpointError as err:
                if attempt:
                    raise type(err)(f"{key!r}: {err}") from None
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"model": self.model, "content": content}, indent=2),
                               encoding="utf-8")
        return result


def fan_out(call: Callable[..., T], jobs: Sequence[tuple], keys: Sequence[Hashable], *,
            max_concurrency: int, desc: str, failed: str, error: type[EndpointError],
            progress: bool = True) -> list[T]:
    """``[call(*job) for job in jobs]`` on ``max_concurrency`` threads, in order.

    Failures (:class:`EndpointError`) are gathered and raised together as one ``error``
    after the other jobs finished (and, with a cache, were saved), naming the first by key.

    >>> fan_out(lambda x: x * 2, [(1,), (2,)], ["a", "b"], max_concurrency=2, desc="x",
    ...         failed="failed", error=EndpointError, progress=False)
    [2, 4]
    """
    results: list = [None] * len(jobs)
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, max_concurrency)) as pool, \
            progress_bar(total=len(jobs), desc=desc, unit="story", disable=not progress) as bar:
        futures = {pool.submit(call, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except EndpointError as err:  # named by its key once, whoever named it
                prefix, message = f"{keys[i]!r}: ", str(err)
                failures.append(message if message.startswith(prefix) else prefix + message)
            bar.update(1)
    if failures:
        raise error(f"{len(failures)} of {len(jobs)} stories {failed}; first: {failures[0]}")
    return results
