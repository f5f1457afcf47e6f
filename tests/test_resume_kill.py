"""Kill training with SIGKILL mid-epoch, resume from the latest checkpoint: the resumed run
starts at that checkpoint's step (a run that started over would end with the same weights),
and the final weights are bit-identical to an uninterrupted run with the same seed (CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # three training processes, one killed

SCRIPT = """
import json, sys
import visiontales as vt
out, resume = sys.argv[1], sys.argv[2] == "resume"
data = vt.sample_dataset("train").select(range(24))
model = vt.StoryModel.tiny(vocab_from=data)
config = vt.TrainingConfig(lr=2e-3, batch_size=4, epochs=8, seed=3, save_steps=2, log_every=3,
                           save_every=0, progress=False, num_samples=0, output_dir=out)


class Steps(vt.TrainerCallback):  # prints where training began and its first step: JSON, one line each
    def on_train_begin(self, trainer, state):
        print(json.dumps({"began_at": state.step, "epoch": state.epoch, "batch": state.batch}), flush=True)
        self.first = True

    def on_step_end(self, trainer, state):
        if self.first:
            print(json.dumps({"first_step": state.step}), flush=True)
            self.first = False


vt.Trainer(model, data, config=config, callbacks=[Steps()]).train(resume_from="latest" if resume else None)
"""


def _start(script, out, mode):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(run):
    final = Path(run) / "final"
    return {**load_file(str(final / "mapper.safetensors")), **load_file(str(final / "lm" / "model.safetensors"))}


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    straight = _start(script, tmp_path / "straight", "fresh")
    killed = _start(script, tmp_path / "killed", "fresh")
    pointer = tmp_path / "killed" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None:   # wait for a mid-epoch checkpoint
        if pointer.exists():
            step = int(json.loads(pointer.read_text())["checkpoint"].split("step")[1])
            if step >= 10 and step % 6:                       # 6 steps per epoch: inside epoch 2+
                break
        time.sleep(0.05)
    assert killed.poll() is None, "training finished before it could be killed: " + killed.stderr.read()[-500:]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "final").exists()
    latest = int(json.loads(pointer.read_text())["checkpoint"].split("step")[1])  # the last one written
    resumed = _start(script, tmp_path / "killed", "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    began, first = [json.loads(line) for line in resumed.stdout.read().splitlines() if line.startswith("{")][:2]
    assert 10 <= latest < 48 and began["began_at"] == latest and first["first_step"] == latest + 1
    assert began["epoch"] * 6 + began["batch"] == latest                     # 6 steps per epoch
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, f"weights differ after resume: {different[:5]}"
    kept = sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-step*"))
    assert len(kept) <= 2                                     # old checkpoints are pruned
