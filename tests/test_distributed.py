"""torchrun with 2 gloo processes on the CPU follows the 1-process run with the same
global batch: same loss curve, same final weights (to float-summation tolerance)."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # two torchrun processes and a single one, each training

SCRIPT = """
import sys
import visiontales as vt
from visiontales.training import distributed
out, batch_size, prefix, clip_blocks = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
data = vt.sample_dataset("train").select(range(32))
# no dropout: its masks depend on how the batch is split, the rest must not
model = vt.StoryModel.tiny(vocab_from=data, prefix=prefix, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
config = vt.TrainingConfig(lr=2e-3, batch_size=batch_size, epochs=3, seed=5, log_every=1,
                           save_every=0, progress=False, num_samples=0, output_dir=out,
                           train_clip_blocks=clip_blocks)
history = vt.Trainer(model, data, config=config).train()
if distributed.is_main():
    history.to_csv(out + "/history.csv", index=False)
    print("world", distributed.world_size())
"""


def _run(args, tmp_path, cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VISIONTALES_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# the paper's frozen tower, and the patches prefix with the tower's last block training
# (its weights are in mapper.safetensors, so they are compared too). Adam divides each step
# by the gradient's own size, so summation-order noise on near-zero gradients becomes steps
# of the learning rate's size: in the resampler's feed-forward layers a few dozen of 644k
# weights end up to 4e-4 apart (the tuned block's weights 4e-7), hence its weight bound.
@pytest.mark.parametrize("prefix, clip_blocks, weight_atol", [("mean", "0", 1e-4), ("patches", "1", 1e-3)])
def test_two_gloo_processes_match_one_process(tmp_path, prefix, clip_blocks, weight_atol):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    single = tmp_path / "single"
    double = tmp_path / "ddp"
    assert "world 1" in _run([str(script), str(single), "8", prefix, clip_blocks], tmp_path, tmp_path / "cache1")
    printed = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(double), "4", prefix, clip_blocks], tmp_path, tmp_path / "cache2")
    assert "world 2" in printed
    one = pd.read_csv(single / "history.csv")
    two = pd.read_csv(double / "history.csv")
    assert len(one) == len(two) == 12                       # 32 windows / global batch 8 x 3 epochs
    assert torch.allclose(torch.tensor(one["loss"].values), torch.tensor(two["loss"].values),
                          rtol=1e-4, atol=1e-5)
    # every weight of the saved models (mapper, feature statistics, GPT-2, CLIP with any tuned
    # block), not only the mapper's
    import visiontales as vt
    w1, w2 = (vt.StoryModel.from_pretrained(run / "final").state_dict() for run in (single, double))
    assert w1.keys() == w2.keys()
    different = [key for key in w1 if not torch.allclose(w1[key], w2[key], atol=weight_atol)]
    assert not different, different[:5]
    saved = load_file(str(single / "final" / "mapper.safetensors"))
    assert any(key.startswith("clip.") for key in saved) == (clip_blocks == "1")
    # ...and what training changed is all that it may change: the mapper and GPT-2, each tensor of them
    data = vt.sample_dataset("train").select(range(32))
    start = vt.StoryModel.tiny(vocab_from=data, prefix=prefix, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    trained = {name for name, p in start.named_parameters() if p.requires_grad}
    assert any(name.startswith("lm.") for name in trained) and any(name.startswith("mapper.") for name in trained)
    initial = start.state_dict()
    unchanged = [name for name in trained if torch.equal(initial[name], w1[name])]
    assert not unchanged, unchanged[:5]
    # the sharded extraction left one cache both ranks filled
    from visiontales.model.features import FeatureCache
    caches = [d for d in (tmp_path / "cache2").iterdir() if d.is_dir()]
    cache = FeatureCache(tmp_path / "cache2", caches[0].name)
    assert len(caches) == 1 and len(cache) == len(vt.sample_dataset("train").select(range(32)).image_paths)
    assert len(cache.shards) == 2                             # one shard written by each rank
