"""Generation throughput: a ClipCap-style loop against the library's batched generate().

Same model (full size: CLIP ViT-B/32 + GPT-2 124M, random weights, GPT-2's real tokenizer),
same image sequences (48), same number of new tokens (40, EOS ignored so both do identical
work), public API only:

  (a) ClipCap style: one sequence at a time, greedy, no KV cache (the whole prefix and
      every generated token go through GPT-2 again at each step);
  (b) library: batched (16 at a time, ``generate``'s default) with GPT-2's KV cache and
      ``precision="auto"`` (bf16 autocast where the hardware has it natively, fp32 elsewhere):
      the decoding of ``StoryModel.generate`` (``StoryModel.generate_ids``, then
      detokenising), checked once to give exactly the stories ``generate`` gives. Printed
      beside it for reference: the same at ``precision="fp32"``, what bf16 adds.

Both read the image features once, before timing, from the model's feature cache, loaded
once for the whole run. The first line says what the machine is;
the last line is ``ratio=<library / ClipCap>``.

    python benchmarks/generate_throughput.py [--tokens 40] [--device auto] [--quick]
"""
from __future__ import annotations

import json

import torch

from common import (benchmark_parser, build_model, device_of, machine, median_rate,
                    peak_memory_mb, run_isolated)

import visiontales as vt
from visiontales.model.precision import autocast, resolve_precision


MODES = ("clipcap", "library-fp32", "library")


@torch.no_grad()
def clipcap_greedy(model, features: torch.Tensor, tokens: int) -> list[int]:
    """ClipCap's generate2 in spirit: re-run the full sequence for every new token."""
    prompt = torch.tensor(model.prompt_ids(), device=features.device)
    embeds = torch.cat([model.prefix_embeddings(features[None])[0],
                        model.lm.get_input_embeddings()(prompt)])[None]
    out = []
    for _ in range(tokens):
        token = model.lm(inputs_embeds=embeds).logits[:, -1].argmax(-1)
        out.append(int(token))
        embeds = torch.cat([embeds, model.lm.get_input_embeddings()(token)[:, None]], dim=1)
    return out


def measure(mode: str, args) -> dict:
    device = device_of(args)
    model = build_model(args.quick).to(device).eval()
    frame = vt.sample_dataset("val").frame.head(args.sequences)
    sequences = [list(p) for p in frame["image_paths"]]
    n = len(sequences)
    encoder = model.image_encoder(progress=False)  # one cache, loaded once, for the whole run
    features = encoder.encode([p for s in sequences for p in s]).view(n, 3, -1).to(device)
    repeats = 1 if args.quick else 3
    if mode == "clipcap":
        state = {"i": 0}

        def step() -> int:
            clipcap_greedy(model, features[state["i"] % n], args.tokens)
            state["i"] += 1
            return 1
        rate = median_rate(step, repeats=repeats, steps=2 if args.quick else 4, warmup=1)
    else:
        prompt = torch.tensor(model.prompt_ids(), device=device)
        precision = "fp32" if mode == "library-fp32" else "auto"
        dtype = resolve_precision(precision, device)

        def stories(start: int, stop: int) -> list[str]:
            with autocast(device, dtype):
                ids = model.generate_ids(features[start:stop], prompt, args.tokens, min_new_tokens=args.tokens)
            return [" ".join(t.split()) for t in model.tokenizer.batch_decode(ids, skip_special_tokens=True)]

        # what is timed is what users get (no EOS before min_new_tokens: nothing to cut)
        expected = model.generate(sequences[:16], max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                  precision=precision, progress=False)
        if stories(0, min(16, n)) != expected:
            raise SystemExit("generate_ids + decoding no longer gives StoryModel.generate's stories")

        def step() -> int:
            for start in range(0, n, 16):
                stories(start, start + 16)
            return n
        rate = median_rate(step, repeats=repeats, steps=1, warmup=1)
    return {"mode": mode, "seq_per_s": rate, "tokens_per_s": rate * args.tokens,
            "peak_mem_mb": peak_memory_mb(device)}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--mode", choices=MODES, help="(internal) one configuration")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.sequences = min(args.tokens, 8), min(args.sequences, 8)
    if args.mode:
        print(json.dumps(measure(args.mode, args)))
        return
    print(machine(device_of(args)), flush=True)
    common = ["--device", args.device, "--tokens", str(args.tokens), "--sequences", str(args.sequences)]
    common += ["--quick"] if args.quick else []
    # each configuration in its own process for clean peak memory (--quick too: the tests run this path)
    results = {m: run_isolated(__file__, ["--mode", m, *common]) for m in MODES}
    for name, r in results.items():
        print(f"{name:12s} {r['seq_per_s']:7.2f} stories/s  {r['tokens_per_s']:8.1f} tokens/s  "
              f"peak mem {r['peak_mem_mb']:6.0f} MB")
    print(f"ratio={results['library']['seq_per_s'] / results['clipcap']['seq_per_s']:.2f}")


if __name__ == "__main__":
    main()
