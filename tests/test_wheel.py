"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel that pass
``twine check --strict``, and the wheel, installed (not editable) into a fresh environment,
runs the offline demo from a folder that is not the repository. A package-data file the
wheel forgot (the sample photos, the tiny recipe) shows here and nowhere else."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*command, cwd, env=None):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_the_demo_elsewhere(tmp_path):
    dist = tmp_path / "dist"
    # the sdist first, then the wheel from the unpacked sdist (build's default), so both are
    # checked; no build isolation: setuptools and wheel come from the test extra, offline
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO), cwd=tmp_path)
    wheel, = dist.glob("visiontales-*.whl")
    sdist, = dist.glob("visiontales-*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist), cwd=tmp_path)

    # a fresh environment with only the wheel installed; its dependencies (torch, open_clip,
    # transformers) are borrowed from this one through a .pth path entry, which does not
    # activate this environment's editable visiontales (a .pth inside a path entry is not read)
    fresh = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", str(fresh), cwd=tmp_path)
    python = fresh / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
        str(wheel), cwd=tmp_path)
    purelib = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       cwd=tmp_path).strip())
    (purelib / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # the install text's promise: once installed, "visiontales[eval]" adds the extra without
    # looking for visiontales on an index (here every dependency is already there)
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "visiontales[eval]",
        cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{fresh / 'bin'}{os.pathsep}{env['PATH']}")
    where = run(str(python), "-c", "import visiontales; print(visiontales.__file__, visiontales.__version__)",
                cwd=elsewhere, env=env)
    assert where.startswith(str(purelib / "visiontales")), where

    out = run(str(fresh / "bin" / "visiontales"), "demo", "--tiny", "--epochs", "2", "--show", "1",
              cwd=elsewhere, env=env)
    assert "sample data: " in out and "object accuracy: " in out and "generated: " in out
    assert (elsewhere / "runs" / "demo" / "final" / "mapper.safetensors").is_file()
