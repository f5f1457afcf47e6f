"""Training throughput: the paper's loop against the library's recommended settings.

Both train the same model (full size: CLIP ViT-B/32 + GPT-2 124M, random weights, GPT-2's
real tokenizer) on the shipped sample stories, through the public API only:

  (a) paper:   batch 1, fp32, AdamW lr 5e-5, CLIP encodes the window's three images at every
               step, logits over the whole sequence (prefix, prompt and story);
  (b) library: ``Trainer.prepare`` (CLIP once, cached features), batch 16 grouped by length
               (``visiontales.training.batching``), precision "auto" (bf16 autocast where the hardware
               has it natively), ``StoryModel.loss`` (LM head on target tokens only).

Each configuration runs in its own process (clean peak memory); throughput is the median of
several timed windows, each batch counted at its real size. The first line says what the
machine is; the last line is ``ratio=<library / paper>``.

``--variants`` times the library's loop for other prefixes and image-tower settings instead,
each against the first: ``sequence``, ``patches`` (patch tokens and learned queries) and
``sequence+clip1`` (``train_clip_blocks=1``: the tower's last block runs and trains in the loop);
the last line is then ``ratio_<variant>=<variant / first>`` for each.

    python benchmarks/train_throughput.py [--batch-size 16] [--device auto] [--quick]
    python benchmarks/train_throughput.py --variants sequence patches sequence+clip1
"""
from __future__ import annotations

import json
import tempfile

import torch

from common import (benchmark_parser, build_model, count_flops, device_of, machine,
                    matmul_peak_flops, median_rate, peak_memory_mb, run_isolated)

import visiontales as vt
from visiontales.training.batching import collate_batch
from visiontales.data.images import load_image
from visiontales.model.precision import autocast, resolve_precision
from visiontales.model.tokens import collate, encode_targets


def paper_step_fn(model, data, device):
    """One step of the paper's loop per call: CLIP inside, batch 1, fp32, full logits."""
    rows = [data[i] for i in range(min(24, len(data)))]
    pixels = [torch.stack([model.preprocess(load_image(p)) for p in r["image_paths"]]).to(device)
              for r in rows]
    examples = encode_targets(model.tokenizer, model.prompt_ids(), [r["text"] for r in rows])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    state = {"i": 0}

    def step() -> int:
        i = state["i"] % len(rows)
        state["i"] += 1
        with torch.no_grad():
            feats = torch.nn.functional.normalize(model.clip.encode_image(pixels[i]).float(), dim=-1)
        batch = {k: v.to(device) for k, v in collate([examples[i]], model.tokenizer.eos_token_id).items()}
        model(features=feats[None], **batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return 1
    return step


def library_step_fn(model, data, device, batch_size, clip_blocks=0):
    """One optimiser step of the Trainer's loop per call, with the recommended settings."""
    config = vt.TrainingConfig(batch_size=batch_size, precision="auto", group_by_length=True,
                               progress=False, device=str(device), output_dir=tempfile.mkdtemp(),
                               train_clip_blocks=clip_blocks)
    trainer = vt.Trainer(model, data, config=config)
    prepared = trainer.prepare(data)   # CLIP runs here, once, outside the timed steps
    model.fit_feature_stats(torch.cat(prepared.features))
    optimizer = trainer.create_optimizer()
    batches = prepared.batches(batch_size, shuffle=True, group_by_length=True)
    dtype = resolve_precision("auto", device)
    params = [p for p in model.parameters() if p.requires_grad]
    state = {"i": 0}

    def step() -> int:
        idx = batches[state["i"] % len(batches)]
        state["i"] += 1
        batch = collate_batch(prepared, idx, model.tokenizer.eos_token_id, device)
        with autocast(device, dtype):
            loss = model.loss(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(idx)  # the last short batch counts at its real size
    return step


def measure(mode: str, args) -> dict:
    device = device_of(args)
    prefix, _, clip_blocks = (mode if mode != "library" else "mean").partition("+clip")
    model = build_model(args.quick, prefix=prefix if mode != "paper" else "mean").to(device).train()
    data = vt.sample_dataset("train")
    if args.quick:  # 40 windows: batches of 16, 16 and a short 8
        data = data.select(range(40))
    repeats, steps = (1, 2) if args.quick else (5, 4 if mode == "paper" else 2)
    if mode == "paper":
        step, dtype = paper_step_fn(model, data, device), None
    else:
        step = library_step_fn(model, data, device, args.batch_size, int(clip_blocks or 0))
        dtype = resolve_precision("auto", device)
    rate = median_rate(step, repeats, steps, warmup=1 if args.quick else 2)
    per_call = {"n": 0}
    flops = count_flops(lambda: per_call.__setitem__("n", step())) / per_call["n"]  # per sequence
    peak = matmul_peak_flops(device, dtype or torch.float32, n=256 if args.quick else 2048)
    return {"mode": mode, "seq_per_s": rate, "peak_mem_mb": peak_memory_mb(device),
            "flop_per_seq": flops, "achieved_flops": flops * rate, "matmul_peak_flops": peak,
            "dtype": str(dtype or torch.float32).split(".")[-1]}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mode", help="(internal) one configuration: paper, library or a variant")
    parser.add_argument("--variants", nargs="+", metavar="PREFIX[+clipK]",
                        help="time the library loop for these prefixes (+clipK: train_clip_blocks=K)")
    args = parser.parse_args()
    if args.mode:  # child process: one configuration, one JSON line
        print(json.dumps(measure(args.mode, args)))
        return
    print(machine(device_of(args)), flush=True)
    common = ["--device", args.device, "--batch-size", str(args.batch_size)] + (["--quick"] if args.quick else [])
    # each configuration in its own process for clean peak memory (--quick too: the tests run this path)
    modes = args.variants or ["paper", "library"]
    results = {m: run_isolated(__file__, ["--mode", m, *common]) for m in modes}
    for name, r in results.items():
        print(f"{name:14s} {r['seq_per_s']:7.2f} seq/s  peak mem {r['peak_mem_mb']:7.0f} MB  "
              f"{r['achieved_flops'] / 1e9:7.1f} GFLOP/s = {100 * r['achieved_flops'] / r['matmul_peak_flops']:.0f}% "
              f"of the measured {r['dtype']} matmul peak ({r['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)")
    if args.variants:
        first = results[modes[0]]["seq_per_s"]
        print(" ".join(f"ratio_{m}={results[m]['seq_per_s'] / first:.2f}" for m in modes[1:]))
    else:
        print(f"ratio={results['library']['seq_per_s'] / results['paper']['seq_per_s']:.2f}")


if __name__ == "__main__":
    main()
