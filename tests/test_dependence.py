"""Photo dependence: the eval loss with the photos swapped between examples."""
import warnings

import pytest
import torch

import visiontales as vt
from visiontales.training.batching import PreparedData
from visiontales.training.shuffled_photos import (GAP_WARNING, WARN_AFTER_EPOCHS, photo_derangement,
                                                  with_shuffled_photos)
from visiontales.training.photo_dependence import photo_dependence


def test_no_example_keeps_its_photos_on_the_sample_windows():
    """Neighbouring windows share photos; duplicates (several stories per sequence) must not
    swap with each other either; and the answer is the same at every evaluation."""
    val = vt.sample_dataset("val")
    photos = [tuple(p) for p in val.frame["image_paths"]]
    donors = photo_derangement(photos)
    assert sorted(donors) == list(range(len(photos)))                # a permutation
    assert all(photos[d] != photos[i] for i, d in enumerate(donors))
    assert photo_derangement(photos) == donors


def test_duplicated_sequences_and_mixed_photo_counts():
    photos = ["ab", "ab", "ab", "cd", "x", "y", "z"]
    counts = [3, 3, 3, 3, 1, 1, 1]
    donors = photo_derangement(photos, counts)
    for i, d in enumerate(donors):
        if d >= 0:
            assert photos[d] != photos[i] and counts[d] == counts[i]
    assert donors[4:] and all(d >= 0 for d in donors[4:])            # the 1-photo group swaps
    assert sum(d < 0 for d in donors) >= 2  # three "ab" and one "cd": not all can get other photos


def test_shuffled_data_keeps_the_text_and_changes_every_photo():
    features = [torch.full((3, 4), float(i)) for i in range(5)]
    data = PreparedData(features, [([i], [i]) for i in range(5)], photo_ids=[(str(i),) for i in range(5)])
    swapped = with_shuffled_photos(data)
    assert swapped.examples == data.examples
    assert all(not torch.equal(a, b) for a, b in zip(swapped.features, data.features))
    # the photo ids travel with the features they name
    assert all(torch.equal(f, features[int(ids[0])]) for f, ids in zip(swapped.features, swapped.photo_ids))
    with pytest.raises(ValueError, match="photo_ids"):
        with_shuffled_photos(PreparedData(features, data.examples))


def _trainer(tmp_path, model=None, epochs=4, **overrides):
    train, val = vt.sample_dataset("train").select(range(16)), vt.sample_dataset("val").select(range(12))
    config = vt.TrainingConfig.tiny(epochs=epochs, batch_size=8, progress=False, save_every=0,
                                    output_dir=str(tmp_path), **overrides)
    return vt.Trainer(model or vt.StoryModel.tiny(vocab_from=train), train, val, config)


@pytest.mark.slow
@pytest.mark.parametrize("on", [True, False])
def test_training_logs_the_shuffled_eval_loss_when_asked(tmp_path, on):
    trainer = _trainer(tmp_path, photo_check=on)
    trainer.train()
    frame = trainer.history_frame()
    evals = frame.dropna(subset=["eval_loss"])
    assert len(evals) == 4
    if on:
        assert evals["eval_loss_shuffled"].notna().all()
        assert list(frame.columns).index("eval_loss_shuffled") == list(frame.columns).index("eval_loss") + 1
    else:
        assert "eval_loss_shuffled" not in frame.columns


@pytest.mark.slow
def test_a_model_that_cannot_see_the_photos_gets_one_warning(tmp_path):
    """The mean prefix with its mapper zeroed and frozen: the prefix is the same whatever the
    photos, so the two losses are equal and the Trainer says so, once."""
    model = vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train").select(range(16)), prefix="mean")
    for p in model.mapper.parameters():
        torch.nn.init.zeros_(p)
        p.requires_grad_(False)
    trainer = _trainer(tmp_path, model=model, epochs=WARN_AFTER_EPOCHS + 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    mine = [w for w in caught if "not using the photos" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    frame = trainer.history_frame().dropna(subset=["eval_loss"])
    assert (frame["eval_loss_shuffled"] - frame["eval_loss"]).abs().max() < 1e-6


@pytest.mark.slow
def test_a_model_that_uses_the_photos_is_not_warned(tmp_path):
    """The tiny recipe (sequence prefix) on the whole sample training set: past the first
    epochs its loss depends on the photos, and the Trainer keeps quiet about it."""
    train, val = vt.sample_dataset("train"), vt.sample_dataset("val").select(range(24))
    config = vt.TrainingConfig.tiny(epochs=WARN_AFTER_EPOCHS + 2, progress=False, save_every=0,
                                    output_dir=str(tmp_path))
    trainer = vt.Trainer(vt.StoryModel.tiny(vocab_from=train, prefix="sequence"), train, val, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "not using the photos" in str(w.message)]
    frame = trainer.history_frame().dropna(subset=["eval_loss"])
    judged = frame[frame["epoch"] >= WARN_AFTER_EPOCHS]  # the epochs the warning looks at
    assert len(judged) == 3 and ((judged["eval_loss_shuffled"] - judged["eval_loss"]) > GAP_WARNING).all()


def test_photo_dependence_of_any_model_and_dataset():
    model = vt.StoryModel.tiny(prefix="sequence")
    scores = photo_dependence(model, vt.sample_dataset("val").select(range(10)))
    assert scores["gap"] == pytest.approx(scores["eval_loss_shuffled"] - scores["eval_loss"])
    assert scores["eval_loss"] > 0
    with pytest.raises(ValueError, match="two examples"):
        photo_dependence(model, vt.sample_dataset("val").select(range(1)))
