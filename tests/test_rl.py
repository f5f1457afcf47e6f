"""Self-critical RL: the loss's sign and zero point, the rewards, a toy reward learned end to end."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

import visiontales as vt
from visiontales.evaluation.judge import Judge, JudgeScores
from visiontales.evaluation.predictions import keys_for
from visiontales.recipes.rl import (CiderReward, GroundingReward, JudgeReward, SelfCritical, WeightedReward,
                                    sequence_logprobs)
from visiontales.model.tokens import collate, encode_targets

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def rows():
    return vt.sample_dataset("train").frame.head(4)


@pytest.fixture
def model(rows):
    model = vt.StoryModel.tiny(vocab_from=list(rows["text"]), prefix="sequence")
    return model.eval()  # no dropout: log-probabilities are repeatable


def _batch(model, frame):
    """The batch the Trainer would build for these rows."""
    examples = encode_targets(model.tokenizer, model.prompt_ids(), frame["text"])
    batch = collate(examples, model.tokenizer.eos_token_id)
    batch["features"] = torch.stack([model.encode_images(list(p), progress=False) for p in frame["image_paths"]])
    return batch


def _rl_batch(model, frame):
    """What the Trainer hands the RL step: the batch plus each row's prompt ids, kept apart."""
    return {**_batch(model, frame), "prompt_ids": [model.prompt_ids()] * len(frame)}


def balloons(stories, rows=None):
    """The toy reward: how often a story says "balloon"."""
    return torch.tensor([float(s.split().count("balloon")) for s in stories])


class Scripted:
    """Rewards given in advance: the first call (the samples) gets ``first``, then ``then``."""

    def __init__(self, first, then):
        self.values = [first, then]

    def __call__(self, stories, rows):
        return torch.full((len(stories),), float(self.values.pop(0)))


def test_sequence_logprobs_are_the_models_own_loss(model, rows):
    batch = _batch(model, rows.head(1))
    target = [t for t in batch["labels"][0].tolist() if t != -100]
    prompts = [model.prompt_ids()]
    assert batch["input_ids"][0, :len(prompts[0])].tolist() == prompts[0]
    logprob = sequence_logprobs(model, batch["features"], prompts, [target])
    assert torch.allclose(logprob, -model.loss(**batch), atol=1e-5)
    total = sequence_logprobs(model, batch["features"], prompts, [target], length_normalize=False)
    assert torch.allclose(total, logprob * len(target), atol=1e-4)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_reward_above_the_baseline_makes_the_sample_more_likely(model, rows, advantage):
    batch = _rl_batch(model, rows)
    rl = SelfCritical(Scripted(advantage, 0.0), max_new_tokens=8)
    torch.manual_seed(0)
    loss = rl(model, batch, rows)
    samples, prompts = rl.last_sample_ids, batch["prompt_ids"]
    with torch.no_grad():
        before = sequence_logprobs(model, batch["features"], prompts, samples)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad  # one plain SGD step on the RL loss
        after = sequence_logprobs(model, batch["features"], prompts, samples)
    assert loss.item() == pytest.approx(-advantage * before.mean().item(), rel=1e-4)
    assert ((after - before) * advantage > 0).all()  # better than greedy: up; worse: down
    assert rl.last_stats == {"reward_sample": advantage, "reward_greedy": 0.0}


def test_equal_rewards_give_zero_gradient(model, rows):
    rl = SelfCritical(lambda stories, rows: torch.ones(len(stories)), max_new_tokens=8)
    rl(model, _rl_batch(model, rows), rows).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)


def test_samples_stop_at_the_first_eos_and_repeat_per_row(model, rows):
    eos = model.tokenizer.eos_token_id
    rl = SelfCritical(balloons, max_new_tokens=6, num_samples=3, top_p=0.9, temperature=1.3)
    loss = rl(model, _rl_batch(model, rows), rows)
    assert loss.shape == () and len(rl.last_sample_ids) == 3 * len(rows)
    for ids in rl.last_sample_ids:
        assert 1 <= len(ids) <= 6 and eos not in ids[:-1]  # nothing after the first EOS


