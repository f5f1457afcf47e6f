"""``visiontales generate``: stories from a saved model (a folder or a Hub repo id) or from a
vision model behind an OpenAI-compatible server (``--endpoint``), for photos on the command
line, a folder, or every sequence of a stories file or a VIST split (written as a prediction
file for ``evaluate``, keyed alike whichever told the stories)."""
from __future__ import annotations

import json
from pathlib import Path


def _image_sequences(args) -> list[list[str]]:
    if args.folder:
        from visiontales.data.images import IMAGE_EXTENSIONS
        folder = Path(args.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        images = sorted(str(p) for p in folder.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS if p.suffix)
        if not images:
            raise ValueError(f"{folder}: no images (.jpg, .jpeg, .png, .gif, .bmp) found")
        n = args.seq_len or 3
        return [images[i:i + n] for i in range(0, len(images) - n + 1, n)] or [images]
    if not args.images:
        raise ValueError("give image paths (one sequence), --folder DIR, --stories FILE, --annotations or --split")
    return [args.images]


def _prompt_from(args) -> dict:
    """``{"prompt": ...}`` from ``--task``/``--context``/``--prompt`` (empty: the model's own)."""
    from visiontales.recipes.instructions import INSTRUCTIONS, instruction_prompt
    if args.task and args.prompt is not None:
        raise ValueError("give --task or --prompt, not both")
    needs_context = bool(args.task) and "{context}" in INSTRUCTIONS[args.task]
    if needs_context and not args.context.strip():
        raise ValueError(f"--task {args.task} needs --context (the text it works from)")
    if args.context and not needs_context:
        raise ValueError("--context goes with --task continuation or --task fill_in only")
    if args.task:
        return {"prompt": instruction_prompt(args.task, args.context)}
    return {} if args.prompt is None else {"prompt": args.prompt}


def _storyteller(args):
    """The ``--endpoint`` storyteller, refusing the flags that only a saved model reads."""
    from visiontales.evaluation.storytellers import STORY_PROMPT, EndpointStoryteller
    if args.model:
        raise ValueError("give --model (a saved model) or --endpoint (a served vision model), not both")
    if not args.endpoint_model:
        raise ValueError("--endpoint needs --endpoint-model NAME (the model the server serves)")
    model_only = {"--task": args.task, "--prompt (use --endpoint-prompt)": args.prompt is not None,
                  "--num-beams": args.num_beams != 1, "--sample": args.sample,
                  "--revision": args.revision}
    used = [flag for flag, given in model_only.items() if given]
    if used:
        raise ValueError(f"{', '.join(used)} {'is' if len(used) == 1 else 'are'} for a saved --model")
    return EndpointStoryteller(args.endpoint, args.endpoint_model,
                               prompt=args.endpoint_prompt or STORY_PROMPT,
                               api_key_env=args.endpoint_api_key_env, timeout=args.endpoint_timeout,
                               max_concurrency=args.max_concurrency, cache_dir=args.endpoint_cache)


def cmd_generate(args) -> int:
    if args.readable and (args.annotations or args.split or args.stories):
        raise ValueError("--readable is for printed stories; a prediction file keeps VIST's "
                         "placeholders, since references and scores use them")
    if args.endpoint:
        return _tell(args, _storyteller(args), {})
    if not args.model:
        raise ValueError("give --model (a saved model folder or Hub repo id) or --endpoint URL "
                         "(a vision model behind an OpenAI-compatible server)")
    decoding = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.sample,
                    top_p=args.top_p, temperature=args.temperature, seed=args.seed,
                    precision=args.precision, **_prompt_from(args))
    from_dataset = args.annotations or args.split or args.stories
    if args.task == "caption" and from_dataset:
        raise ValueError("--task caption captions single photos; a prediction file holds one story "
                         "per photo sequence")
    from visiontales.model.story_model import StoryModel
    return _tell(args, StoryModel.from_pretrained(args.model, revision=args.revision), decoding)


def _tell(args, model, decoding: dict) -> int:
    """Stories from ``model`` (a StoryModel or a storyteller), printed or as a prediction file."""
    if args.annotations or args.split or args.stories:
        return _generate_for_dataset(args, model, decoding)
    sequences = _image_sequences(args)
    if args.task == "caption":  # a caption is of one photo: every image on its own
        sequences = [[image] for seq in sequences for image in seq]
    stories = model.generate(sequences, **decoding)
    if args.readable:  # for reading only: prediction files (--out) keep the placeholders
        from visiontales.data.text import readable
        stories = [readable(story) for story in stories]
    for seq, story in zip(sequences, stories):
        if args.json:
            print(json.dumps({"images": seq, "story": story}))
        else:
            print(" | ".join(Path(p).name for p in seq))
            print(f"  {story}\n")
    return 0


