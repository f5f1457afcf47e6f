"""`pip install visiontales` with no extras: the core works, extras are named when missing.

The tests read what one fresh interpreter did, one in which the optional packages cannot be
imported (``sys.modules[name] = None`` makes ``import name`` raise ImportError), as on a
machine where they were never installed.
"""
from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def _requirements(text: str) -> set[str]:
    """Canonical distribution names of a setup.cfg requirement list."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return {canonicalize_name(Requirement(line).name) for line in lines if line}


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` and everything they require (installed ones, extras of theirs left out)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in map(Requirement, requires):
            if spec.marker is None or spec.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(spec.name))
    return seen


def extras_only_modules() -> tuple[str, ...]:
    """The importable top-level modules of every package that only an extra brings: each
    extra's requirements in setup.cfg, minus the core requirements and all they pull in."""
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    core = _with_dependencies(_requirements(cfg["options"]["install_requires"]))
    extras = set().union(*(_requirements(text) for text in cfg["options.extras_require"].values()))
    only_extras = extras - core
    return tuple(sorted(module for module, dists in metadata.packages_distributions().items()
                        if module.isidentifier() and not module.startswith("__")
                        and {canonicalize_name(d) for d in dists} & only_extras))


EXTRAS_ONLY = extras_only_modules()
BLOCK = f"import sys\nfor _m in {EXTRAS_ONLY!r}: sys.modules[_m] = None\n"
pytestmark = pytest.mark.slow  # a fresh interpreter that trains twice


def run_plain(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


# One interpreter for every check (each start imports torch and open_clip anew): what it
# imported, what the CLI and the human-rating statistics said when asked for an extra's
# work, then the core path and the demo command. A failing step records its traceback and
# the next still runs.
PLAIN_RUN = """
import contextlib, io, json, traceback
import visiontales, visiontales.app.cli, visiontales.app.page, visiontales.evaluation.metrics, visiontales.evaluation.human_rating
result = {"loaded": [m for m in EXTRAS if sys.modules.get(m) is not None], "said": {}}
for name, args in (("eval", ["evaluate", "--predictions", "missing.jsonl"]), ("demo", ["serve", "--tiny"])):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = visiontales.app.cli.main(args)
    result["said"][name] = [code, err.getvalue()]
try:
    visiontales.evaluation.human_rating._t_critical(5)
except ImportError as exc:
    result["said"]["scipy"] = [None, str(exc)]


def core_path():
    import visiontales as vt
    data = vt.sample_dataset("train").select(range(16))
    model = vt.StoryModel.tiny(vocab_from=data, prefix="sequence")
    config = vt.TrainingConfig(lr=1e-3, batch_size=8, epochs=2, progress=False, num_samples=0,
                               save_every=0, output_dir="run")
    history = vt.Trainer(model, data, data, config).train()
    photos = [list(data[0]["image_paths"])]
    story = model.generate(photos, max_new_tokens=8)[0]
    model.save_pretrained("saved")
    again = vt.StoryModel.from_pretrained("saved").generate(photos, max_new_tokens=8)[0]
    return {"losses": history["loss"].tolist(), "story": story, "again": again}


def demo():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = visiontales.app.cli.main(["demo", "--tiny", "--epochs", "1", "--show", "1", "--output-dir", "demo"])
    return {"code": code, "stdout": out.getvalue()}


for name, step in (("core", core_path), ("demo", demo)):
    try:
        result[name] = step()
    except Exception:
        result[name] = {"error": traceback.format_exc()}
print(json.dumps(result))
""".replace("EXTRAS", repr(EXTRAS_ONLY))


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory):
    out = run_plain(PLAIN_RUN, cwd=tmp_path_factory.mktemp("plain"))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_optional_package_is_blocked():
    """The block list comes from setup.cfg's extras; these are the ones the package asks for
    by name (require(...)) or the tests and notebook need, so each must be on it."""
    assert {"tensorboard", "wandb", "IPython", "ipykernel", "gradio", "gradio_client", "playwright",
            "krippendorff", "scipy", "pycocoevalcap", "whisper", "tiktoken", "mkdocs", "pytest"} <= set(EXTRAS_ONLY)
    assert not {"torch", "transformers", "open_clip", "pandas", "PIL", "matplotlib", "numpy"} & set(EXTRAS_ONLY)


def test_import_pulls_in_no_extra(without_extras):
    assert without_extras["loaded"] == []


def test_core_path_trains_generates_saves_and_loads_without_extras(without_extras):
    result = without_extras["core"]
    assert "error" not in result, result.get("error")
    assert result["losses"][-1] < result["losses"][0]
    assert result["story"] and result["story"] == result["again"]


def test_demo_cli_runs_without_extras(without_extras):
    result = without_extras["demo"]
    assert "error" not in result, result.get("error")
    assert result["code"] == 0 and result["stdout"].count("generated:") == 1


@pytest.mark.parametrize("extra", ["eval", "demo"])
def test_a_missing_extra_is_one_line_naming_it(without_extras, extra):
    code, stderr = without_extras["said"][extra]
    assert code == 2
    assert f'pip install "visiontales[{extra}]"' in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_human_rating_intervals_name_the_eval_extra(without_extras):
    assert 'pip install "visiontales[eval]"' in without_extras["said"]["scipy"][1]
