"""The full-size path users run: GPT-2's real tokenizer, GPT-2 124M, CLIP ViT-B-32 (QuickGELU).

Offline: the tokenizer comes from openai-whisper's BPE ranks (``tokens.gpt2_tokenizer``);
the weights are random but have the real shapes and sit in the files users have, a
``from_pretrained`` folder for GPT-2 and an open_clip ``pretrained=<file>`` for CLIP.
Every other test uses a tiny tokenizer trained on the sample text; tests/test_tokens.py checks
the masking and padding rules with both.
"""
import copy
import importlib.util
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import open_clip
import pytest
import tiktoken
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

import visiontales as vt
from visiontales.model import backbones as loading
from visiontales.model.story_model import DEFAULT_PROMPT, StoryModelConfig
from visiontales.model.tokens import EOS_TOKEN, IGNORE_INDEX, collate, encode_target, encode_targets

EOS = 50256
CLIP = "ViT-B-32-quickgelu"
PLACEHOLDERS = ("[male]", "[female]", "[location]", "[organization]")
# VIST's own tokenisation, as the annotations spell it (lowercased, spaced punctuation)
VIST_STRINGS = ["mr. [male] and [female] went to [location] w/ the kids -- it was great !",
                "we watched t.v . `` best day ever '' she said .",
                "[organization] 's new building had 100s of people ... wow ?"]


@contextmanager
def seeded(seed: int):
    """Deterministic initialisation that leaves the caller's global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@pytest.fixture(scope="module")
def tok(gpt2_tok):
    return gpt2_tok


@pytest.fixture(scope="module")
def texts():
    return vt.sample_dataset("train").texts + VIST_STRINGS


@pytest.fixture(scope="module")
def narrow(tok):
    """GPT-2's 1024 positions and real vocabulary with one narrow layer: real limits, fast."""
    with seeded(0):
        clip, preprocess = loading.load_clip(loading.TINY_CLIP, None)
        lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=64))
        config = StoryModelConfig(clip=loading.TINY_CLIP, clip_pretrained=None, lm="gpt2-narrow",
                                  prefix="sequence", prefix_length=4)
        return vt.StoryModel(clip, preprocess, lm, tok, config)


def huge_story(texts) -> str:
    """About 1,400 tokens of VIST text: more than GPT-2's 1024 positions hold."""
    return " ".join(texts[:40])


# ---- the real tokenizer on VIST text --------------------------------------------------

def test_tokenizer_matches_tiktoken_on_vist_text(tok, texts):
    """tiktoken's own BPE on the same ranks is the reference for "the tokens users get"."""
    whisper = Path(importlib.util.find_spec("whisper").submodule_search_locations[0])
    reference = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, special_tokens={EOS_TOKEN: EOS},
                                  mergeable_ranks=load_tiktoken_bpe(str(whisper / "assets" / "gpt2.tiktoken")))
    for text in texts + [DEFAULT_PROMPT]:
        assert tok(" " + text)["input_ids"] == reference.encode(" " + text), text
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert (tok.eos_token_id, len(tok), tok.pad_token_id) == (EOS, 50257, None)  # GPT-2 has no pad


def test_vist_text_round_trips_exactly(tok, narrow, texts):
    """Placeholders and VIST's " ." spacing survive encoding, decoding and generate's cleanup."""
    prompt = narrow.prompt_ids()
    for text in texts:
        ids, labels, cut = encode_target(tok, prompt, text)
        story = ids[len(prompt):]
        assert not cut and story.count(EOS) == 1 and story[-1] == EOS, text
        assert tok.decode(story[:-1]) == " " + text
        assert tok.decode(story[-2:-1]) == " " + text.split()[-1]  # " ." is one token, kept
        assert narrow.decode(story + [EOS, EOS]) == text  # what generate() returns for these ids


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_placeholder_encodes_the_same_in_any_context(tok, placeholder):
    """One placeholder, one token sequence: the model learns [male] once, not per neighbour."""
    alone = tok(" " + placeholder)["input_ids"]
    assert tok.decode(alone) == " " + placeholder
    for context in ("{} .", "with {} and", "{} 's car", "-- {} !"):
        ids = tok(" " + context.format(placeholder))["input_ids"]
        assert any(ids[i:i + len(alone)] == alone for i in range(len(ids))), context


def test_prompt_is_nine_tokens_and_masked(tok, narrow):
    """The prompt costs 9 of the 1024 positions and is never a target."""
    prompt = narrow.prompt_ids()
    assert len(prompt) == 9 and tok.decode(prompt) == DEFAULT_PROMPT
    assert prompt == tok(DEFAULT_PROMPT)["input_ids"]  # the real tokenizer adds no BOS
    batch = collate(encode_targets(tok, prompt, ["a dog .", "[male] saw the sea ."]), EOS)
    assert (batch["labels"][:, :9] == IGNORE_INDEX).all()
    assert (batch["input_ids"][:, :9] == torch.tensor(prompt)).all()


# ---- GPT-2's 1024 positions -----------------------------------------------------------

