"""Generation throughput: a ClipCap-style loop against the library's batched generate().

Same full-size model (CLIP ViT-B/32 + GPT-2 124M, random weights), same 48 image
sequences, same number of new tokens (40, EOS ignored so both do identical work):

  (a) ClipCap style: one sequence at a time, greedy, no KV cache (the whole prefix and
      every generated token go through GPT-2 again at each step);
  (b) library: ``StoryModel.generate`` batched (16 at a time) with the KV cache.

Image features are cached before timing in both cases. The last line is ``ratio=<x>``.

    python benchmarks/generate_throughput.py [--tokens 40] [--device auto]
"""
from __future__ import annotations

import argparse
import json

import torch

from common import full_size_model, machine, median_rate, peak_memory_mb, run_isolated

import visiontales as vt
from visiontales.utils import resolve_device


@torch.no_grad()
def clipcap_greedy(model, features: torch.Tensor, tokens: int) -> list[int]:
    """ClipCap's generate2 in spirit: re-run the full sequence for every new token."""
    prompt = torch.tensor(model.prompt_ids(), device=features.device)
    embeds = torch.cat([model.prefix_embeddings(features[None])[0],
                        model.lm.get_input_embeddings()(prompt)])[None]
    out = []
    for _ in range(tokens):
        logits = model.lm(inputs_embeds=embeds).logits[:, -1]
        token = logits.argmax(-1)
        out.append(int(token))
        embeds = torch.cat([embeds, model.lm.get_input_embeddings()(token)[:, None]], dim=1)
    return out


def measure(mode: str, device_name: str, tokens: int, n: int) -> dict:
    device = resolve_device(device_name)
    model = full_size_model().to(device).eval()
    model.progress = False
    data = vt.sample_dataset("val")
    sequences = [list(p) for p in data.frame["image_paths"].head(n)]
    features = model.encode_images([p for s in sequences for p in s]).view(n, 3, -1).to(device)
    if mode == "clipcap":
        state = {"i": 0}

        def step():
            clipcap_greedy(model, features[state["i"] % n], tokens)
            state["i"] += 1
        rate = median_rate(step, 1, repeats=3, steps=4, warmup=1)
    else:
        def step():
            model.generate(sequences, max_new_tokens=tokens, min_new_tokens=tokens, batch_size=16)
        rate = median_rate(step, n, repeats=3, steps=1, warmup=1)
    return {"mode": mode, "seq_per_s": rate, "tokens_per_s": rate * tokens,
            "peak_mem_mb": peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--mode", choices=["clipcap", "library"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.device, args.tokens, args.sequences)))
        return
    print(f"machine: {machine()}")
    common = ["--device", args.device, "--tokens", str(args.tokens), "--sequences", str(args.sequences)]
    results = {m: run_isolated(__file__, ["--mode", m, *common]) for m in ("clipcap", "library")}
    for name, r in results.items():
        print(f"{name:8s} {r['seq_per_s']:7.2f} stories/s  {r['tokens_per_s']:8.1f} tokens/s  "
              f"peak mem {r['peak_mem_mb']:6.0f} MB")
    print(f"ratio={results['library']['seq_per_s'] / results['clipcap']['seq_per_s']:.2f}")


if __name__ == "__main__":
    main()
