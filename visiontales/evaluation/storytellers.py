"""Storytellers behind an endpoint: a vision-language model (Qwen-VL, LLaVA, MiniGPT-4...)
served by any OpenAI-compatible chat server, as a system to compare with your own model.

:class:`EndpointStoryteller` has :meth:`~visiontales.model.story_model.StoryModel.generate`'s
shape, a list of photo sequences in, one story per sequence out, so
:func:`visiontales.evaluation.predictions.predict` and ``visiontales generate --endpoint``
write its stories under the same keys as a trained model's, and the metrics, the judge,
the rating sheets and the report treat it like any model. Its requests go through the
judge's client (:class:`visiontales.evaluation.http_client.ChatClient`): retries,
Retry-After, timeouts, and a disk cache that makes a re-run free (and repeatable even
with ``temperature > 0``).

>>> teller = EndpointStoryteller("http://127.0.0.1:8000/v1", "llava")
>>> teller.generate([])
[]
>>> story_text("  Story:\\n We went out.\\n\\nIt rained. ")
'We went out. It rained.'
"""
from __future__ import annotations

import os
import re
from typing import Sequence

from visiontales.data.images import ImageLike, image_data_url
from visiontales.evaluation.http_client import ChatClient, EndpointError, fan_out, user_message

STORY_PROMPT = ("The {n} photos attached are, in order, the photos of one album. Tell the "
                "story of this album as a person would tell it to a friend: one or two short "
                "sentences per photo, in the order of the photos. Plain prose only: no title, "
                "no list, no preamble. Answer with the story and nothing else.")


def story_text(text: str) -> str:
    """An answer as one line of story: a leading ``Story:`` label and the spacing dropped;
    an empty answer raises :class:`EndpointError` (it is asked once more)."""
    text = re.sub(r"^\s*(?:\*\*)?story(?:\*\*)?\s*:\s*", "", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if not text:
        raise EndpointError("the answer holds no story")
    return text


class EndpointStoryteller:
    """Stories from a vision model behind ``{base_url}/chat/completions``.

    Each sequence is one request: ``prompt`` (``{n}`` is the number of photos), then the
    photos as JPEG ``image_url`` data URLs in order (longest side <= ``max_side`` px).
    ``temperature``, ``max_tokens`` and ``seed`` go into the request as given (``seed``
    only when set; not every server honours it). ``max_concurrency`` requests run at
    once. Retries, ``timeout`` and ``cache_dir`` are those of
    :class:`~visiontales.evaluation.http_client.ChatClient`.

    With a server running (``ollama serve``, ``vllm serve``...)::

        llava = EndpointStoryteller("http://127.0.0.1:11434/v1", "llava:7b", cache_dir="cache")
        stories = llava.generate([["1.jpg", "2.jpg", "3.jpg"]])
    """

    def __init__(self, base_url: str, model: str, prompt: str = STORY_PROMPT,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 120,
                 max_retries: int = 3, backoff: float = 1.0, max_concurrency: int = 4,
                 cache_dir: str | os.PathLike | None = None, temperature: float = 0,
                 max_tokens: int = 300, seed: int | None = None, max_side: int = 512):
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout=timeout,
                                 max_retries=max_retries, backoff=backoff, cache_dir=cache_dir)
        self.prompt, self.max_concurrency, self.max_side = prompt, max_concurrency, max_side
        self.options = {"temperature": temperature, "max_tokens": max_tokens,
                        **({"seed": seed} if seed is not None else {})}

    def __repr__(self) -> str:
        return f"EndpointStoryteller({self.client.url!r}, {self.client.model!r})"

    def _body(self, images: Sequence[ImageLike]) -> dict:
        urls = [image_data_url(im, max_side=self.max_side) for im in images]
        text = self.prompt.replace("{n}", str(len(urls)))
        return self.client.body([user_message(text, urls)], **self.options)

    def tell(self, images: Sequence[ImageLike], key=None) -> str:
        """The story of one photo sequence; ``key`` names it in errors."""
        return self.client.complete(self._body(images), story_text, key)

    def generate(self, image_sequences: Sequence[Sequence[ImageLike]],
                 progress: bool = True) -> list[str]:
        """One story per image sequence (each a list of paths or PIL images), in order.
        A sequence without an answer after the retries fails the call, naming it, once
        every other sequence was asked (and cached)."""
        if isinstance(image_sequences, (str, bytes)) or any(
                isinstance(seq, (str, bytes)) or not seq for seq in image_sequences):
            raise ValueError("image_sequences must be a list of non-empty photo sequences, "
                             "e.g. [['a.jpg', 'b.jpg']]")
        keys = [f"sequence {i}" for i in range(len(image_sequences))]
        return fan_out(self.tell, [(list(seq), key) for seq, key in zip(image_sequences, keys)],
                       keys, max_concurrency=self.max_concurrency, desc="telling",
                       failed="got no story", error=EndpointError, progress=progress)
