"""The top level of the package: the core names, ``vt.evaluate`` the function (resolved on
first use), names that left the top level are gone, and an import that stays light."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import visiontales as vt
import visiontales.evaluation.metrics

REPO = Path(__file__).resolve().parents[1]
CORE = ("StoryDataset", "load_vist", "sample_dataset", "StoryModel", "StoryModelConfig",
        "WeightsUnavailableError", "Trainer", "TrainingConfig", "TrainState", "TrainerCallback",
        "evaluate", "__version__")


def test_the_core_names_are_the_top_level():
    assert set(CORE) <= set(vt.__all__)
    assert all(hasattr(vt, name) for name in vt.__all__)
    assert set(dir(vt)) >= set(vt.__all__)


def test_evaluate_is_the_function_not_a_module():
    assert vt.evaluate is visiontales.evaluation.metrics.evaluate
    assert importlib.util.find_spec("visiontales.evaluate") is None  # renamed to metrics


def test_evaluate_scores_a_story_with_every_default_metric(monkeypatch, tmp_path):
    # without Java (METEOR's scores against pycocoevalcap are tests/test_metrics.py's), METEOR
    # is nan with a warning and the rest stands; a Java start would cost this test 10 s
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="METEOR"):
        scores = vt.evaluate({"1_2_3": "We went to the beach."},
                             {"1_2_3": ["we went to the beach .", "the sea was calm ."]})
    assert scores["BLEU-1"] == pytest.approx(100.0) and scores["n"] == 1
    assert {"METEOR", "ROUGE-L", "CIDEr", "distinct-1"} <= set(scores)


@pytest.mark.parametrize("name", ["SelfCritical", "build_instruction_dataset", "no_such_name"])
def test_names_off_the_top_level_do_not_resolve(name):
    """The instruction and RL names live in visiontales.recipes only (nothing is released yet)."""
    with pytest.raises(AttributeError, match=f"no attribute '{name}'"):
        getattr(vt, name)


def test_load_stories_resolves_lazily_to_the_data_layer():
    from visiontales.data.stories import load_stories
    assert vt.load_stories is load_stories


@pytest.mark.slow
def test_import_loads_no_metric_demo_or_clip_package():
    """``import visiontales`` stays light: pycocoevalcap, gradio and open_clip are imported
    where they are used (evaluation, the demo page, building a CLIP)."""
    heavy = ("pycocoevalcap", "gradio", "open_clip")
    code = f"import sys, visiontales; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_version_is_the_installed_metadata():
    """setup.cfg is the one place the version lives; the package reads it back."""
    from importlib.metadata import version
    assert vt.__version__ == version("visiontales")
    assert f"version = {vt.__version__}\n" in (REPO / "setup.cfg").read_text(encoding="utf-8")
