"""Instruction tasks: one dataset of windows -> a mixture of tasks.

The instruction tuning and RL recipe of this package is that of Lin & Chen, "Improving
Visual Storytelling with Multimodal Large Language Models": instruction tasks (their
section 3.2: caption generation, story continuation, character and scene consistency,
emotion and context recognition), trained with the NLL of eq. 1 plus a reinforcement term,
``L = L_NLL + lambda * L_RL`` (section 3.3, eq. 4), where ``L_RL`` (eq. 3) maximises a
judge's reward (eq. 2), and rated by a rubric judge and by people (section 4.3) on
coherence, relevance, emotional depth and overall quality. The tasks are here; the RL step
is :mod:`visiontales.recipes.rl`, the rubric judge :mod:`visiontales.evaluation.judge` and the human rating
:mod:`visiontales.evaluation.human_rating`. ``story`` (the plain task) and ``fill_in`` are ours.

Each output row keeps the :class:`~visiontales.data.dataset.StoryDataset` columns and adds
``instruction`` (the text placed between the visual prefix and the target; ``""`` means the
model's default prompt) and ``task``. The Trainer puts the loss on the target only and
batches rows with the same number of images together, so one model learns to tell, caption,
continue, restore a name and name the mood.

========================  ===============================  ==================================
task                      images                           target
========================  ===============================  ==================================
``story``                 the window                       the window's text (default prompt)
``caption``               one photo                        its sentence (or its DII caption)
``continuation``          the first k+1 photos             sentence k+1 (context: sentences 1..k)
``consistency``           the window                       the text (keep characters/places)
``fill_in``               the window                       the person/place masked as ``___``
``emotion_context``       the window                       ``event: <label> ; emotion: <word>``
========================  ===============================  ==================================

>>> import visiontales as vt
>>> mixture = build_instruction_dataset(vt.sample_dataset("val"), max_examples=12)
>>> sorted(mixture.frame["task"].unique())[:3]
['caption', 'consistency', 'continuation']
>>> instruction_prompt("caption")
'Describe this photo in one sentence:'
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from visiontales.data.dataset import COLUMNS, StoryDataset
from visiontales.data.text import normalize_text

TASKS = ("story", "caption", "continuation", "consistency", "fill_in", "emotion_context")

# the instruction text of each task; "{context}" is filled per example; "" = the model's prompt
INSTRUCTIONS: dict[str, str] = {
    "story": "",
    "caption": "Describe this photo in one sentence:",
    "continuation": "Continue the story. So far: {context} Next:",
    "consistency": ("Tell a story based on the following images. Keep the same characters "
                    "and places in every sentence:"),
    "fill_in": ("Fill in the blank ___ with the person or place that the other sentences "
                "name: {context} Answer:"),
    "emotion_context": "Name the event and the main emotion of these photos:",
}

# VIST's anonymised names and everyday person words: what fill_in masks
MENTIONS = ("[male]", "[female]", "[location]", "[organization]", "friend", "friends", "mom",
            "dad", "mother", "father", "brother", "sister", "grandma", "grandpa", "grandmother",
            "grandfather", "wife", "husband", "son", "daughter", "baby", "kids", "uncle", "aunt",
            "cousin", "boyfriend", "girlfriend")

# Emotion words (the sample data's eight plus frequent VIST ones) and the forms counted for
# each: the word, its simple inflections and, for a few, the everyday word VIST writers use
# for it (scared -> afraid). A story's emotion is the one with the most matching tokens.
EMOTIONS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "happier", "happiest", "happily", "happiness"),
    "excited": ("excited", "exciting", "excitement", "excite"),
    "fun": ("fun", "funny"),
    "love": ("love", "loved", "loves", "loving", "lovely"),
    "proud": ("proud", "proudly", "pride"),
    "calm": ("calm", "calmer", "calmly", "calmed"),
    "surprised": ("surprised", "surprise", "surprises", "surprising"),
    "sad": ("sad", "sadly", "sadness", "sadder"),
    "tired": ("tired", "tiring", "exhausted"),
    "afraid": ("afraid", "scared", "scary", "frightened"),
    "angry": ("angry", "angrily", "anger", "mad"),
    "bored": ("bored", "boring"),
}
_EMOTION_OF = {form: emotion for emotion, forms in EMOTIONS.items() for form in forms}


# ----------------------------------------------------------------------------- pure helpers

def instruction_prompt(task: str, context: str = "") -> str | None:
    """The instruction of ``task`` as training used it; None for ``story`` (the default prompt).

    Pass it to :meth:`StoryModel.generate` as ``prompt=``, so the same model captions,
    continues or tells:

    >>> instruction_prompt("continuation", "we went to the beach .")
    'Continue the story. So far: we went to the beach . Next:'
    >>> instruction_prompt("story") is None
    True
    """
    if task not in INSTRUCTIONS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return INSTRUCTIONS[task].format(context=" ".join(context.split())) or None


def dominant_emotion(text: str) -> str:
    """The emotion of :data:`EMOTIONS` with the most matching tokens; ties: the earliest.

    ``"none"`` when no emotion word occurs.

    >>> dominant_emotion("we were sad . then happy , so happy !")
    'happy'
    >>> dominant_emotion("a red car .")
    'none'
    """
    counts: dict[str, int] = {}  # insertion order = order of first occurrence
    for token in normalize_text(text).split():
        if token in _EMOTION_OF:
            counts[_EMOTION_OF[token]] = counts.get(_EMOTION_OF[token], 0) + 1
    return max(counts, key=counts.__getitem__) if counts else "none"  # max keeps the first


def emotion_context_answer(text: str, vist_label: str) -> str:
    """The emotion_context target: ``event: <label, _ as space> ; emotion: <word>``.

    >>> emotion_context_answer("we were so proud .", "birthday_party")
    'event: birthday party ; emotion: proud'
    """
    event = " ".join(str(vist_label).replace("_", " ").split()) or "none"
    return f"event: {event} ; emotion: {dominant_emotion(text)}"


def mask_mention(sentences: Sequence[str]) -> tuple[list[str], str] | None:
    """Mask one person/place mention (:data:`MENTIONS`) as ``___``; None if there is none.

    The masked mention is the last one whose word also occurs in another sentence, so the
    other sentences say who or where it is; if no mention repeats, the first mention.
    Returns the sentences with the mask and the masked word.

    >>> mask_mention(["[male] went out .", "the sun shone .", "[male] smiled ."])
    (['[male] went out .', 'the sun shone .', '___ smiled .'], '[male]')
    """
    tokens = [str(s).split() for s in sentences]
    found = [(i, j, tok.lower()) for i, toks in enumerate(tokens) for j, tok in enumerate(toks)
             if tok.lower() in MENTIONS]
    if not found:
        return None
    repeated = [(i, j, w) for i, j, w in found
                if any(w in (t.lower() for t in toks) for k, toks in enumerate(tokens) if k != i)]
    i, j, word = repeated[-1] if repeated else found[0]
    tokens[i][j] = "___"
    return [" ".join(toks) for toks in tokens], word


def mixture_counts(sizes: Mapping[str, int], weights: Mapping[str, float], total: int) -> dict[str, int]:
    """Examples per task: ``total`` split in proportion to ``weights``, summing to ``total``.

    Largest-remainder rounding (ties go to the task listed first); tasks whose pool is
    empty (``sizes[task] == 0``) get nothing and their share goes to the others.

    >>> mixture_counts({"a": 5, "b": 5, "c": 0}, {"a": 2, "b": 1, "c": 1}, 10)
    {'a': 7, 'b': 3, 'c': 0}
    """
    live = {t: float(weights[t]) for t in sizes if sizes[t] > 0 and weights[t] > 0}
    counts = dict.fromkeys(sizes, 0)
    if not live:
        return counts
    norm = sum(live.values())
    exact = {t: total * w / norm for t, w in live.items()}
    counts.update({t: int(x) for t, x in exact.items()})
    by_remainder = sorted(live, key=lambda t: -(exact[t] - int(exact[t])))  # stable: task order
    for task in by_remainder[:total - sum(counts.values())]:
        counts[task] += 1
    return counts


# ----------------------------------------------------------------------------- task pools

def _example(row: dict[str, Any], task: str, start: int, stop: int, text: str,
             instruction: str | None) -> dict[str, Any]:
    return {"story_id": row["story_id"], "album_id": row["album_id"], "window": row["window"] + start,
            "photo_ids": tuple(row["photo_ids"][start:stop]),
            "image_paths": tuple(row["image_paths"][start:stop]),
            "sentences": tuple(row["sentences"][start:stop]), "text": text,
            "vist_label": row["vist_label"], "instruction": instruction or "", "task": task}


def _story(row, dii):
    return [_example(row, "story", 0, len(row["photo_ids"]), row["text"], None)]


def _consistency(row, dii):
    return [_example(row, "consistency", 0, len(row["photo_ids"]), row["text"],
                     instruction_prompt("consistency"))]


def _caption(row, dii):
    return [_example(row, "caption", k, k + 1, (dii or {}).get(pid, sentence),
                     instruction_prompt("caption"))
            for k, (pid, sentence) in enumerate(zip(row["photo_ids"], row["sentences"]))]


def _continuation(row, dii):
    sentences = row["sentences"]
    return [_example(row, "continuation", 0, k + 1, sentences[k],
                     instruction_prompt("continuation", " ".join(sentences[:k])))
            for k in range(1, len(sentences))]


def _fill_in(row, dii):
    masked = mask_mention(row["sentences"])
    if masked is None:
        return []
    context, answer = masked
    return [_example(row, "fill_in", 0, len(row["photo_ids"]), answer,
                     instruction_prompt("fill_in", " ".join(context)))]


def _emotion_context(row, dii):
    return [_example(row, "emotion_context", 0, len(row["photo_ids"]),
                     emotion_context_answer(row["text"], row["vist_label"]),
                     instruction_prompt("emotion_context"))]


_BUILDERS: dict[str, Callable[[dict, Mapping | None], list[dict]]] = {
    "story": _story, "caption": _caption, "continuation": _continuation,
    "consistency": _consistency, "fill_in": _fill_in, "emotion_context": _emotion_context}
_NEEDS_SENTENCES = {"caption", "continuation", "fill_in"}


def task_pool(dataset: StoryDataset, task: str, dii: Mapping[str, str] | None = None) -> list[dict]:
    """Every distinct example ``task`` can make from ``dataset``, in dataset order.

    Overlapping windows repeat photos; an example already made (same photos, instruction
    and target) is made once.

    >>> import visiontales as vt
    >>> len(task_pool(vt.sample_dataset("val"), "story")) == len(vt.sample_dataset("val"))
    True
    """
    if task not in _BUILDERS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    pool, seen = [], set()
    for row in dataset:
        if task in _NEEDS_SENTENCES and len(row["sentences"]) != len(row["photo_ids"]):
            continue  # no per-photo sentences (e.g. from_records without sentences)
        for example in _BUILDERS[task](row, dii):
            key = (example["photo_ids"], example["instruction"], example["text"])
            if key not in seen:
                seen.add(key)
                pool.append(example)
    return pool


# ----------------------------------------------------------------------------- dataset

class InstructionDataset(StoryDataset):
    """A :class:`StoryDataset` whose frame also keeps ``instruction`` and ``task``.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"story_id": ["1"], "image_paths": [("a.jpg",)], "text": ["a dog ."],
    ...                       "instruction": ["Describe this photo in one sentence:"], "task": ["caption"]})
    >>> InstructionDataset(frame)[0]["task"]
    'caption'
    """

    EXTRA_COLUMNS = ("instruction", "task")

    def __init__(self, frame: pd.DataFrame, skipped: pd.DataFrame | None = None) -> None:
        super().__init__(frame, skipped)
        frame = frame.reset_index(drop=True)
        for column in self.EXTRA_COLUMNS:
            self.frame[column] = (frame[column].fillna("").astype(str) if column in frame
                                  else "story" if column == "task" else "")

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = super().__getitem__(index)
        position = index if index >= 0 else len(self) + index
        row.update({c: self.frame[c].iat[position] for c in self.EXTRA_COLUMNS})
        return row

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def select(self, indices: Iterable[int] | slice) -> "InstructionDataset":
        rows = self.frame.iloc[indices if isinstance(indices, slice) else list(indices)]
        return InstructionDataset(rows, self.skipped.copy())


def build_instruction_dataset(dataset: StoryDataset, tasks: Sequence[str] = TASKS,
                              weights: Mapping[str, float] | None = None, seed: int = 0,
                              dii: Mapping[str, str] | None = None,
                              max_examples: int | None = None) -> InstructionDataset:
    """Turn a dataset of windows into a seeded mixture of instruction examples.

    The mixing rule, exactly:

    1. every task in ``tasks`` makes its pool (:func:`task_pool`); a task with an empty
       pool is dropped with a warning (e.g. ``fill_in`` when no window names a person);
    2. the mixture has ``max_examples`` rows, by default ``len(dataset) * len(tasks)``
       (about one example per task and window);
    3. task ``t`` gets ``round(total * w_t / sum(w))`` rows (:func:`mixture_counts`); the
       weights default to 1 per task, ``weights`` overrides some (0 drops a task);
    4. each task draws its rows from its pool without replacement, with its own
       ``random.Random(f"{seed}-{task}")``; a task that needs more rows than its pool holds
       takes the whole pool as many times as fits and samples the rest;
    5. rows come task by task (in ``tasks`` order), each task's rows in pool order.

    ``dii`` maps photo_id -> a descriptive (DII) caption; caption examples of those photos
    target it instead of the story sentence.

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val")
    >>> mix = build_instruction_dataset(val, tasks=("story", "caption"), weights={"caption": 3},
    ...                                 max_examples=20)
    >>> mix.frame["task"].value_counts().to_dict()
    {'caption': 15, 'story': 5}
    """
    tasks = tuple(tasks)
    if unknown := [t for t in tasks if t not in _BUILDERS]:
        raise ValueError(f"unknown task(s) {unknown}; choose from {TASKS}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks has duplicates: {list(tasks)}")
    weights = dict(weights or {})
    if stray := sorted(set(weights) - set(tasks)):
        raise ValueError(f"weights name task(s) {stray} that are not in tasks={list(tasks)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0, got {weights}")
    weights = {t: float(weights.get(t, 1.0)) for t in tasks}
    pools = {t: task_pool(dataset, t, dii) for t in tasks}
    if empty := [t for t in tasks if not pools[t] and weights[t] > 0]:
        warnings.warn(f"instruction task(s) {empty} make no example from this dataset; "
                      f"left out of the mixture", stacklevel=2)
    total = len(dataset) * len(tasks) if max_examples is None else int(max_examples)
    counts = mixture_counts({t: len(p) for t, p in pools.items()}, weights, total)
    rows: list[dict] = []
    for task in tasks:
        pool, wanted = pools[task], counts[task]
        if not wanted:
            continue
        rng = random.Random(f"{seed}-{task}")
        whole, rest = divmod(wanted, len(pool))
        chosen = list(range(len(pool))) * whole + rng.sample(range(len(pool)), rest)
        rows += [pool[i] for i in sorted(chosen)]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *InstructionDataset.EXTRA_COLUMNS])
    return InstructionDataset(frame, dataset.skipped.copy())
