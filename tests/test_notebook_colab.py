"""The committed quickstart notebook reads on GitHub (it keeps its outputs) and runs as is in
Colab (its first cell installs the package when it is missing). tests/test_notebook.py executes
it; these check what an executed copy there cannot: the committed file and the install branch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def code_cells():
    return [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def run_install_cell(found: bool) -> list[tuple[str, str]]:
    """Run the first cell as IPython would (its ``%pip`` becomes a magic call), with
    visiontales found or not; returns the magics it ran."""
    source = TransformerManager().transform_cell(code_cells()[0].source)
    magics = []

    class Shell:
        def run_line_magic(self, name, line, *args):
            magics.append((name, line))

    def find_spec(name, *args):
        return object() if (found or name != "visiontales") else None

    real = importlib.util.find_spec
    importlib.util.find_spec = find_spec          # the cell imports importlib.util itself
    try:
        exec(compile(source, "install cell", "exec"), {"get_ipython": Shell})
    finally:
        importlib.util.find_spec = real
    return magics


def test_the_first_cell_installs_visiontales_only_when_it_is_missing():
    assert run_install_cell(found=False) == [("pip", 'install -q "visiontales[eval]"')]
    assert run_install_cell(found=True) == []


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
