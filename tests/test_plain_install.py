"""`pip install visiontales` with no extras: the core works, extras are named when missing.

Each test runs a fresh interpreter in which the optional packages cannot be imported
(``sys.modules[name] = None`` makes ``import name`` raise ImportError), as on a machine
where they were never installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# every package that only an extra (eval, demo, test) brings in
EXTRAS_ONLY = ("pycocoevalcap", "scipy", "gradio", "gradio_client", "playwright", "hypothesis",
               "nbclient", "nbformat", "whisper", "tiktoken", "pytest")
BLOCK = f"import sys\nfor _m in {EXTRAS_ONLY!r}: sys.modules[_m] = None\n"


def run_plain(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return run_plain("from visiontales.cli import main\nsys.exit(main(sys.argv[1:]))", *args, cwd=cwd)


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory):
    """One interpreter without the extras: what it imported, and what the CLI and the
    human-rating statistics said when asked for an extra's work."""
    cwd = tmp_path_factory.mktemp("plain")
    code = """
import contextlib, io, json
import visiontales, visiontales.cli, visiontales.demo, visiontales.metrics, visiontales.human_eval
loaded = [m for m in EXTRAS if sys.modules.get(m) is not None]
said = {}
for name, args in (("eval", ["evaluate", "--predictions", "missing.jsonl"]), ("demo", ["serve", "--tiny"])):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = visiontales.cli.main(args)
    said[name] = [code, err.getvalue()]
try:
    visiontales.human_eval._t_critical(5)
except ImportError as exc:
    said["scipy"] = [None, str(exc)]
print(json.dumps({"loaded": loaded, "said": said}))
""".replace("EXTRAS", repr(EXTRAS_ONLY))
    out = run_plain(code, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_pulls_in_no_extra(without_extras):
    assert without_extras["loaded"] == []


@pytest.mark.slow
def test_core_path_trains_generates_saves_and_loads_without_extras(tmp_path):
    code = f"""
import json, visiontales as vt
data = vt.sample_dataset("train").select(range(16))
model = vt.StoryModel.tiny(vocab_from=data, prefix="sequence")
config = vt.TrainingConfig(lr=1e-3, batch_size=8, epochs=2, progress=False, num_samples=0,
                           save_every=0, output_dir={str(tmp_path / "run")!r})
history = vt.Trainer(model, data, data, config).train()
photos = [list(data[0]["image_paths"])]
story = model.generate(photos, max_new_tokens=8)[0]
model.save_pretrained({str(tmp_path / "saved")!r})
again = vt.StoryModel.from_pretrained({str(tmp_path / "saved")!r}).generate(photos, max_new_tokens=8)[0]
print(json.dumps({{"losses": history["loss"].tolist(), "story": story, "again": again}}))
"""
    out = run_plain(code)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["losses"][-1] < result["losses"][0]
    assert result["story"] and result["story"] == result["again"]


@pytest.mark.slow
def test_demo_cli_runs_without_extras(tmp_path):
    out = cli("demo", "--tiny", "--epochs", "1", "--show", "1", "--output-dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("generated:") == 1


@pytest.mark.parametrize("extra", ["eval", "demo"])
def test_a_missing_extra_is_one_line_naming_it(without_extras, extra):
    code, stderr = without_extras["said"][extra]
    assert code == 2
    assert f'pip install "visiontales[{extra}]"' in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_human_rating_intervals_name_the_eval_extra(without_extras):
    assert 'pip install "visiontales[eval]"' in without_extras["said"]["scipy"][1]
