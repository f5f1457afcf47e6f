"""Instruction tasks: each task's inputs and targets, the mixing rule, prompts carry no loss."""
import pytest
import torch

import visiontales as vt
from visiontales.data.vist import load_vist
from visiontales.recipes.instructions import (INSTRUCTIONS, InstructionDataset, build_instruction_dataset,
                                      dominant_emotion, instruction_prompt, mask_mention, task_pool)
from visiontales.model.tokens import IGNORE_INDEX, collate, encode_targets

SENTENCES = ["[female] brought a cake and we were excited .",
             "we were so happy to see the balloons .",
             "[female] laughed with her friends .",
             "it was a fun and happy day ."]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture
def windows(make_vist, tmp_path):
    """Story 0: four photos (30000..30003) with the sentences above, at a birthday party;
    story 1: three photos (30100..30102), "story 1 sentence k .", no name, no emotion."""
    stories = [[{"text": s} for s in SENTENCES], [{}] * 3]
    ann, images = make_vist(tmp_path, stories, albums={"2000": "birthday_party", "2001": "beach"})
    return load_vist(ann, images, seq_len=3, progress=False)  # windows: 0-2, 1-3 and story 1


def _rows(dataset, task, dii=None):
    return [(ex["photo_ids"], ex["instruction"], ex["text"]) for ex in task_pool(dataset, task, dii)]


def test_story_and_consistency_tell_the_whole_window(windows):
    window0 = " ".join(SENTENCES[:3])
    story = _rows(windows, "story")
    assert story[0] == (("30000", "30001", "30002"), "", window0) and len(story) == 3
    consistency = _rows(windows, "consistency")
    assert consistency[0] == (("30000", "30001", "30002"), INSTRUCTIONS["consistency"], window0)
    assert "same characters and places" in INSTRUCTIONS["consistency"]


def test_caption_one_photo_its_sentence_or_its_dii_caption(windows):
    caption = _rows(windows, "caption", dii={"30001": "a table with purple balloons ."})
    prompt = "Describe this photo in one sentence:"
    assert caption[:4] == [(("30000",), prompt, SENTENCES[0]),
                           (("30001",), prompt, "a table with purple balloons ."),
                           (("30002",), prompt, SENTENCES[2]),
                           (("30003",), prompt, SENTENCES[3])]  # overlapping windows: once each
    assert len(caption) == 7  # and story 1's three photos


def test_continuation_sees_k_sentences_and_k_plus_1_photos(windows):
    continuation = _rows(windows, "continuation")
    assert continuation[:4] == [
        (("30000", "30001"), f"Continue the story. So far: {SENTENCES[0]} Next:", SENTENCES[1]),
        (("30000", "30001", "30002"),
         f"Continue the story. So far: {SENTENCES[0]} {SENTENCES[1]} Next:", SENTENCES[2]),
        (("30001", "30002"), f"Continue the story. So far: {SENTENCES[1]} Next:", SENTENCES[2]),
        (("30001", "30002", "30003"),
         f"Continue the story. So far: {SENTENCES[1]} {SENTENCES[2]} Next:", SENTENCES[3])]


def test_fill_in_masks_a_name_the_other_sentences_give_and_skips_windows_without_one(windows):
    fill_in = _rows(windows, "fill_in")
    head = "Fill in the blank ___ with the person or place that the other sentences name:"
    assert fill_in == [
        # [female] repeats in window 0: the last repeat is masked, the first one gives it away
        (("30000", "30001", "30002"),
         f"{head} {SENTENCES[0]} {SENTENCES[1]} ___ laughed with her friends . Answer:", "[female]"),
        # nothing repeats in window 1: the first mention
        (("30001", "30002", "30003"),
         f"{head} {SENTENCES[1]} ___ laughed with her friends . {SENTENCES[3]} Answer:", "[female]"),
    ]  # story 1 names no one: no example
    assert mask_mention(["we saw my mom .", "mom smiled ."]) == (["we saw my mom .", "___ smiled ."], "mom")
    assert mask_mention(["a red car ."]) is None


def test_emotion_context_names_the_event_and_the_dominant_emotion(windows):
    answers = [text for _, _, text in _rows(windows, "emotion_context")]
    assert answers == ["event: birthday party ; emotion: excited",  # excited 1, happy 1: first wins
                       "event: birthday party ; emotion: happy",    # happy 2, fun 1
                       "event: beach ; emotion: none"]
    assert dominant_emotion("We were SCARED, so scared. Then happy.") == "afraid"  # forms count
    assert dominant_emotion("they loved it , so much love") == "love"