def test_cider_d_uses_training_document_frequencies():
    train = pd.DataFrame({"photo_ids": [("1", "2"), ("3", "4"), ("5", "6")],
                          "text": ["the red balloon flew over the house .",
                                   "the dog ran on the beach .",
                                   "the cake was on the table ."]})
    reward = CiderReward(train)
    frame = train.head(1)
    same, unrelated = reward(["the red balloon flew over the house .",
                              "we went to the city ."], pd.concat([frame, frame]))
    # every n-gram of the reference is in 1 of 3 sets except "the", "." (all 3: idf 0):
    # clipped cosine 1 for each n, no length penalty -> 10 * mean_n(1) = 10, by hand
    assert same.item() == pytest.approx(10.0) and unrelated.item() == pytest.approx(0.0)
    # words found in every training set weigh nothing: "the ." matches, and scores 0
    assert reward(["the ."], frame).item() == pytest.approx(0.0)
    df = dict(reward.document_frequency)
    held_out = pd.DataFrame({"photo_ids": [("9", "8")], "text": ["a new story about a balloon ."]})
    assert reward(["a new story about a balloon ."], held_out).item() > 0  # its own text is its reference
    assert dict(reward.document_frequency) == df  # counted once, from the training set


def test_cider_d_agrees_with_pycocoevalcap_on_its_own_references():
    val = vt.sample_dataset("val").frame.head(12)
    stories = [val["text"].iloc[(i + 3) % 12] for i in range(12)]  # some overlap, some not
    keys = ["_".join(p) for p in val["photo_ids"]]
    gts, res = {}, {}
    for key, text, story in zip(keys, val["text"], stories):
        gts.setdefault(key, []).append(text)
        res.setdefault(key, [story])
    ours = CiderReward(val)
    first = [keys.index(k) for k in gts]
    mine = ours([res[k][0] for k in gts], val.iloc[first]).mean().item()
    assert mine == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-6)  # float32


def test_grounding_judge_and_weighted_rewards(model, rows):
    grounding = GroundingReward(model)(["a purple balloon .", "a car ."], rows.head(2))
    assert grounding.shape == (2,) and ((grounding >= 0) & (grounding <= 2.5)).all()

    class LengthJudge(Judge):
        def score(self, story, images=None, key=None):
            n = min(10, len(story.split()))
            return JudgeScores(n, n, 1, n)

    judge = JudgeReward(LengthJudge(), "overall")
    assert judge(["a b c", "a"], rows.head(2)).tolist() == [3.0, 1.0]
    both = WeightedReward({judge: 1.0, balloons: 2.0})
    assert both(["a balloon balloon", "a"], rows.head(2)).tolist() == [7.0, 1.0]
    with pytest.raises(ValueError, match="criterion"):
        JudgeReward(LengthJudge(), "fun")


@pytest.mark.slow
def test_trainer_logs_the_rewards_from_rl_start_epoch_on(tmp_path):
    train = vt.sample_dataset("train").select(range(8))
    model = vt.StoryModel.tiny(vocab_from=train, prefix="sequence")
    seen = []  # (sample reward, greedy reward) per step, in calling order

    def counting(stories, rows):
        reward = torch.tensor([float(len(s.split()) % 3) for s in stories])
        if len(seen) and len(seen[-1]) == 1:
            seen[-1].append(reward.mean().item())
        else:
            seen.append([reward.mean().item()])
        return reward

    config = vt.TrainingConfig(lr=1e-3, batch_size=2, epochs=2, log_every=2, rl_weight=0.5, rl_start_epoch=1,
                               progress=False, num_samples=0, save_every=0, output_dir=str(tmp_path))
    trainer = vt.Trainer(model, train, config=config, rl=SelfCritical(counting, max_new_tokens=8))
    history = trainer.train()
    assert {"reward_sample", "reward_greedy"} <= set(history.columns)
    first, second = history[history["epoch"] == 1], history[history["epoch"] == 2]
    assert first["reward_sample"].isna().all()          # no RL before rl_start_epoch
    assert len(seen) == 4 and len(second) == 2           # 4 RL steps, 2 per history row
    expected = [[(seen[0][j] + seen[1][j]) / 2, (seen[2][j] + seen[3][j]) / 2] for j in (0, 1)]
    assert second["reward_sample"].tolist() == pytest.approx(expected[0])
    assert second["reward_greedy"].tolist() == pytest.approx(expected[1])
    fig = trainer.plot_history()
    assert len(fig.axes) == 2                           # loss, and the rewards on their own axis
    assert {line.get_label() for line in fig.axes[1].lines} == {"reward, sampled", "reward, greedy (baseline)"}


