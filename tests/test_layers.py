"""The house: layers that follow the data flow, kept by import-linter; no import circles;
no module over 400 lines; and a core (load, train, generate) that runs without the layers above."""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import visiontales

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(visiontales.__file__).resolve().parent
LAYERS = ["visiontales.app", "visiontales.recipes", "visiontales.training", "visiontales.evaluation",
          "visiontales.model", "visiontales.data", "visiontales.utils"]
UPPER = ("visiontales.evaluation", "visiontales.recipes", "visiontales.app")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("visiontales", exclude_type_checking_imports=True)


def test_the_repository_contract_names_the_layers_in_order():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    contract = config["importlinter:contract:layers"]
    assert contract["type"] == "layers"
    assert contract["layers"].split() == LAYERS


def test_lint_imports_keeps_the_contract():
    """import-linter itself, with the repository's contract (what `lint-imports` runs)."""
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_layer_imports_from_a_layer_above(graph):
    """The same rule read from grimp's graph, lazy imports inside functions included."""
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers=set())
    assert not illegal, [(d.importer, d.imported, d.routes) for d in illegal]


def test_a_lazy_upward_import_would_be_caught(graph):
    """The check is not blind to imports inside functions: add one and it is found."""
    graph.add_import(importer="visiontales.model.story_model", imported="visiontales.evaluation.metrics",
                     line_number=1, line_contents="    from visiontales.evaluation.metrics import evaluate")
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers=set())
    assert {(d.importer, d.imported) for d in illegal} == {("visiontales.model", "visiontales.evaluation")}


def test_no_import_circles(graph):
    modules = sorted(graph.modules)
    circles = [(a, b) for i, a in enumerate(modules) for b in modules[i + 1:]
               if graph.chain_exists(a, b) and graph.chain_exists(b, a)
               and a != "visiontales" and b != "visiontales"]  # the root re-exports, nothing imports it
    assert not circles


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert sizes and not {name: n for name, n in sizes.items() if n > 400}


CORE_RUN = """
import json, sys
import visiontales as vt
data = vt.sample_dataset("train").select(range(8))
model = vt.StoryModel.tiny(vocab_from=data, prefix="sequence")
config = vt.TrainingConfig.tiny(epochs=1, progress=False, save_every=0, output_dir="run")
history = vt.Trainer(model, data, data, config).train()
story = model.generate([list(data[0]["image_paths"])], max_new_tokens=5, progress=False)[0]
loaded = sorted(m for m in sys.modules if m.startswith(("visiontales.", "pycocoevalcap", "gradio")))
print(json.dumps({"loaded": loaded, "story": story, "rows": len(history)}))
"""


@pytest.mark.slow  # a fresh interpreter that trains
def test_the_core_trains_and_generates_without_the_upper_layers(tmp_path):
    out = subprocess.run([sys.executable, "-c", CORE_RUN], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(result["story"], str) and result["rows"] >= 1
    assert "visiontales.training.trainer" in result["loaded"]  # the run did load the core
    upper = [m for m in result["loaded"] if m.startswith(UPPER + ("pycocoevalcap", "gradio"))]
    assert not upper