def test_mixture_follows_the_weights_and_the_seed():
    val = vt.sample_dataset("val")
    weights = {"caption": 3, "fill_in": 0}
    mix = build_instruction_dataset(val, weights=weights, max_examples=71, seed=1)
    # 71 rows split 1:3:1:1:0:1 over story, caption, continuation, consistency, fill_in, emotion
    # (10.14 and 30.43: floors 10 and 30, the one row left goes to the largest remainder)
    assert mix.frame["task"].value_counts().to_dict() == {
        "caption": 31, "story": 10, "continuation": 10, "consistency": 10, "emotion_context": 10}
    again = build_instruction_dataset(val, weights=weights, max_examples=71, seed=1)
    other = build_instruction_dataset(val, weights=weights, max_examples=71, seed=2)
    assert mix.frame.equals(again.frame) and not mix.frame.equals(other.frame)
    assert set(mix.frame.columns) >= {"instruction", "task", "photo_ids", "text"}
    assert {len(p) for p in mix.frame["photo_ids"]} == {1, 2, 3}  # images per row differ by task
    # default size: one example per task and window; a pool smaller than its share repeats whole
    default = build_instruction_dataset(val, tasks=("story", "fill_in"))
    assert len(default) == 2 * len(val)
    fill_in = default.frame[default.frame["task"] == "fill_in"]
    pool = task_pool(val, "fill_in")
    assert len(pool) < len(fill_in) == len(val)
    assert len(set(zip(fill_in["photo_ids"], fill_in["instruction"]))) == len(pool)
    with pytest.raises(ValueError, match="not in tasks"):
        build_instruction_dataset(val, tasks=("story",), weights={"caption": 1})


def test_instruction_columns_survive_select_and_task_with_no_example_warns(windows):
    mix = build_instruction_dataset(windows, max_examples=12)
    picked = mix.select([0, len(mix) - 1])
    assert isinstance(picked, InstructionDataset) and picked[1]["task"] == "emotion_context"
    assert picked.frame["instruction"].iloc[1] == INSTRUCTIONS["emotion_context"]
    no_sentences = vt.StoryDataset.from_records([["a.jpg", "b.jpg"]], ["two photos ."])
    with pytest.warns(UserWarning, match="caption"):
        only = build_instruction_dataset(no_sentences, tasks=("story", "caption"))
    assert only.frame["task"].tolist() == ["story", "story"]


def test_instruction_tokens_carry_no_loss():
    val = vt.sample_dataset("val")
    mix = build_instruction_dataset(val, max_examples=12)
    model = vt.StoryModel.tiny(vocab_from=list(mix.texts) + list(mix.frame["instruction"]))
    prompts = [model.prompt_ids(text or None) for text in mix.frame["instruction"]]
    encoded = encode_targets(model.tokenizer, prompts, mix.texts)
    for prompt, text, (ids, labels) in zip(prompts, mix.texts, encoded):
        target = model.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        assert ids[:len(prompt)] == prompt and labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[len(prompt):] == target + [model.tokenizer.eos_token_id]
    story = mix.frame["task"].tolist().index("story")
    assert prompts[story] == model.prompt_ids()  # "" = the model's default prompt


@pytest.mark.slow
def test_trainer_learns_the_mixture_and_generate_takes_the_same_instructions(tmp_path):
    train = vt.sample_dataset("train").select(range(24))
    mix = build_instruction_dataset(train, seed=0, max_examples=48)
    model = vt.StoryModel.tiny(vocab_from=list(mix.texts) + list(mix.frame["instruction"]))
    config = vt.TrainingConfig(lr=2e-3, batch_size=8, epochs=8, progress=False, num_samples=0,
                               log_every=1, save_every=0, output_dir=str(tmp_path / "run"))
    history = vt.Trainer(model, mix, mix, config).train()
    assert history["eval_loss"].dropna().iloc[-1] < 0.2 * history["loss"].iloc[0]  # 6.4 -> 0.8
    # the caption instruction taught the model to stop after the photo's one sentence; the
    # story prompt (three sentences in training) did not. Over ten seed settings of this run
    # the mean chance of EOS there is 0.65-0.95 with the instruction and 0.01-0.48 without
    # (after 4 epochs the two are still alike, so this run has 8).
    rows = mix.frame[mix.frame["task"] == "caption"]
    photos, sentences = list(rows["image_paths"]), list(rows["text"])
    asked = _stop_probability(model, photos, instruction_prompt("caption"), sentences)
    told = _stop_probability(model, photos, None, sentences)
    assert asked.mean() > 0.5 and asked.mean() > told.mean() + 0.25, (asked, told)
    # generate() takes the same instruction: it changes what most photos get (5 or 6 of 6)
    photos = [list(train[i]["image_paths"][:1]) for i in range(0, 24, 4)]
    captions = model.generate(photos, prompt=instruction_prompt("caption"), max_new_tokens=40)
    stories = model.generate(photos, max_new_tokens=40)
    assert all(captions) and sum(c != s for c, s in zip(captions, stories)) > len(photos) // 2


def _stop_probability(model, photos, prompt, texts) -> torch.Tensor:
    """p(EOS) right after each text, given its first photo and the prompt, on the training path."""
    features = model.encode_images([p[0] for p in photos])[:, None]  # (B, 1, D)
    examples = encode_targets(model.tokenizer, model.prompt_ids(prompt), texts)
    batch = collate(examples, model.tokenizer.eos_token_id)
    model.eval()
    with torch.no_grad():
        logits = model(features, batch["input_ids"], batch["attention_mask"]).logits
    prefix = logits.shape[1] - batch["input_ids"].shape[1]
    before_eos = torch.tensor([prefix + len(ids) - 2 for ids, _ in examples])
    return logits[torch.arange(len(examples)), before_eos].softmax(-1)[:, model.tokenizer.eos_token_id]