def test_a_story_longer_than_gpt2_is_cut_to_the_positions_left(tok, narrow, texts):
    """max_length=model.token_budget(n) fills exactly 1024 positions; one more is a clear error."""
    assert narrow.max_positions == 1024
    budget = narrow.token_budget(3)
    assert budget == 1024 - 3 * 4
    with pytest.warns(UserWarning, match="1 text.*positions"):
        examples = encode_targets(tok, narrow.prompt_ids(), [huge_story(texts), texts[0]],
                                  max_text_tokens=2000, max_length=budget)
    (long_ids, long_labels), (short_ids, _) = examples
    assert len(long_ids) == budget and long_ids[-1] == long_labels[-1] == EOS
    assert tok.decode(short_ids[len(narrow.prompt_ids()):-1]) == " " + texts[0]  # untouched
    batch = collate(examples, EOS)
    features = torch.randn(2, 3, narrow.clip.visual.output_dim)
    with torch.no_grad():
        assert math.isfinite(narrow(features, **batch, return_logits=False).loss.item())
        over = {k: torch.cat([v, v[:, -1:]], dim=1) for k, v in batch.items()}  # 1025 positions
        with pytest.raises(ValueError, match="exceed the language model's 1024"):
            narrow(features, **over, return_logits=False)


def test_max_length_without_room_for_text_is_an_error(tok):
    with pytest.raises(ValueError, match="no room for text"):
        encode_target(tok, [1, 2, 3], "a dog .", max_length=4)


def test_generation_stops_at_the_last_position(tok, narrow, texts):
    """A prompt that leaves 4 positions gets 4 new tokens, with a warning, not an IndexError."""
    prompt = tok(" " + huge_story(texts))["input_ids"][:1024 - 12 - 4]
    features = torch.randn(1, 3, narrow.clip.visual.output_dim)
    with pytest.warns(UserWarning, match="cut to 4"):
        new = narrow.generate_ids(features, torch.tensor(prompt), max_new_tokens=20, min_new_tokens=20)
    assert new.shape == (1, 4)


@pytest.mark.slow
def test_trainer_cuts_a_story_longer_than_gpt2(narrow, texts, tmp_path, recwarn):
    """TrainingConfig.max_text_tokens above what the positions allow still trains."""
    data = vt.sample_dataset("train").select(range(2))
    frame = data.frame.assign(text=[huge_story(texts), texts[1]])
    config = vt.TrainingConfig(epochs=1, batch_size=2, max_text_tokens=2000, progress=False,
                               num_samples=0, save_every=0, output_dir=str(tmp_path), device="cpu")
    history = vt.Trainer(copy.deepcopy(narrow), vt.StoryDataset.from_frame(frame), config=config).train()
    assert math.isfinite(history["loss"].iloc[-1])
    assert any("positions" in str(w.message) for w in recwarn)


# ---- the whole path at full size ------------------------------------------------------

@pytest.fixture(scope="module")
def full_size(tmp_path_factory, tok):
    """GPT-2 124M (a from_pretrained folder with the real tokenizer) and ViT-B-32 QuickGELU
    weights as one safetensors file; random weights, removed afterwards (about 2 GB)."""
    root = tmp_path_factory.mktemp("full-size")
    with seeded(0):
        lm = GPT2LMHeadModel(GPT2Config())
        clip = open_clip.create_model(CLIP, pretrained=None)
    lm.save_pretrained(root / "gpt2")
    tok.save_pretrained(root / "gpt2")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(root / "clip.safetensors"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_full_size_train_generate_save_reload(full_size, tok):
    """from_components on local files -> Trainer -> generate -> reload -> plain transformers."""
    with seeded(1):  # the prefix mapper's initialisation
        model = vt.StoryModel.from_components(clip=CLIP, clip_pretrained=str(full_size / "clip.safetensors"),
                                              lm=str(full_size / "gpt2"), prefix="sequence")
    assert model.tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert (model.max_positions, model.lm.config.vocab_size, model.lm.config.n_layer) == (1024, 50257, 12)
    assert any(isinstance(m, QuickGELU) for m in model.clip.visual.modules())  # else features are wrong

    data = vt.sample_dataset("train").select(range(4))
    watched = {"mapper": model.mapper.mlp[0].weight, "lm": model.lm.transformer.h[0].mlp.c_fc.weight,
               "clip": model.clip.visual.conv1.weight}
    before = {name: p.detach().clone() for name, p in watched.items()}
    run = full_size / "run"
    config = vt.TrainingConfig(epochs=1, batch_size=4, lr=1e-4, progress=False, num_samples=0,
                               save_every=0, output_dir=str(run), device="cpu")  # one step: 2 cores
    history = vt.Trainer(model, data, config=config).train()
    assert len(history) and history["loss"].map(math.isfinite).all()
    changed = {name: not torch.equal(before[name], p) for name, p in watched.items()}
    assert changed == {"mapper": True, "lm": True, "clip": False}  # CLIP stays frozen

    sequences = [list(p) for p in data.frame["image_paths"].head(2)]
    stories = model.generate(sequences, max_new_tokens=6, min_new_tokens=6)
    assert all(story.strip() for story in stories)
    saved = run / "final"  # the Trainer's model.save_pretrained at the end of training
    reloaded = vt.StoryModel.from_pretrained(saved)
    assert reloaded.generate(sequences, max_new_tokens=6, min_new_tokens=6) == stories
    assert same_state(reloaded.clip, model.clip) and same_state(reloaded.mapper, model.mapper)
    assert any(isinstance(m, QuickGELU) for m in reloaded.clip.visual.modules())
    assert torch.equal(reloaded.feature_std, model.feature_std) and bool(reloaded.feature_stats_fitted)

    plain = AutoModelForCausalLM.from_pretrained(saved / "lm")
    plain_tok = AutoTokenizer.from_pretrained(saved / "lm")
    ids = plain_tok(data.texts[0], return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == tok(data.texts[0])["input_ids"] and plain_tok.eos_token_id == EOS
    model.eval()  # the Trainer leaves it in training mode (dropout)
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, model.lm(ids).logits)
