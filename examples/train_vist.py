"""Fine-tune on the real VIST data with the paper's settings (CLIP ViT-B/32 + GPT-2).

Download VIST (https://visionandlanguage.net/VIST/) first: the SIS annotations and the
train/val image folders. Then:

    python examples/train_vist.py --sis sis/ --images images/ --out runs/vist

The first run downloads the CLIP and GPT-2 weights (about 1 GB) and encodes every image
once; later runs and every epoch read the cached features.
"""
import argparse
from pathlib import Path

import visiontales as vt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sis", required=True, help="folder with {train,val}.story-in-sequence.json")
    parser.add_argument("--images", required=True, help="folder with train/ and val/ image folders")
    parser.add_argument("--out", default="runs/vist", help="output folder")
    parser.add_argument("--prefix", choices=["mean", "sequence"], default="mean")
    parser.add_argument("--epochs", type=int, default=7)
    args = parser.parse_args()

    sis, images = Path(args.sis), Path(args.images)
    train = vt.load_vist(sis / "train.story-in-sequence.json", images / "train", seq_len=3)
    val = vt.load_vist(sis / "val.story-in-sequence.json", images / "val", seq_len=3)
    print(train, val, sep="\n")
    print(train.skipped["reason"].str.split(" \\(").str[0].value_counts().head())  # why windows were dropped

    model = vt.StoryModel.from_components(clip="ViT-B-32", clip_pretrained="openai", lm="gpt2",
                                          prefix=args.prefix)
    config = vt.TrainingConfig(epochs=args.epochs, output_dir=args.out)  # lr 5e-5, batch 1: the paper
    trainer = vt.Trainer(model, train, val, config)
    history = trainer.train()
    history.to_csv(Path(args.out) / "history.csv", index=False)
    trainer.plot_history().savefig(Path(args.out) / "history.png", dpi=120)
    print(model.generate([list(p) for p in val.frame["image_paths"].head(3)], num_beams=3))


if __name__ == "__main__":
    main()
