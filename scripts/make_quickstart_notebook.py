"""Write notebooks/quickstart.ipynb from the cells below (run after changing them).

    python scripts/make_quickstart_notebook.py
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# visiontales quickstart\n\n"
        "Photos in, story out. This notebook runs offline on the small VIST-format sample "
        "dataset that ships with the package, with a *tiny* randomly initialised CLIP + GPT-2, "
        "so it finishes in about a minute on a laptop CPU. Swap in the real models with "
        "`StoryModel.from_components()` (last cell) once you have VIST and a network."),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import visiontales as vt\n"
        "from visiontales.images import load_image\n\n"
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
        "`TrainingConfig.tiny()` is that recipe (the demo and the tests use it too); here with fewer "
        "epochs. A callback (Hugging Face's hook names) watches the run."),
    new_code_cell(
        "class EpochPrinter(vt.TrainerCallback):\n"
        "    def on_evaluate(self, trainer, state, metrics):\n"
        "        if state.epoch % 4 == 0:\n"
        "            print(f\"epoch {state.epoch}: eval loss {metrics['eval_loss']:.2f}\")\n\n"
        "model = vt.StoryModel.tiny(vocab_from=train, prefix=\"sequence\")\n"
        "config = vt.TrainingConfig.tiny(epochs=12, output_dir=\"runs/quickstart\")\n"
        "trainer = vt.Trainer(model, train, val, config, callbacks=[EpochPrinter()])\n"
        "history = trainer.train()\n"
        "history.tail()"),
    new_code_cell("trainer.plot_history();"),
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
        "## Instruction tuning and the RL step\n"
        "The recipe of Lin & Chen, *Improving Visual Storytelling with Multimodal Large Language Models*. "
        "`build_instruction_dataset` turns windows into a mixture of instruction examples (story, "
        "caption, continuation, consistency, fill-in, emotion/context); each row's instruction sits "
        "between the image prefix and the target and carries no loss. `SelfCritical` adds the "
        "reinforcement term `L = L_NLL + rl_weight * L_RL` from `rl_start_epoch` on, here with a "
        "CIDEr-D reward; the history then logs the sampled and the greedy (baseline) reward."),
    new_code_cell(
        "from visiontales.instructions import build_instruction_dataset, instruction_prompt\n"
        "from visiontales.rl import CiderReward, SelfCritical\n\n"
        "mixture = build_instruction_dataset(train, tasks=(\"story\", \"caption\"), weights={\"story\": 2},\n"
        "                                    max_examples=240, seed=0)\n"
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
]


def main() -> None:
    notebook = new_notebook(cells=CELLS, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    out = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    nbformat.write(notebook, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
