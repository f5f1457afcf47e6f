"""The quickstart notebook and the README quickstart run as written."""
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5          # sample window, loss plot, three stories beside their photos
    assert (tmp_path / "runs" / "quickstart" / "mine" / "mapper.safetensors").is_file()


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its quickstart block"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README quickstart", "exec"), {})
    assert (tmp_path / "runs" / "readme" / "final").is_dir()
