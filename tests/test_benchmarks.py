"""The benchmarks never break silently: each runs end to end in its --quick mode.

They use only the public API, so a change that breaks them breaks this test. A quick run takes
the path the full runs (the figures in docs/performance.md) take, each configuration in its own
process; its numbers are small-model numbers, but where the library's lead does not depend on
the model's size (training: cached features and batches of 16 against CLIP at every step of
batch 1; generation: batched generate() against a token-by-token loop without a KV cache),
the quick run must show it too.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize("script, last", [("train_throughput.py", "ratio"),
                                          ("generate_throughput.py", "ratio"),
                                          ("extract_throughput.py", "img_per_s"),
                                          ("scale.py", "load_s"),
                                          ("bf16_features.py", "min_cosine"),
                                          ("backbones.py", "lora_speed_ratio"),
                                          ("cache_size.py", "kib_per_image")])
def test_benchmark_runs_quick(script, last, tmp_path):
    # one thread: a quick run's numbers mean nothing, and two OpenMP threads on a busy
    # 2-core machine wait on each other (tiny steps then run ten times slower)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VISIONTALES_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("machine: ") and re.search(r"native bf16: (True|False)\].*precision \w+ -> \w+", lines[0])
    values = dict(item.split("=") for item in lines[-1].split())
    assert list(values)[0] == last and float(values[last]) > 0, lines[-1]
    if last == "ratio":  # library / its baseline: the figure's sign holds at the quick scale too
        assert float(values["ratio"]) > 1, out.stdout
    # (extraction's lead over a plain forward is not checked: with 16 images of the tiny CLIP,
    # writing the cache costs more than the forward it saves)
    if script == "scale.py":  # 40 writes into the cache, compacted on the way to a few files
        assert int(values["cache_files"]) <= 17 and float(values["cache_mb"]) > 0
