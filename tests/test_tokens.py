"""Label masking, padding and EOS: the rules that make GPT-2 learn to stop."""
import pytest
import torch

from visiontales.model.tokens import IGNORE_INDEX, build_tokenizer, collate, encode_target, encode_targets


@pytest.fixture(scope="module", params=["tiny", "gpt2"])
def tok(request):
    """The tiny tokenizer every other test trains, and GPT-2's real one: the rules hold for both."""
    if request.param == "gpt2":
        return request.getfixturevalue("gpt2_tok")
    return build_tokenizer(["[male] saw a yellow sun .", "the boat was blue ."] * 5, vocab_size=300)


def test_prompt_is_masked_and_first_eos_is_a_target(tok):
    prompt = tok("Tell a story:", add_special_tokens=False)["input_ids"]
    ids, labels, cut = encode_target(tok, prompt, "the boat was blue .")
    assert not cut
    assert labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert ids[len(prompt):] == labels[len(prompt):]          # every text token is a target
    assert ids[-1] == labels[-1] == tok.eos_token_id            # ... and so is the EOS
    assert tok.decode(ids[len(prompt):-1]) == " the boat was blue ."


def test_padding_uses_eos_but_is_never_a_target(tok):
    prompt = tok("Go:", add_special_tokens=False)["input_ids"]
    examples = encode_targets(tok, prompt, ["the boat .", "[male] saw a yellow sun over the boat ."])
    batch = collate(examples, pad_id=tok.eos_token_id)
    short = len(examples[0][0])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert short < batch["input_ids"].shape[1]                    # the first row is padded
    assert (batch["input_ids"][0, short:] == tok.eos_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["labels"][0, short - 1] == tok.eos_token_id      # the real EOS stays a target
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (batch["input_ids"].shape[1] - short)
    # each row's last attended token is its EOS target, and its only one
    ends = batch["attention_mask"].sum(1) - 1
    assert batch["labels"][torch.arange(2), ends].tolist() == [tok.eos_token_id] * 2
    assert ((batch["labels"] == tok.eos_token_id).sum(dim=1) == 1).all()


def test_long_text_is_truncated_with_one_warning(tok):
    with pytest.warns(UserWarning, match="2 text"):
        out = encode_targets(tok, [], ["the boat . " * 50, "the sun . " * 50, "hi ."], max_text_tokens=8)
    assert [len(ids) for ids, _ in out][:2] == [9, 9]  # 8 tokens + EOS


def test_byte_level_tokenizer_round_trips_unseen_text(tok):
    text = " Ünïcode 🙂 and words never seen"
    assert tok.decode(tok(text)["input_ids"]) == text