def _generate_for_dataset(args, model, decoding) -> int:
    """Stories for every evaluation key of a VIST split or a stories file, written as a
    prediction file."""
    from visiontales.data.vist import load_vist
    from visiontales.data.sample import sample_dataset
    from visiontales.evaluation.predictions import predict, write_predictions
    from visiontales.data.stories import load_stories
    if sum(map(bool, (args.annotations, args.split, args.stories))) > 1:
        raise ValueError("give one of --stories, --annotations and --split")
    if args.stories:
        dataset = load_stories(args.stories, seq_len=args.seq_len)
    elif args.annotations:
        if not args.images_dir:
            raise ValueError("--annotations needs --images-dir (the folder of that split's photos)")
        dataset = load_vist(args.annotations, args.images_dir, seq_len=args.seq_len or 3)
    else:
        dataset = sample_dataset(args.split, seq_len=args.seq_len or 3)
    predictions = predict(model, dataset, by=args.by, **decoding)
    out = args.out or "predictions.jsonl"
    write_predictions(out, predictions, dataset, by=args.by)
    print(f"wrote {len(predictions)} stories to {out}")
    return 0


def add_commands(sub) -> None:
    from visiontales.recipes.instructions import TASKS
    p = sub.add_parser("generate", help="tell stories for image sequences with a saved model or a "
                                        "served vision model")
    p.add_argument("--model",
                   help="folder written by save_pretrained / train, or a Hub repo id (user/repo)")
    p.add_argument("--revision", help="branch, tag or commit of a Hub --model (default: main)")
    p.add_argument("images", nargs="*", help="image paths of one sequence, in order")
    p.add_argument("--folder", help="a folder of photos, cut in order into --seq-len sequences")
    p.add_argument("--seq-len", type=int, default=None,
                   help="images per sequence (default: 3; whole sequences for --stories)")
    p.add_argument("--max-new-tokens", type=int, default=60, help="story length cap in tokens")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    p.add_argument("--sample", action="store_true", help="nucleus sampling instead of greedy/beam")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus mass with --sample")
    p.add_argument("--temperature", type=float, default=1.0, help="temperature with --sample")
    p.add_argument("--seed", type=int, default=None, help="seed for --sample")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="fp32",
                   help="'auto': bf16 where the hardware computes it natively, about 2x faster "
                        "there (stories may differ from fp32's in a word or two)")
    p.add_argument("--task", choices=TASKS,
                   help="ask a model trained with --tasks for this task (its instruction as prompt)")
    p.add_argument("--context", default="", help="the story so far (continuation) or the masked "
                                                 "story (fill_in) for --task")
    p.add_argument("--prompt", help="a free prompt text instead of the model's ('' for none)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--readable", action="store_true",
                   help="write VIST's [male], [female], [location]... as names and places (one name "
                        "per placeholder within a story), for reading")
    p.add_argument("--annotations", help="a VIST SIS json: tell a story for each of its photo sequences")
    p.add_argument("--images-dir", help="image folder for --annotations")
    p.add_argument("--split", choices=["train", "val"], help="the shipped sample split instead")
    p.add_argument("--stories", metavar="FILE", help="your own sequences (JSON lines or CSV, as train "
                                                     "--stories takes): a story for each")
    p.add_argument("--by", choices=["sequence", "album"], default="sequence",
                   help="one story per photo sequence (default) or per album (AREL)")
    p.add_argument("--out", help="prediction file (JSON lines) for --stories/--annotations/--split "
                                 "(default: predictions.jsonl)")
    _add_endpoint_args(p)
    p.set_defaults(func=cmd_generate)


def _add_endpoint_args(p) -> None:
    e = p.add_argument_group("a vision model behind an OpenAI-compatible server, instead of --model")
    e.add_argument("--endpoint", metavar="URL",
                   help="the server's base URL, e.g. http://127.0.0.1:11434/v1 (Ollama) or "
                        "http://127.0.0.1:8000/v1 (vLLM): one request per photo sequence, the "
                        "photos as image_url data URLs in order")
    e.add_argument("--endpoint-model", metavar="NAME", help="the model it serves, e.g. llava:7b")
    e.add_argument("--endpoint-prompt", metavar="TEXT",
                   help="the instruction sent with the photos ({n}: their number; default: "
                        "one or two sentences per photo, plain prose)")
    e.add_argument("--endpoint-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="env var holding the API key, when the server needs one")
    e.add_argument("--endpoint-timeout", type=float, default=120,
                   help="seconds to wait on the server before asking again (default: 120)")
    e.add_argument("--max-concurrency", type=int, default=4, help="requests at once (default: 4)")
    e.add_argument("--endpoint-cache", default=".visiontales_endpoint_cache", metavar="DIR",
                   help="folder caching the answers, so a re-run asks nothing again")
