"""The stories follow the photos: after short training, generated stories name what the
held-out photos show far above chance, and the sequence prefix names them in order.

The shipped sample data names exactly one object per sentence (8 objects), so a story can
be checked word by word. Chance is measured, not assumed: each story scored against the
objects of every window of another album, averaged.

The margins come from seeds 0-4 of exactly this training run (`python examples/grounding.py`,
the README's table): a change of hardware or of a random stream moves a run within that
spread, so the bounds sit below its worst case.
"""
import os
import subprocess
import sys

import pytest

import visiontales as vt
from visiontales.training.photo_dependence import photo_dependence
from visiontales.evaluation.object_check import as_set, chance, in_order, truths_of
from visiontales.recipes.tiny import train_tiny_model


@pytest.fixture(scope="module")
def held_out():
    val = vt.sample_dataset("val")
    return [list(p) for p in val.frame["image_paths"]], truths_of(val), list(val.frame["album_id"])


# the package's one tiny recipe, as examples/grounding.py (the README table) trains it;
# without its per-epoch eval loss, which leaves the trained weights bit-identical
TRAIN = """
import sys
from visiontales.recipes.tiny import train_tiny_model
prefix, out = sys.argv[1:]
train_tiny_model(prefix, seed=0, progress=False, output_dir=out).save_pretrained(out + "/model")
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The three prefixes trained at once, one process and one thread each: on 2 cores that
    takes about half the wall time of three runs one after another (a tiny model gains
    little from a second thread). Yields a loader of each saved model."""
    root = tmp_path_factory.mktemp("grounding")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = {prefix: subprocess.Popen([sys.executable, "-c", TRAIN, prefix, str(root / prefix)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for prefix in ("sequence", "patches", "mean")}
    for prefix, run in runs.items():
        _, err = run.communicate(timeout=900)
        assert run.returncode == 0, f"{prefix}: {err[-3000:]}"
    return lambda prefix: vt.StoryModel.from_pretrained(root / prefix / "model")


@pytest.mark.slow
def test_sequence_prefix_names_the_right_objects_in_order(held_out, trained):
    sequences, truths, albums = held_out
    model = trained("sequence")
    stories = model.generate(sequences)
    accuracy, base = in_order(stories, truths), chance(in_order, stories, truths, albums)
    reversed_order = in_order(stories, [t[::-1] for t in truths])
    gap = photo_dependence(model, vt.sample_dataset("val"))["gap"]
    print(f"sequence prefix: in-order accuracy {accuracy:.2f}, chance {base:.2f}, "
          f"against reversed order {reversed_order:.2f}, photo gap {gap:.2f} nats per token")
    assert accuracy >= 0.8 and accuracy >= 3 * base  # the demo's promise, for every seed 0-4
    assert accuracy >= 2 * reversed_order            # the order of the photos is followed
    assert gap >= 0.1                                # shuffled photos cost it clearly


@pytest.mark.slow
def test_patches_prefix_names_the_right_objects_in_order(held_out, trained):
    sequences, truths, albums = held_out
    stories = trained("patches").generate(sequences)
    accuracy, base = in_order(stories, truths), chance(in_order, stories, truths, albums)
    reversed_order = in_order(stories, [t[::-1] for t in truths])
    print(f"patches prefix: in-order accuracy {accuracy:.2f}, chance {base:.2f}, "
          f"against reversed order {reversed_order:.2f}")
    # learned queries reading a photo's class token and 4 x 4 patch tokens: seed 0 names the
    # objects in order as the sequence prefix does (0.88 on the docs' machine). Unlike the
    # bounds above this one is not below every seed's: seeds 1-4 ended at 0.35 to 0.75
    # (docs/performance.md), so a run on other hardware may land near the bound
    assert accuracy >= 0.8 and accuracy >= 3 * base and accuracy >= 2 * reversed_order


@pytest.mark.slow
def test_mean_prefix_names_the_right_objects(held_out, trained):
    sequences, truths, albums = held_out
    stories = trained("mean").generate(sequences)
    accuracy, base = as_set(stories, truths), chance(as_set, stories, truths, albums)
    print(f"mean prefix: objects named {accuracy:.2f}, chance {base:.2f}")
    # averaging three tiny random-CLIP features blurs them: a smaller margin than the sequence
    # prefix (see the README's table). For a model that ignores the photos the binomial
    # sd of the accuracy over 270 photos is about 0.03, so a margin of 0.07 is not luck.
    assert accuracy - base >= 0.07 and accuracy >= 1.2 * base
