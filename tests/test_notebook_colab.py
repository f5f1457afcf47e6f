"""The committed quickstart notebook reads on GitHub (it keeps its outputs) and runs as is in
Colab (its first cell says how to install the package when it is missing). tests/test_notebook.py executes
it; these check what an executed copy there cannot: the committed file and the branch for an
environment without the package (it is not on PyPI yet, so a pip install there would fail)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def code_cells():
    return [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def run_first_cell(found: bool) -> None:
    """Run the first cell as IPython would, with visiontales found or not."""
    source = TransformerManager().transform_cell(code_cells()[0].source)

    def find_spec(name, *args):
        return object() if (found or name != "visiontales") else None

    real = importlib.util.find_spec
    importlib.util.find_spec = find_spec          # the cell imports importlib.util itself
    try:
        exec(compile(source, "first cell", "exec"), {})
    finally:
        importlib.util.find_spec = real


def test_the_first_cell_says_how_to_install_visiontales_only_when_it_is_missing():
    run_first_cell(found=True)                    # nothing happens where the package is
    with pytest.raises(SystemExit, match=r"pip install -e .*python -m build"):
        run_first_cell(found=False)
    assert "%pip" not in code_cells()[0].source   # no install from an index that has no visiontales


def test_the_committed_notebook_keeps_its_outputs():
    cells = code_cells()
    assert all(c.execution_count for c in cells), "run python scripts/make_quickstart_notebook.py"
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 7          # a sample window, two loss plots, the photo strips with their stories
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "StoryDataset(" in text and "missing image (photo my_photos/not-here.jpg)" in text
    assert "caption:" in text and "story:" in text
    assert "BLEU-4" in text and "ROUGE-L" in text
    assert "photo gap:" in text and "object accuracy:" in text
