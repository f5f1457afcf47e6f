"""Write notebooks/quickstart.ipynb from the cells below, executed, so that it keeps its
outputs (tables, plots, photo strips, stories) and reads on GitHub (run after changing them).

    python scripts/make_quickstart_notebook.py            # about four minutes on 2 CPU cores
    python scripts/make_quickstart_notebook.py --no-execute

It runs in a temporary folder (what the cells write, runs/ and my_photos/, stays out of the
repository); tests/test_notebook.py executes the committed notebook again.
"""
import argparse
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# visiontales quickstart\n\n"
        "Photos in, story out. This notebook runs offline on the small VIST-format sample "
        "dataset that ships with the package, with a *tiny* randomly initialised CLIP + GPT-2, "
        "so it finishes in a few minutes on a laptop CPU. Then it trains on a folder of "
        "*your own* photos. Swap in the real models with `StoryModel.from_components()` (last "
        "cells) once you have VIST and a network."),
    new_code_cell(
        "# visiontales is not on PyPI yet: install it from a clone or a built wheel first\n"
        "import importlib.util\n"
        "if importlib.util.find_spec(\"visiontales\") is None:\n"
        "    raise SystemExit(\"visiontales is not installed here: in a terminal, clone the repository and run \"\n"
        "                     \"`pip install -e \\\".[eval]\\\"` in it (or `pip install` the wheel that `python -m build` \"\n"
        "                     \"writes to dist/), then restart this kernel.\")"),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import visiontales as vt\n"
        "from visiontales.data.images import load_image\n\n"
        "train, val = vt.sample_dataset(\"train\"), vt.sample_dataset(\"val\")\n"
        "print(train)\n"
        "train.frame[[\"story_id\", \"photo_ids\", \"text\", \"vist_label\"]].head()"),
    new_markdown_cell("Each row is a window of three consecutive photos of a story and the three sentences that go with them."),
    new_code_cell(
        "def show(paths, title=\"\"):\n"
        "    fig, axes = plt.subplots(1, len(paths), figsize=(2.2 * len(paths), 2.4))\n"
        "    for ax, path in zip(axes, paths):\n"
        "        ax.imshow(load_image(path)); ax.axis(\"off\")\n"
        "    fig.suptitle(title, fontsize=9, wrap=True)\n"
        "    plt.show()\n\n"
        "row = train[0]\n"
        "show(row[\"image_paths\"], row[\"text\"])"),
    new_markdown_cell(
        "## Train\n"
        "`TrainingConfig()` holds the paper's defaults (AdamW, lr 5e-5, batch size 1, 7 epochs) for "
        "pretrained GPT-2. A tiny model trained from scratch wants a larger learning rate and batch: "
        "`TrainingConfig.tiny()` is that recipe (40 epochs; the demo and the tests use it too), about a "
        "minute on 2 CPU cores. A callback (Hugging Face's hook names) watches the run."),
    new_code_cell(
        "class EpochPrinter(vt.TrainerCallback):\n"
        "    def on_evaluate(self, trainer, state, metrics):\n"
        "        if state.epoch % 10 == 0:\n"
        "            print(f\"epoch {state.epoch}: eval loss {metrics['eval_loss']:.2f}\")\n\n"
        "model = vt.StoryModel.tiny(vocab_from=train, prefix=\"sequence\")\n"
        "config = vt.TrainingConfig.tiny(output_dir=\"runs/quickstart\", progress=False)   # the callback reports\n"
        "trainer = vt.Trainer(model, train, val, config, callbacks=[EpochPrinter()])\n"
        "history = trainer.train()\n"
        "history.tail()"),
    new_code_cell("trainer.plot_history();"),
    new_markdown_cell(
        "## Does the model use the photos?\n"
        "A falling loss alone does not say so: a language model can learn the stories' words and "
        "ignore the prefix. Two checks do. The *photo gap* is how much worse the held-out loss gets "
        "when each window's photos are shuffled across the set (the dashed curve above); the "
        "*object accuracy* is how often a held-out story names the object its photo shows, at the "
        "right photo (each sample photo shows one drawn object; chance is one in the number of objects)."),
    new_code_cell(
        "from visiontales.evaluation.object_check import object_accuracy\n\n"
        "last = history.dropna(subset=[\"eval_loss\"]).iloc[-1]\n"
        "gap = last[\"eval_loss_shuffled\"] - last[\"eval_loss\"]\n"
        "print(f\"photo gap: {gap:.2f} nats per token (eval loss {last['eval_loss']:.2f}, \"\n"
        "      f\"photos shuffled {last['eval_loss_shuffled']:.2f})\")\n"
        "scores = object_accuracy(model, val)\n"
        "print(f\"object accuracy: {scores['accuracy']:.2f} (chance {scores['chance']:.2f})\")"),
    new_markdown_cell("## Tell stories for held-out photos"),
    new_code_cell(
        "rows = val.frame.drop_duplicates(\"photo_ids\").head(3)\n"
        "stories = model.generate([list(p) for p in rows[\"image_paths\"]], num_beams=3)\n"
        "for paths, story, ref in zip(rows[\"image_paths\"], stories, rows[\"text\"]):\n"
        "    show(paths, f\"generated: {story}\\nreference: {ref}\")"),
    new_markdown_cell("## Save and load\nA saved model is a folder: JSON config, safetensors weights, and a plain transformers GPT-2 in `lm/`."),
    new_code_cell(
        "model.save_pretrained(\"runs/quickstart/mine\")\n"
        "again = vt.StoryModel.from_pretrained(\"runs/quickstart/mine\")\n"
        "assert again.generate([list(rows.iloc[0][\"image_paths\"])]) == model.generate([list(rows.iloc[0][\"image_paths\"])])\n"
        "sorted(p.name for p in __import__(\"pathlib\").Path(\"runs/quickstart/mine\").iterdir())"),
    new_markdown_cell(
        "## Your own photos\n"
        "A folder of photos and a stories file: JSON lines, one sequence per line (`{\"images\": [...], "
        "\"story\": \"...\"}`, optionally `\"sentences\"`, one per photo, and an `\"id\"`), or CSV "
        "(`images` separated by `;`, and `story`), with paths relative to the file. Here the folder is "
        "made from sample photos, and one line names a photo that is not there: `load_stories` leaves "
        "it out and says why, as `load_vist` does."),
    new_code_cell(
        "import json, shutil\n"
        "from pathlib import Path\n\n"
        "def story_lines(frame):\n"
        "    \"\"\"Copy each story's photos into my_photos/; one JSON line per story.\"\"\"\n"
        "    lines = []\n"
        "    for _, story in frame.iterrows():\n"
        "        names = [f\"my_photos/{Path(p).name}\" for p in story[\"image_paths\"]]\n"
        "        for source, name in zip(story[\"image_paths\"], names):\n"
        "            shutil.copy(source, name)\n"
        "        lines.append({\"id\": story[\"story_id\"], \"images\": names, \"sentences\": list(story[\"sentences\"])})\n"
        "    return lines\n\n"
        "Path(\"my_photos\").mkdir(exist_ok=True)\n"
        "lines = story_lines(vt.sample_dataset(\"train\", seq_len=5).frame.head(10))\n"
        "lines.append({\"id\": \"lost\", \"images\": lines[0][\"images\"][:2] + [\"my_photos/not-here.jpg\"],\n"
        "              \"story\": \"two photos and one that went missing .\"})\n"
        "Path(\"my_train.jsonl\").write_text(\"\\n\".join(json.dumps(line) for line in lines))\n"
        "test_lines = story_lines(vt.sample_dataset(\"val\", seq_len=5).frame.tail(4))\n"
        "Path(\"my_test.jsonl\").write_text(\"\\n\".join(json.dumps(line) for line in test_lines))\n\n"
        "mine = vt.load_stories(\"my_train.jsonl\", seq_len=3)   # windows of 3 photos; whole sequences without seq_len\n"
        "print(mine)\n"
        "mine.skipped"),
    new_markdown_cell(
        "Fine-tune the model saved above on them, tell a story for each held-out sequence (all five "
        "photos) and score the stories against yours. `visiontales train --stories my_train.jsonl "
        "--init runs/quickstart/mine`, `visiontales generate --stories my_test.jsonl --out preds.jsonl` "
        "and `visiontales evaluate --stories my_test.jsonl --predictions preds.jsonl` do the same "
        "from the shell."),
    new_code_cell(
        "from visiontales.evaluation.metrics import references_from_dataset\n"
        "from visiontales.evaluation.predictions import predict\n\n"
        "held_out = vt.load_stories(\"my_test.jsonl\")                        # whole sequences of five photos\n"
        "my_model = vt.StoryModel.from_pretrained(\"runs/quickstart/mine\")    # the model saved above\n"
        "config = vt.TrainingConfig.tiny(epochs=4, output_dir=\"runs/my-photos\")\n"
        "vt.Trainer(my_model, mine, config=config).train()\n"
        "stories = predict(my_model, held_out, num_beams=3)                   # {photo sequence: story}\n"
        "for paths, story in zip(held_out.frame[\"image_paths\"], stories.values()):\n"
        "    show(paths, story)\n"
        "vt.evaluate(stories, references_from_dataset(held_out), metrics=[\"BLEU\", \"ROUGE-L\"])"),
    new_markdown_cell(
        "## Watch training in TensorBoard\n"
        "`TrainingConfig(report_to=[\"tensorboard\"])` writes the loss, learning rate, eval loss, "
        "metrics, RL rewards and each epoch's sample stories under `output_dir/tensorboard` "
        "(`pip install \"visiontales[tensorboard]\"`; `\"wandb\"` sends the same to Weights & Biases):\n"
        "```python\n"
        "config = vt.TrainingConfig.tiny(epochs=4, output_dir=\"runs/my-photos\", report_to=[\"tensorboard\"])\n"
        "%load_ext tensorboard\n"
        "%tensorboard --logdir runs/my-photos/tensorboard\n"
        "```"),
    new_markdown_cell(
        "## Instruction tuning and the RL step\n"
        "The recipe of Lin & Chen, *Improving Visual Storytelling with Multimodal Large Language Models*. "
        "`build_instruction_dataset` turns windows into a mixture of instruction examples (story, "
        "caption, continuation, consistency, fill-in, emotion/context); each row's instruction sits "
        "between the image prefix and the target and carries no loss. `SelfCritical` adds the "
        "reinforcement term `L = L_NLL + rl_weight * L_RL` from `rl_start_epoch` on, here with a "
        "CIDEr-D reward; the history then logs the sampled and the greedy (baseline) reward."),
    new_code_cell(
        "from visiontales.recipes.instructions import build_instruction_dataset, instruction_prompt\n"
        "from visiontales.recipes.rl import CiderReward, SelfCritical\n\n"
        "mixture = build_instruction_dataset(train, tasks=(\"story\", \"caption\"), weights={\"story\": 2},\n"
        "                                    max_examples=120, seed=0)\n"
        "rl = SelfCritical(CiderReward(mixture), max_new_tokens=30)\n"
        "config = vt.TrainingConfig(lr=5e-4, batch_size=16, epochs=2, rl_weight=0.5, rl_start_epoch=1,\n"
        "                           output_dir=\"runs/quickstart-rl\", num_samples=0, log_every=5)\n"
        "tuner = vt.Trainer(model, mixture, val, config, rl=rl)\n"
        "tuner.train()[[\"epoch\", \"loss\", \"reward_sample\", \"reward_greedy\"]].dropna()"),
    new_code_cell("tuner.plot_history();"),
    new_markdown_cell("The same model now captions one photo when asked, and still tells stories for three:"),
    new_code_cell(
        "photos = list(rows.iloc[0][\"image_paths\"])\n"
        "print(\"caption:\", model.generate([photos[:1]], prompt=instruction_prompt(\"caption\"))[0])\n"
        "print(\"story:  \", model.generate([photos])[0])"),
    new_markdown_cell(
        "## With the real models and VIST\n"
        "```python\n"
        "train = vt.load_vist(\"sis/train.story-in-sequence.json\", \"images/train\", seq_len=3)\n"
        "model = vt.StoryModel.from_components(clip=\"ViT-B-32\", clip_pretrained=\"openai\", lm=\"gpt2\")\n"
        "trainer = vt.Trainer(model, train, config=vt.TrainingConfig())   # the paper's defaults\n"
        "history = trainer.train()\n"
        "```"),
    new_markdown_cell(
        "## Share it on the Hugging Face Hub\n"
        "```python\n"
        "model.push_to_hub(\"your-name/my-stories\", training=trainer.training_record())   # the folder + a model card; log in first\n"
        "again = vt.StoryModel.from_pretrained(\"your-name/my-stories\")   # by id, anywhere; offline from the cache\n"
        "```"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="write the cells without outputs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb")
    args = parser.parse_args()
    notebook = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    if not args.no_execute:
        from nbclient import NotebookClient
        with tempfile.TemporaryDirectory(prefix="quickstart-") as tmp:
            NotebookClient(notebook, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": tmp}}).execute()
    nbformat.write(notebook, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
