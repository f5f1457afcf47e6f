"""The command line: help for every flag, the offline demo, train -> generate, clean errors."""
import json
import os
import re
import subprocess
import sys

import pytest

import visiontales as vt


def run(*args, cwd=None, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "visiontales", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def _help(capsys, *args):
    from visiontales.app.cli import main
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_documents_every_command_and_flag(capsys):
    top = _help(capsys)
    for command in ("train", "generate", "demo", "evaluate", "report", "sheet"):
        assert command in top
        assert "--" in _help(capsys, command) or command == "sheet"
    train_help = _help(capsys, "train")
    for flag in ("--lr", "--batch-size", "--epochs", "--freeze-lm", "--output-dir", "--prefix", "--tiny",
                 "--eval-metrics", "--best-metric"):
        assert flag in train_help


@pytest.mark.slow
def test_help_runs_as_a_module_in_a_fresh_interpreter():
    assert run("--help").returncode == 0


def test_train_help_shows_every_config_field_with_its_help(capsys, monkeypatch):
    """The flags are generated from TrainingConfig: a new field (with its knob help) shows up
    here with no CLI edit, and a field the generator cannot type fails this test."""
    from dataclasses import fields

    from visiontales.app.cli import build_parser
    monkeypatch.setenv("COLUMNS", "1000")        # no wrapping: each help text stays on one line
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    entries = {}                                 # "--flag": its invocation and help, on one line
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line.strip()
        elif line.startswith("   ") and entries:    # a long invocation puts the help on the next line
            entries[flag] += " " + line.strip()
    for f in fields(vt.TrainingConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in entries, f"train --help has no {flag} for TrainingConfig.{f.name}"
        assert f.metadata["help"] and f"{f.metadata['help']} (default: " in entries[flag], entries[flag]


def test_training_flags_parse_to_the_config_types():
    from visiontales.app.cli import build_parser
    from visiontales.app.cli.args import training_values

    def config(*argv):
        return vt.TrainingConfig(**training_values(build_parser().parse_args(["train", *argv])))
    assert config() == vt.TrainingConfig()       # no flags: every default, each of its own type
    got = config("--batch-size", "4", "--lr", "1e-3", "--max-grad-norm", "none", "--no-eval-every-epoch",
                 "--freeze-lm", "--eval-metrics", "BLEU-4", "CIDEr", "--best-metric", "CIDEr",
                 "--cache-dir", "None", "--scheduler", "linear")
    assert got == vt.TrainingConfig(batch_size=4, lr=1e-3, max_grad_norm=None, eval_every_epoch=False,
                                    freeze_lm=True, eval_metrics=("BLEU-4", "CIDEr"), best_metric="CIDEr",
                                    cache_dir=None, scheduler="linear")
    assert config("--max-grad-norm", "0.5", "--cache-dir", "feats").max_grad_norm == 0.5
    assert config("--cache-dir", "feats").cache_dir == "feats"


def test_flag_generator_covers_each_field_type_and_names_one_it_cannot():
    import argparse
    import typing
    from dataclasses import dataclass, field

    from visiontales.app.cli import args as cli_args

    @dataclass
    class Knobs:
        ratio: typing.Optional[float] = field(default=0.5, metadata={"help": "a ratio"})
        names: typing.Tuple[str, ...] = field(default=(), metadata={"help": "names"})
        table: dict = field(default_factory=dict, metadata={"help": "no flag for this"})
    hints = typing.get_type_hints(Knobs)
    p = argparse.ArgumentParser()
    p.add_argument("--ratio", **cli_args._flag_options("ratio", hints["ratio"]))
    p.add_argument("--names", **cli_args._flag_options("names", hints["names"]))
    parsed = p.parse_args(["--ratio", "NONE", "--names", "a", "b"])
    assert (parsed.ratio, parsed.names) == (None, ["a", "b"])
    with pytest.raises(SystemExit):
        p.parse_args(["--ratio", "half"])        # argparse's own "invalid float value"
    with pytest.raises(TypeError, match="TrainingConfig.table: no command-line flag"):
        cli_args._flag_options("table", hints["table"])


@pytest.mark.slow
def test_importing_the_cli_and_building_its_parser_stay_light():
    code = ("import sys, visiontales.app.cli\nvisiontales.app.cli.build_parser()\n"
            "print([m for m in ('open_clip', 'pycocoevalcap', 'gradio') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_demo_tiny_runs_offline_and_prints_stories(tmp_path):
    out = run("demo", "--tiny", "--epochs", "1", "--show", "2", "--output-dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("generated:") == 2 and out.stdout.count("reference:") == 2
    assert "demo finished" in out.stdout
    assert re.search(r"^object accuracy: [01]\.\d\d \(chance: 0\.\d\d\), 90 held-out windows, objects "
                     r"named at the right photo$", out.stdout, flags=re.MULTILINE)   # the sequence prefix
    assert re.search(r"^photo dependence: eval loss \d+\.\d\d, with the photos shuffled \d+\.\d\d "
                     r"\(gap -?\d+\.\d\d nats per token\)$", out.stdout, flags=re.MULTILINE)
    # the saved model is the one that told the printed stories: reloaded, it tells them again
    printed = re.findall(r"^  generated: (.*)$", out.stdout, flags=re.MULTILINE)
    shown = vt.sample_dataset("val").frame.drop_duplicates("photo_ids").head(2)
    model = vt.StoryModel.from_pretrained(tmp_path / "demo" / "final")
    assert model.config.prefix == "sequence"                  # order-aware unless --prefix mean
    assert model.generate([list(p) for p in shown["image_paths"]]) == printed


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--prefix", "sequence"],
                                   ["--prefix", "patches", "--patch-grid", "2", "--train-clip-blocks", "1"]])
def test_train_then_generate_from_the_saved_model(tmp_path, flags):
    trained = run("train", "--tiny", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
                  "--num-samples", "0", *flags, "--output-dir", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "final" / "visiontales_config.json").read_text())["visiontales"]
    assert (config["prefix"], config["patch_grid"], config["clip_tuned_blocks"]) == (
        (flags[1], 2, 1) if "--patch-grid" in flags else (flags[1], 4, 0))
    assert (tmp_path / "run" / "history.csv").is_file() and (tmp_path / "run" / "history.png").is_file()
    images = list(vt.sample_dataset("val")[0]["image_paths"])
    gen = run("generate", "--model", str(tmp_path / "run" / "final"), *images, "--json",
              "--max-new-tokens", "8")
    assert gen.returncode == 0, gen.stderr[-2000:]
    record = json.loads(gen.stdout.strip().splitlines()[-1])
    assert record["images"] == images and isinstance(record["story"], str)


def test_user_errors_are_one_line_without_traceback(tmp_path, cli):
    out = cli("generate", "--model", str(tmp_path / "nothing-here"), "a.jpg")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "visiontales model folder" in out.stderr
    out = cli("train", "--tiny", "--annotations", str(tmp_path / "missing.json"), "--images", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "missing.json" in out.stderr


@pytest.mark.slow
def test_train_an_instruction_mixture_with_rl_then_caption_one_photo(tmp_path, capsys):
    trained = run("train", "--tiny", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--num-samples", "0",
                  "--prefix", "sequence", "--tasks", "story=2", "caption", "--mixture-size", "48",
                  "--rl-weight", "0.5", "--rl-start-epoch", "1", "--rl-max-new-tokens", "8",
                  "--output-dir", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "instruction mixture: 48 rows {'story': 32, 'caption': 16}" in trained.stdout
    history = __import__("pandas").read_csv(tmp_path / "run" / "history.csv")
    assert history.loc[history["epoch"] == 1, "reward_sample"].isna().all()
    assert history.loc[history["epoch"] == 2, "reward_sample"].notna().all()   # the RL step ran
    photo = vt.sample_dataset("val")[0]["image_paths"][0]
    gen = run("generate", "--model", str(tmp_path / "run" / "final"), photo, "--task", "caption",
              "--json", "--max-new-tokens", "8")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert json.loads(gen.stdout.strip().splitlines()[-1])["images"] == [photo]
    bad = run("train", "--tiny", "--tasks", "poems", "--output-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "unknown task 'poems'" in bad.stderr and "Traceback" not in bad.stderr
    from visiontales.app.cli import main
    for flags, message in ((["--rl-reward", "grounding"], "need --rl-weight > 0"),
                           (["--mixture-size", "10"], "needs --tasks")):
        assert main(["train", "--tiny", *flags, "--output-dir", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err


def test_patch_and_image_tower_flags_that_do_not_fit_are_clear_errors(tmp_path, capsys):
    from visiontales.app.cli import main
    for flags, message in ((["--prefix", "mean", "--patch-grid", "2"], "--prefix patches only"),
                           (["--train-clip-blocks", "2"], "train_clip_blocks must be between 0 and 1"),
                           (["--train-clip-blocks", "-1"], "train_clip_blocks must be >= 0")):
        assert main(["train", "--tiny", *flags, "--output-dir", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err


def test_demo_defaults_are_the_tiny_recipe_or_the_papers_and_given_flags_win():
    from visiontales.app.cli import build_parser
    from visiontales.app.cli.demo import demo_config
    from visiontales.training.config import TINY_TRAINING
    configs = [demo_config(build_parser().parse_args(["demo", *argv]))
               for argv in (["--tiny"], [], ["--lr", "1e-3"], ["--tiny", "--epochs", "3"],
                            ["--init", "m", "--batch-size", "2", "--output-dir", "x"])]
    assert configs[0] == vt.TrainingConfig.tiny(output_dir="runs/demo")
    assert [(c.lr, c.epochs) for c in configs] == [(TINY_TRAINING["lr"], TINY_TRAINING["epochs"]), (5e-5, 7),
                                                  (1e-3, 7), (TINY_TRAINING["lr"], 3), (TINY_TRAINING["lr"], TINY_TRAINING["epochs"])]
    assert {c.batch_size for c in configs[:4]} == {TINY_TRAINING["batch_size"]}   # the rest of the recipe
    assert (configs[4].batch_size, configs[4].output_dir) == (2, "x")


def test_generate_task_sets_the_instruction_and_captions_each_photo(tmp_path, monkeypatch, capsys):
    from visiontales.app.cli import main
    from visiontales.app.cli.train import parse_tasks
    from visiontales.recipes.instructions import instruction_prompt
    train = vt.sample_dataset("train").select(range(4))
    vt.StoryModel.tiny(vocab_from=train).save_pretrained(tmp_path / "m")
    calls = []

    def fake_generate(self, sequences, **kw):
        calls.append((sequences, kw.get("prompt", "<model's own>")))
        return ["a story ."] * len(sequences)
    monkeypatch.setattr(vt.StoryModel, "generate", fake_generate)
    a, b = (str(p) for p in train[0]["image_paths"][:2])
    model = ["generate", "--model", str(tmp_path / "m")]
    assert main([*model, a, b, "--task", "caption"]) == 0
    assert main([*model, a, b, "--task", "continuation", "--context", "we  went out ."]) == 0
    assert main([*model, a, b, "--prompt", ""]) == 0
    assert main([*model, a, b]) == 0
    assert calls == [([[a], [b]], instruction_prompt("caption")),
                     ([[a, b]], "Continue the story. So far: we went out . Next:"),
                     ([[a, b]], ""), ([[a, b]], "<model's own>")]
    capsys.readouterr()
    nowhere = ["generate", "--model", str(tmp_path / "absent"), a]  # flags are checked before loading
    for flags, message in ((["--task", "continuation"], "needs --context"),
                           (["--task", "caption", "--prompt", "x"], "not both"),
                           (["--task", "caption", "--context", "x"], "--context goes with"),
                           (["--task", "caption", "--split", "val"], "captions single photos")):
        assert main([*nowhere, *flags]) == 2
        assert message in capsys.readouterr().err
    for specs, message in ((["story", "story=2"], "twice"), (["story=0"], "every weight is 0"),
                           (["all", "story"], "stands alone"), (["story=x"], "must be a number")):
        with pytest.raises(ValueError, match=message):
            parse_tasks(specs)


def test_generate_readable_prints_names_and_keeps_prediction_files_scorable(tmp_path, monkeypatch, cli):
    from visiontales.data.text import readable
    train = vt.sample_dataset("train").select(range(4))
    vt.StoryModel.tiny(vocab_from=train).save_pretrained(tmp_path / "m")
    told = "[female] and [male] went to [location] . [male] laughed ."
    monkeypatch.setattr(vt.StoryModel, "generate", lambda self, sequences, **kw: [told] * len(sequences))
    photos = [str(p) for p in train[0]["image_paths"]]
    out = cli("generate", "--model", str(tmp_path / "m"), *photos, "--readable")
    assert out.returncode == 0 and readable(told) in out.stdout and "[male]" not in out.stdout
    refused = cli("generate", "--model", str(tmp_path / "m"), "--split", "val", "--readable",
                  "--out", str(tmp_path / "p.jsonl"))
    assert refused.returncode == 2 and "placeholders" in refused.stderr and not (tmp_path / "p.jsonl").exists()
