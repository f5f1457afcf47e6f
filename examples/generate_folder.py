"""Tell stories for a folder of your own photos with a saved model.

    python examples/generate_folder.py --model runs/vist/final --photos ~/Pictures/trip

Photos are taken in file-name order and cut into sequences of --seq-len images.
"""
import argparse
from pathlib import Path

import visiontales as vt
from visiontales.data.images import IMAGE_EXTENSIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder written by save_pretrained")
    parser.add_argument("--photos", required=True, help="folder of photos")
    parser.add_argument("--seq-len", type=int, default=3)
    parser.add_argument("--num-beams", type=int, default=3)
    args = parser.parse_args()

    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS[:-1])
    sequences = [photos[i:i + args.seq_len] for i in range(0, len(photos) - args.seq_len + 1, args.seq_len)]
    if not sequences:
        raise SystemExit(f"{args.photos}: need at least {args.seq_len} photos")
    model = vt.StoryModel.from_pretrained(args.model)
    for seq, story in zip(sequences, model.generate(sequences, num_beams=args.num_beams)):
        print(" | ".join(p.name for p in seq))
        print("  ", story)


if __name__ == "__main__":
    main()
