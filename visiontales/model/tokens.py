"""Text side of the model: tokenising targets, label masks and padding (pure functions).

GPT-2 has no pad token, so pads reuse EOS. The mask rules that make that safe:
labels are ``-100`` on the prompt and on padding, but the *first* EOS after the text is
a real target, or the model never learns to stop.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import torch

IGNORE_INDEX = -100
EOS_TOKEN = "<|endoftext|>"


def encode_target(tokenizer, prompt_ids: Sequence[int], text: str, max_text_tokens: int = 128,
                  max_length: int | None = None) -> tuple[list[int], list[int], bool]:
    """Token ids and labels for ``prompt + " " + text + EOS``.

    Returns ``(input_ids, labels, truncated)``; the text is cut to ``max_text_tokens``
    tokens and, when ``max_length`` is given, so that ``prompt + text + EOS`` fits in it
    (EOS still appended); ``truncated`` says whether either cut happened. ``max_length`` is
    what the language model's positions leave after the image prefix
    (:meth:`~visiontales.model.story_model.StoryModel.token_budget`): GPT-2 cannot take more.

    >>> tok = build_tokenizer(["a dog ran ."], vocab_size=300)
    >>> ids, labels, cut = encode_target(tok, [7, 8], "a dog ran .")
    >>> labels[:2], labels[-1] == tok.eos_token_id, cut   # no loss on the prompt; EOS is a target
    ([-100, -100], True, False)
    >>> len(encode_target(tok, [7, 8], "a dog ran .", max_length=4)[0])  # prompt + 1 token + EOS
    4
    """
    limit = max_text_tokens
    if max_length is not None:
        limit = min(limit, max_length - len(prompt_ids) - 1)
        if limit < 1:
            raise ValueError(f"max_length={max_length} leaves no room for text after the "
                             f"{len(prompt_ids)}-token prompt and EOS: shorten the prompt or "
                             "use fewer images / a shorter prefix")
    text_ids = tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
    truncated = len(text_ids) > limit
    text_ids = text_ids[:limit] + [tokenizer.eos_token_id]
    input_ids = list(prompt_ids) + text_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + text_ids
    return input_ids, labels, truncated


def _one_per_text(value, shared: bool, count: int, what: str) -> list:
    values = [value] * count if shared else list(value)
    if len(values) != count:
        raise ValueError(f"{len(values)} {what} for {count} texts")
    return values


def encode_targets(tokenizer, prompt_ids: Sequence[int] | Sequence[Sequence[int]], texts: Iterable[str],
                   max_text_tokens: int = 128, max_length: int | Sequence[int] | None = None,
                   ) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_target` over many texts, with one warning for all truncations.

    ``prompt_ids`` is one prompt for all texts, or one per text (instruction tasks);
    ``max_length`` likewise (examples with different numbers of images have different
    prefixes, so different room left).
    """
    texts = list(texts)
    prompts = _one_per_text(prompt_ids, not prompt_ids or isinstance(prompt_ids[0], int),
                            len(texts), "prompts")
    lengths = _one_per_text(max_length, max_length is None or isinstance(max_length, int),
                            len(texts), "max_length values")
    out, cut = [], 0
    for prompt, text, length in zip(prompts, texts, lengths):
        ids, labels, truncated = encode_target(tokenizer, prompt, text, max_text_tokens, length)
        out.append((ids, labels))
        cut += truncated
    if cut:
        room = "" if max_length is None else " or than the model's positions allow (max_length)"
        warnings.warn(f"{cut} text(s) longer than max_text_tokens={max_text_tokens}{room} were truncated",
                      stacklevel=2)
    return out


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``(input_ids, labels)`` pairs into ``input_ids``, ``attention_mask``, ``labels``.

    >>> batch = collate([([5, 6, 0], [-100, 6, 0]), ([5, 0], [-100, 0])], pad_id=0)
    >>> batch["labels"].tolist()
    [[-100, 6, 0], [-100, 0, -100]]
    >>> batch["attention_mask"].tolist()
    [[1, 1, 1], [1, 1, 0]]
    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(lab)] = torch.tensor(lab)
        mask[row, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 600):
    """A small byte-level BPE tokenizer trained on ``texts``, GPT-2 style, fully offline.

    The GPT-2 vocabulary is not bundled with transformers; the tiny model builds its own
    so tests and the offline demo need no download. Byte-level means any text encodes.

    >>> tok = build_tokenizer(["a dog ran .", "a cat sat ."], vocab_size=300)
    >>> tok.decode(tok(" a dog")["input_ids"])
    ' a dog'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([" " + t for t in texts], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN,
                                  bos_token=EOS_TOKEN, unk_token=EOS_TOKEN)


GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_tokenizer(ranks_file: str | None = None):
    """GPT-2's real tokenizer, offline, from the BPE ranks that ``openai-whisper`` ships.

    transformers does not bundle GPT-2's vocabulary, so without a download only the ranks
    file inside whisper's package data (``whisper/assets/gpt2.tiktoken``; found without
    importing whisper) gives the exact tokens users get. ``ranks_file`` points elsewhere.
    Needs ``tiktoken`` (to read the file) and, without ``ranks_file``, ``openai-whisper``
    (``pip install tiktoken && pip install --no-deps openai-whisper``; both in the
    ``test`` extra).

    >>> tok = gpt2_tokenizer()
    >>> tok("Hello world")["input_ids"], tok.eos_token_id
    ([15496, 995], 50256)
    """
    import importlib.util
    from pathlib import Path

    from transformers import GPT2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if ranks_file is None:
        spec = importlib.util.find_spec("whisper")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("GPT-2's BPE ranks come from the openai-whisper package: "
                              "pip install --no-deps openai-whisper (or pass ranks_file=)")
        ranks_file = str(Path(spec.submodule_search_locations[0]) / "assets" / "gpt2.tiktoken")
    if importlib.util.find_spec("tiktoken") is None:
        raise ImportError("reading GPT-2's BPE ranks needs tiktoken: pip install tiktoken")
    converted = TikTokenConverter(ranks_file, pattern=GPT2_PATTERN,
                                  extra_special_tokens=[EOS_TOKEN]).converted()
    return GPT2TokenizerFast(tokenizer_object=converted, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                             unk_token=EOS_TOKEN, model_max_length=1024)