@pytest.mark.slow
def test_resuming_mid_row_with_rl_gives_the_same_rewards_and_weights(tmp_path):
    """A checkpoint inside a history row keeps the pending rewards; sampling resumes exactly."""
    train = vt.sample_dataset("train").select(range(8))

    def run(name, resume_from=None):
        model = vt.StoryModel.tiny(vocab_from=train, prefix="sequence")
        config = vt.TrainingConfig(lr=1e-3, batch_size=2, epochs=2, log_every=2, save_steps=3, save_every=0,
                                   keep_checkpoints=10, rl_weight=0.5, progress=False, num_samples=0,
                                   output_dir=str(tmp_path / name))
        rl = SelfCritical(lambda stories, rows: torch.tensor([float(len(s.split()) % 4) for s in stories]),
                          max_new_tokens=6)
        return model, vt.Trainer(model, train, config=config, rl=rl).train(resume_from=resume_from)

    whole_model, whole = run("whole")
    # step 3 is inside the row that ends at step 4: its reward is pending when the checkpoint is cut
    part_model, part = run("part", resume_from=tmp_path / "whole" / "checkpoint-step3")
    assert whole["reward_sample"].notna().all() and len(whole) == 4
    pd.testing.assert_frame_equal(part, whole)
    for a, b in zip(whole_model.state_dict().values(), part_model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_rl_with_a_toy_reward_raises_it_on_held_out_photos(tmp_path):
    """NLL first; then NLL + 0.5 * RL with the reward "says balloon" vs NLL only, from the same start."""
    train = vt.sample_dataset("train").select(range(160))
    val = vt.sample_dataset("val")
    sequences = [list(val.frame["image_paths"].iloc[i]) for i in keys_for(val).values()]

    def held_out_reward(model):
        greedy = balloons(model.generate(sequences, max_new_tokens=30, progress=False)).mean().item()
        sampled = model.generate(sequences * 4, max_new_tokens=30, do_sample=True, top_p=1.0, seed=0,
                                 progress=False)
        return greedy, balloons(sampled).mean().item()  # the expected reward, which RL maximises

    def config(name, **kw):
        return vt.TrainingConfig(**{**dict(lr=2e-3, batch_size=16, epochs=4, progress=False, num_samples=0,
                                           save_every=0, seed=3, output_dir=str(tmp_path / name)), **kw})

    model = vt.StoryModel.tiny(vocab_from=train, prefix="sequence")
    vt.Trainer(model, train, val, config("nll-first")).train()
    before = held_out_reward(model)
    nll_only, with_rl = copy.deepcopy(model), copy.deepcopy(model)
    nll_loss = vt.Trainer(nll_only, train, val, config("nll")).train()["eval_loss"].dropna().iloc[-1]
    rl = SelfCritical(balloons, max_new_tokens=30)
    history = vt.Trainer(with_rl, train, val, config("rl", rl_weight=0.5), rl=rl).train()
    rl_loss = history["eval_loss"].dropna().iloc[-1]
    after, control = held_out_reward(with_rl), held_out_reward(nll_only)
    # the control really trained: its weights left the snapshot both runs started from
    moved = max((a.float() - b.float()).abs().max().item()
                for a, b in zip(model.state_dict().values(), nll_only.state_dict().values()))
    assert moved > 1e-3
    print(f"\nheld-out 'balloon' reward (greedy, sampled): before RL {before[0]:.3f}, {before[1]:.3f}; "
          f"after NLL+RL {after[0]:.3f}, {after[1]:.3f}; NLL only {control[0]:.3f}, {control[1]:.3f}\n"
          f"eval loss: NLL+RL {rl_loss:.3f}, NLL only {nll_loss:.3f} ({rl_loss / nll_loss:.2f}x); "
          f"last batch {rl.last_stats}")
    assert after[1] >= before[1] + 0.15 and after[1] > control[1] + 0.1
    assert rl_loss < 1.5 * nll_loss


@pytest.mark.slow
def test_ablation_example_runs_offline_quick(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "ablation.py"), "--quick",
                             "--output-dir", str(tmp_path / "ablation")],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "sample data, tiny models" in out
    for variant in ("full", "w/o instruction tuning", "w/o RL", "mean prefix", "frozen GPT-2"):
        assert variant in out
    for metric in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "object acc."):
        assert metric in out


def test_rl_weight_without_an_rl_step_is_refused(tmp_path):
    train = vt.sample_dataset("train").select(range(4))
    model = vt.StoryModel.tiny(vocab_from=train)
    with pytest.raises(ValueError, match="rl_weight > 0 needs the RL step"):
        vt.Trainer(model, train, config=vt.TrainingConfig(rl_weight=0.5, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="the RL step would never run"):
        vt.TrainingConfig(rl_weight=0.5, rl_start_epoch=17)   # 7 epochs by default
