"""Reinforcement step of the instruction tuning and RL recipe (see
:mod:`visiontales.recipes.instructions`): self-critical sequence training and its rewards.

:class:`SelfCritical` (Rennie et al. 2017) is the ``rl`` callable of the Trainer, which adds
``config.rl_weight * rl(model, batch, rows)`` to the NLL: ``L = L_NLL + lambda * L_RL``
(eq. 4), with ``L_RL`` the expected reward of sampled stories (eq. 3). Per batch it samples a
story, decodes the greedy story as the baseline, scores both with a reward and returns the
REINFORCE loss of the sampled tokens weighted by ``reward(sample) - reward(greedy)``: a
sample better than what the model would say anyway is made more likely, a worse one less.

A reward is any callable ``(stories: list[str], rows: DataFrame) -> Tensor (B,)``: rows are
the examples the stories were written for (text, photo_ids, image_paths...). Shipped:
:class:`CiderReward` (CIDEr-D against the training references), :class:`GroundingReward`
(CLIPScore), :class:`JudgeReward` (a rubric judge, the reward of eq. 2) and
:class:`WeightedReward`.

>>> import visiontales as vt
>>> train = vt.sample_dataset("train")
>>> rl = SelfCritical(CiderReward(train), max_new_tokens=30)
>>> config = vt.TrainingConfig(rl_weight=0.5, rl_start_epoch=2)   # then Trainer(..., rl=rl)
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from visiontales.data.dataset import frame_of
from visiontales.data.text import normalize_text
from visiontales.evaluation.clipscore import model_grounding
from visiontales.model.tokens import IGNORE_INDEX, collate

Reward = Callable[[list, pd.DataFrame], torch.Tensor]


# ----------------------------------------------------------------------------- log-probabilities

def until_eos(ids: Sequence[int], eos: int) -> list[int]:
    """Generated ids up to and including the first EOS (what follows it is padding).

    >>> until_eos([4, 5, 0, 0, 9], eos=0)
    [4, 5, 0]
    """
    ids = list(ids)
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def sequence_logprobs(model, features: torch.Tensor, prompts: Sequence[Sequence[int]],
                      continuations: Sequence[Sequence[int]], length_normalize: bool = True) -> torch.Tensor:
    """``(B,)`` log-probability of each continuation after ``[prefix][prompt]``, with grad.

    Teacher forcing through ``model.forward`` (prefix embeddings + GPT-2); the mean over
    the continuation's tokens with ``length_normalize``, else their sum. ``features``:
    ``(B, N, D)``.
    """
    examples = [(list(p) + list(c), [IGNORE_INDEX] * len(p) + list(c))
                for p, c in zip(prompts, continuations)]
    batch = collate(examples, model.tokenizer.eos_token_id)
    batch = {k: v.to(features.device) for k, v in batch.items()}
    logits = model(features, batch["input_ids"], batch["attention_mask"]).logits  # (B, P+T, V)
    width = batch["input_ids"].shape[1]
    # position j of the prefixed sequence predicts token j + 1: the tokens' logits end one early
    token_logits = logits[:, -width - 1:-1].float()  # (B, T, V)
    labels = batch["labels"]
    keep = labels != IGNORE_INDEX
    logp = torch.log_softmax(token_logits, dim=-1).gather(-1, labels.clamp_min(0)[..., None])[..., 0]
    total = (logp * keep).sum(1)
    return total / keep.sum(1).clamp_min(1) if length_normalize else total


# ----------------------------------------------------------------------------- self-critical

class SelfCritical:
    """Self-critical sequence training: ``-(r(sample) - r(greedy)) * log p(sample)``.

    Called by the Trainer as ``rl(model, batch, rows)``; ``batch`` holds ``features``
    ``(B, N, D)`` and ``prompt_ids`` (each row's prompt or instruction, as token ids; the
    Trainer keeps them apart from the targets), ``rows`` the examples' frame. Per call:

    1. without grad, in eval mode: ``num_samples`` sampled continuations per row
       (``top_p``, ``temperature``; top-k off) and the greedy one, from ``[prefix][prompt]``;
       generation stops at EOS or after ``max_new_tokens``; tokens after the first EOS are
       dropped (the EOS itself is kept: stopping is a decision too);
    2. ``reward(sample_stories, rows)`` then ``reward(greedy_stories, rows)`` (in that
       order; with ``num_samples > 1`` the rows are repeated, each row k times in a row);
    3. with grad, in the model's current mode: the log-probability of each sampled
       continuation (mean per token with ``length_normalize``, else the sum) and the loss
       ``-((r_sample - r_greedy) * logprob).mean()``. Equal rewards give exactly zero grad.

    The log-probabilities are the model's own (temperature 1, no top-p), the usual
    approximation when sampling is tempered. ``last_stats`` keeps the mean rewards of the
    last call (``reward_sample``, ``reward_greedy``), ``last_sample_ids`` its samples.

    >>> rl = SelfCritical(lambda stories, rows: torch.tensor([s.count("balloon") for s in stories]))
    >>> rl.last_stats
    {}
    """

    def __init__(self, reward: Reward, max_new_tokens: int = 40, top_p: float = 1.0,
                 temperature: float = 1.0, num_samples: int = 1, length_normalize: bool = True):
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {num_samples} "
                             f"and {max_new_tokens}")
        self.reward = reward
        self.max_new_tokens = max_new_tokens
        self.top_p = top_p
        self.temperature = temperature
        self.num_samples = num_samples
        self.length_normalize = length_normalize
        self.last_stats: dict[str, float] = {}
        self.last_sample_ids: list[list[int]] = []

    @torch.no_grad()
    def _generate(self, model, features: torch.Tensor, prompts: list[list[int]],
                  sample: bool) -> list[list[int]]:
        """New token ids per row (same order), generated from ``[prefix][prompt]``."""
        eos = model.tokenizer.eos_token_id
        out: list[list[int] | None] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}  # rows with the same prompt generate together
        for i, prompt in enumerate(prompts):
            groups.setdefault(tuple(prompt), []).append(i)
        for prompt, rows in groups.items():
            ids = torch.tensor(prompt, dtype=torch.long, device=features.device)
            generated = model.generate_ids(features[rows], ids, self.max_new_tokens, do_sample=sample,
                                           top_p=self.top_p, temperature=self.temperature)
            for i, new in zip(rows, generated.tolist()):
                out[i] = until_eos(new, eos)
        return out  # type: ignore[return-value]

    def __call__(self, model, batch: Mapping, rows) -> torch.Tensor:
        features, k = batch["features"], self.num_samples
        prompts = [list(p) for p in batch["prompt_ids"]]
        frame = frame_of(rows).reset_index(drop=True)
        was_training = model.training
        model.eval()  # no dropout while deciding what to say
        try:
            repeated = [p for p in prompts for _ in range(k)]
            samples = self._generate(model, features.repeat_interleave(k, dim=0), repeated, True)
            greedy = self._generate(model, features, prompts, False)
        finally:
            model.train(was_training)
        r_sample = torch.as_tensor(self.reward([model.decode(s) for s in samples],
                                               frame.iloc[[i for i in range(len(frame)) for _ in range(k)]]),
                                   dtype=torch.float32).reshape(-1)
        r_greedy = torch.as_tensor(self.reward([model.decode(g) for g in greedy], frame),
                                   dtype=torch.float32).reshape(-1)
        advantage = (r_sample - r_greedy.repeat_interleave(k)).to(features.device)  # (B*k,)
        logprob = sequence_logprobs(model, features.repeat_interleave(k, dim=0), repeated, samples,
                                    self.length_normalize)
        self.last_sample_ids = samples
        self.last_stats = {"reward_sample": float(r_sample.mean()),
                           "reward_greedy": float(r_greedy.mean())}
        return -(advantage * logprob).mean()


# ----------------------------------------------------------------------------- rewards

def ngram_counts(text: str, n: int = 4) -> Counter:
    """Counts of every 1..n-gram of the space-separated tokens (pycocoevalcap's ``precook``).

    >>> ngram_counts("a b a", 2)[("a",)], ngram_counts("a b a", 2)[("b", "a")]
    (2, 1)
    """
    words = text.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _references_key(row) -> tuple:
    return tuple(str(p) for p in row["photo_ids"]), str(row.get("instruction", "") or "")


class CiderReward:
    """CIDEr-D of each story against its references, with training document frequencies.

    ``references_corpus`` (a StoryDataset or its frame, the training set) gives the
    references: a row's references are the corpus texts over the same photo ids (and the
    same instruction, for instruction mixtures) plus the row's own text. The document
    frequency of each n-gram (n = 1..4) is the number of those reference sets that contain
    it, counted once here; ``log(number of sets)`` is the reference length of the idf.

    The score is the formula of pycocoevalcap's ``CiderScorer`` (CIDEr-D, Vedantam et al.
    2015), computed here because that scorer recomputes the idf from the scored set:
    tf-idf n-gram vectors, the candidate's weights clipped at the reference's, cosine per
    n, a Gaussian length penalty ``exp(-d^2 / (2 sigma^2))`` (``d`` the difference in
    bigram counts, as there), the mean over n and over references, times 10. Only the idf
    differs: fixed from the training references instead of the scored set's. Texts are
    put in VIST's form by :func:`~visiontales.data.text.normalize_text` first.

    >>> frame = pd.DataFrame({"photo_ids": [("1", "2"), ("3", "4")],
    ...                       "text": ["a red balloon flew away .", "we ate cake ."]})
    >>> reward = CiderReward(frame)
    >>> reward(["a red balloon flew away .", "we ate cake ."], frame).tolist()
    [10.0, 10.0]
    """

    def __init__(self, references_corpus, n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.references: dict[tuple, list[str]] = {}
        for _, row in frame_of(references_corpus).iterrows():
            refs = self.references.setdefault(_references_key(row), [])
            text = normalize_text(str(row["text"]))
            if text not in refs:
                refs.append(text)
        if not self.references:
            raise ValueError("CiderReward: the references corpus is empty")
        self.document_frequency: Counter = Counter()
        for refs in self.references.values():
            self.document_frequency.update({g for ref in refs for g in ngram_counts(ref, n)})
        self.ref_len = math.log(len(self.references))
        self._vectors: dict[tuple, list] = {}  # reference key -> tf-idf vectors, filled on use

    def _vector(self, text: str):
        vec = [dict() for _ in range(self.n)]
        norm, length = [0.0] * self.n, 0
        for gram, tf in ngram_counts(text, self.n).items():
            k = len(gram) - 1
            weight = tf * (self.ref_len - math.log(max(1.0, self.document_frequency[gram])))
            vec[k][gram] = weight
            norm[k] += weight * weight
            length += tf if k == 1 else 0
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, story: str, references: Sequence[str]) -> float:
        """CIDEr-D of one story against ``references`` (both normalised here)."""
        return self._score(story, [self._vector(normalize_text(ref)) for ref in references])

    def _score(self, story: str, reference_vectors: list) -> float:
        vec, norm, length = self._vector(normalize_text(story))
        total = 0.0
        for vec_ref, norm_ref, length_ref in reference_vectors:
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                dot = sum(min(w, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0)
                          for g, w in vec[k].items())
                if norm[k] and norm_ref[k]:
                    dot /= norm[k] * norm_ref[k]
                total += dot * penalty / self.n
        return 10.0 * total / len(reference_vectors)

    def __call__(self, stories: Sequence[str], rows) -> torch.Tensor:
        frame = frame_of(rows)
        if len(frame) != len(stories):
            raise ValueError(f"{len(stories)} stories for {len(frame)} rows")
        return torch.tensor([self._score(s, self._reference_vectors(row))
                             for s, (_, row) in zip(stories, frame.iterrows())])

    def _reference_vectors(self, row) -> list:
        """The row's references as tf-idf vectors: the corpus's (computed once) plus its own text."""
        key = _references_key(row)
        if key not in self._vectors:
            self._vectors[key] = [self._vector(ref) for ref in self.references.get(key, [])]
        own = normalize_text(str(row["text"]))
        if own in self.references.get(key, []):
            return self._vectors[key]
        return self._vectors[key] + [self._vector(own)]


class GroundingReward:
    """CLIPScore of each story against its row's images (the model's own CLIP, 0 to 2.5).

    Meaningful with real CLIP weights (the tiny model's CLIP is random):

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val")
    >>> model = vt.StoryModel.tiny(vocab_from=val)
    >>> reward = GroundingReward(model)   # then SelfCritical(reward)
    >>> reward(["a purple balloon .", "a car ."], val.frame.head(2)).shape
    torch.Size([2])
    """

    def __init__(self, model):
        self.model = model

    def __call__(self, stories: Sequence[str], rows) -> torch.Tensor:
        sequences = [list(p) for p in frame_of(rows)["image_paths"]]
        return torch.tensor(model_grounding(self.model, list(stories), sequences))


class JudgeReward:
    """A rubric judge's score (1 to 10) of each story: the judge reward of eq. 2 of the
    recipe (see :mod:`visiontales.recipes.instructions`), with any judge.

    ``judge`` is a :class:`visiontales.evaluation.judge.Judge`, e.g. ``OpenAICompatibleJudge(url,
    "qwen2-vl")``, whose disk cache makes repeated stories free; ``criterion`` one of its
    ``criteria`` (e.g. ``"plot_progression"`` of a ``criteria="narrative"`` judge). With a
    stand-in judge that likes long stories:

    >>> from visiontales.evaluation.judge import Judge, JudgeScores
    >>> class Wordy(Judge):
    ...     def score(self, story, images=None, key=None):
    ...         n = min(10, len(story.split()))
    ...         return JudgeScores(n, n, n, n)
    >>> rows = pd.DataFrame({"image_paths": [("a.jpg",), ("b.jpg",)]})
    >>> JudgeReward(Wordy(), "overall")(["we went to the park .", "fun ."], rows).tolist()
    [6.0, 2.0]
    """

    def __init__(self, judge, criterion: str = "overall"):
        from visiontales.evaluation.judge import CRITERIA
        criteria = tuple(getattr(judge, "criteria", CRITERIA))
        if criterion not in criteria:
            raise ValueError(f"criterion must be one of the judge's {criteria}, got {criterion!r}")
        self.judge, self.criterion = judge, criterion

    def __call__(self, stories: Sequence[str], rows) -> torch.Tensor:
        images = [list(p) for p in frame_of(rows)["image_paths"]]
        scores = self.judge.score_many(list(stories), images=images, progress=False)
        return torch.tensor(scores[self.criterion].to_numpy(), dtype=torch.float32)


class WeightedReward:
    """``sum(weight * reward(stories, rows))`` over ``{reward: weight}``.

    >>> length = lambda stories, rows: torch.tensor([float(len(s.split())) for s in stories])
    >>> WeightedReward({length: 0.5})(["a b c d"], None).tolist()
    [2.0]
    """

    def __init__(self, rewards: Mapping[Reward, float]):
        if not rewards:
            raise ValueError("WeightedReward needs at least one {reward: weight}")
        self.rewards = dict(rewards)

    def __call__(self, stories: Sequence[str], rows) -> torch.Tensor:
        return sum(weight * torch.as_tensor(reward(stories, rows), dtype=torch.float32)
                   for reward, weight in self.rewards.items())
