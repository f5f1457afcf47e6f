"""Training throughput: the paper's loop against the library's recommended settings.

Both train the same full-size model (CLIP ViT-B/32 + GPT-2 124M, random weights: the
compute of the pretrained ones) on the shipped sample stories:

  (a) paper:   batch 1, fp32, CLIP encodes the window's three images at every step,
               logits over the whole sequence (prefix, prompt and story);
  (b) library: cached CLIP features, batch 16 grouped by length, bf16 autocast where the
               hardware has it (precision="auto"), LM head only on target tokens.

Each configuration runs in its own process (clean peak memory); throughput is the median
of several timed windows. The last line is ``ratio=<library / paper>``.

    python benchmarks/train_throughput.py [--batch-size 16] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from common import (count_flops, full_size_model, machine, matmul_peak_flops, median_rate,
                    peak_memory_mb, run_isolated)

import visiontales as vt
from visiontales.precision import autocast, resolve_precision
from visiontales.tokens import collate, encode_targets
from visiontales.utils import resolve_device


def paper_step_fn(model, data, device):
    """One step of the paper's loop per call: CLIP inside, batch 1, fp32, full logits."""
    from visiontales.data import load_image
    rows = [data[i] for i in range(24)]
    pixels = [torch.stack([model.preprocess(load_image(p)) for p in r["image_paths"]]).to(device) for r in rows]
    examples = encode_targets(model.tokenizer, model.prompt_ids(), [r["text"] for r in rows])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    state = {"i": 0}

    def step():
        i = state["i"] % len(rows)
        state["i"] += 1
        with torch.no_grad():
            feats = torch.nn.functional.normalize(model.clip.encode_image(pixels[i]).float(), dim=-1)
        batch = {k: v.to(device) for k, v in collate([examples[i]], model.tokenizer.eos_token_id).items()}
        loss = model(features=feats[None], **batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step, 1, None


def library_step_fn(model, data, device, batch_size):
    """One optimiser step of the Trainer's loop per call, with the recommended settings."""
    config = vt.TrainingConfig(batch_size=batch_size, precision="auto", group_by_length=True,
                               progress=False, device=str(device))
    trainer = vt.Trainer(model, data, config=config)
    prepared = trainer._prepare(data)   # CLIP runs here, once, outside the timed steps
    model.fit_feature_stats(prepared["features"].flatten(0, 1))
    prepared["features"] = prepared["features"].to(device)
    optimizer = trainer._optimizer()
    batches = list(trainer._batches(prepared, shuffle=True, epoch=0))
    dtype = resolve_precision("auto", device)
    params = [p for p in model.parameters() if p.requires_grad]
    state = {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast(device, dtype):
            loss = model.loss(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step, batch_size, dtype


def measure(mode: str, device_name: str, batch_size: int) -> dict:
    device = resolve_device(device_name)
    model = full_size_model().to(device).train()
    model.progress = False
    data = vt.sample_dataset("train")
    if mode == "paper":
        step, per_step, dtype = paper_step_fn(model, data, device)
        rate = median_rate(step, per_step, repeats=5, steps=4)
    else:
        step, per_step, dtype = library_step_fn(model, data, device, batch_size)
        rate = median_rate(step, per_step, repeats=5, steps=2)
    flops = count_flops(step) / per_step            # per sequence, forward + backward (+ CLIP)
    peak = matmul_peak_flops(device, dtype or torch.float32)
    return {"mode": mode, "seq_per_s": rate, "peak_mem_mb": peak_memory_mb(device),
            "flop_per_seq": flops, "achieved_flops": flops * rate, "matmul_peak_flops": peak,
            "dtype": str(dtype or torch.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mode", choices=["paper", "library"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # child process: one configuration, one JSON line
        print(json.dumps(measure(args.mode, args.device, args.batch_size)))
        return
    print(f"machine: {machine()}")
    results = {m: run_isolated(__file__, ["--mode", m, "--device", args.device,
                                          "--batch-size", str(args.batch_size)])
               for m in ("paper", "library")}
    for name, r in results.items():
        print(f"{name:8s} {r['seq_per_s']:7.2f} seq/s  peak mem {r['peak_mem_mb']:7.0f} MB  "
              f"{r['achieved_flops'] / 1e9:7.1f} GFLOP/s = {100 * r['achieved_flops'] / r['matmul_peak_flops']:.0f}% "
              f"of the measured {r['dtype'].split('.')[-1]} matmul peak ({r['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)")
    print(f"ratio={results['library']['seq_per_s'] / results['paper']['seq_per_s']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
