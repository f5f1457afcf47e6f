"""TensorBoard (and W&B) logging: ``TrainingConfig(report_to=[...])`` writes the history's
numbers and the sample stories; the event files are read back with TensorBoard's own reader."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from types import SimpleNamespace

import pytest

import visiontales as vt
from visiontales.training.callbacks import ReportCallback, SampleCallback
from visiontales.training.checkpoint import TrainState
from visiontales.training.loggers import TENSORBOARD_DIR, check_available

NAN = float("nan")


def read_events(logdir):
    """``({scalar tag: [(step, value)]}, {text tag: [(step, text)]})`` as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    texts = {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]
             for tag in events.Tags()["tensors"]}
    return scalars, texts


@pytest.fixture
def tensorboard(require):
    require(__import__("importlib").util.find_spec("tensorboard"),
            'TensorBoard logging tests need tensorboard: pip install "visiontales[tensorboard]"')


def test_report_to_is_a_tuple_of_known_backends_from_the_api_and_the_cli():
    assert vt.TrainingConfig().report_to == ()
    assert vt.TrainingConfig(report_to="tensorboard").report_to == ("tensorboard",)
    assert vt.TrainingConfig(report_to=["TensorBoard", "wandb", "tensorboard"]).report_to == ("tensorboard", "wandb")
    assert vt.TrainingConfig(report_to=["none"]).report_to == ()
    with pytest.raises(ValueError, match="unknown backend 'mlflow'; choose from tensorboard, wandb"):
        vt.TrainingConfig(report_to=["mlflow"])
    from visiontales.app.cli import build_parser
    from visiontales.app.cli.args import training_values
    for argv, expected in ((["--report-to", "tensorboard", "wandb"], ("tensorboard", "wandb")),
                           (["--report-to", "none"], ()), ([], ())):
        args = build_parser().parse_args(["train", *argv])
        assert vt.TrainingConfig(**training_values(args)).report_to == expected
    # a checkpoint stores the config as JSON and reads it back unchanged
    config = vt.TrainingConfig(report_to=["tensorboard"])
    assert vt.TrainingConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config


def _stand_in(config, sampler):
    """What the callback reads of a Trainer: its rank, config and callbacks."""
    return SimpleNamespace(rank=0, config=config, callbacks=[sampler])


def test_each_number_of_the_history_is_written_once_at_its_step(tmp_path, tensorboard):
    config = vt.TrainingConfig(report_to=["tensorboard"], output_dir=str(tmp_path), eval_metrics=("CIDEr",))
    sampler, report, state = SampleCallback(), ReportCallback(), TrainState()
    trainer = _stand_in(config, sampler)
    report.on_train_begin(trainer, state)
    state.history.append({"step": 5, "epoch": 1, "loss": 2.0, "lr": 1e-3, "eval_loss": NAN})
    report.on_step_end(trainer, state)
    report.on_step_end(trainer, state)                   # nothing new: nothing written twice
    state.history.append({"step": 10, "epoch": 1, "loss": 1.5, "lr": 5e-4, "eval_loss": NAN,
                          "reward_sample": 0.25})
    report.on_step_end(trainer, state)
    # the epoch's end: evaluation fills the last row, the sampler keeps its stories
    state.history[-1].update(eval_loss=1.75, eval_loss_shuffled=2.5, CIDEr=12.0)
    sampler.samples, sampler.epoch, state.epoch, state.step = (
        [{"photos": "1 2 3", "generated": "a dog | ran .", "reference": "the dog ran ."}], 1, 1, 10)
    report.on_epoch_end(trainer, state)
    report.on_train_end(trainer, state)

    scalars, texts = read_events(tmp_path / TENSORBOARD_DIR)
    assert scalars["train/loss"] == [(5, 2.0), (10, 1.5)]
    assert scalars["train/lr"] == [(5, pytest.approx(1e-3)), (10, pytest.approx(5e-4))]
    assert scalars["eval/loss"] == [(10, 1.75)] and scalars["eval/loss_shuffled"] == [(10, 2.5)]
    assert scalars["eval/CIDEr"] == [(10, 12.0)] and scalars["rl/reward_sample"] == [(10, 0.25)]
    assert set(scalars) == {"train/loss", "train/lr", "train/epoch", "eval/loss", "eval/loss_shuffled",
                            "eval/CIDEr", "rl/reward_sample"}
    [(step, table)] = texts["samples/text_summary"]
    assert step == 10 and "| 1 2 3 | a dog \\| ran . | the dog ran . |" in table
    assert '"report_to": [\n  "tensorboard"\n ]' in texts["config/text_summary"][0][1]


def test_a_resumed_run_hides_what_the_interrupted_one_wrote_after_its_checkpoint(tmp_path, tensorboard):
    config = vt.TrainingConfig(report_to=["tensorboard"], output_dir=str(tmp_path))
    rows = [{"step": s, "epoch": 1, "loss": 10.0 - s} for s in (2, 4, 6)]
    first, state = ReportCallback(), TrainState()
    trainer = _stand_in(config, SampleCallback())
    first.on_train_begin(trainer, state)
    for row in rows:
        state.history.append(dict(row))
        first.on_step_end(trainer, state)
    first.on_train_end(trainer, state)   # killed after step 6; its checkpoint was at step 4

    resumed, state = ReportCallback(), TrainState(step=4, history=[dict(r) for r in rows[:2]])
    resumed.on_train_begin(trainer, state)
    state.history.append({"step": 6, "epoch": 1, "loss": 3.5})
    resumed.on_step_end(trainer, state)
    resumed.on_train_end(trainer, state)
    scalars, _ = read_events(tmp_path / TENSORBOARD_DIR)
    assert scalars["train/loss"] == [(2, 8.0), (4, 6.0), (6, 3.5)]   # step 6 of the lost run is gone


def test_a_missing_extra_is_one_line_before_any_work(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)    # as if not installed
    with pytest.raises(ImportError, match=r'the TensorBoard logs need tensorboard, which is not installed: '
                                          r'pip install "visiontales\[tensorboard\]"'):
        check_available(["tensorboard"])
    out = cli("train", "--tiny", "--report-to", "tensorboard", "--output-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "visiontales[tensorboard]" in out.stderr
    assert out.stdout == "" and not (tmp_path / "run").exists()   # stopped before loading data
    data = vt.sample_dataset("train").select(range(2))
    with pytest.raises(ImportError, match="visiontales\\[tensorboard\\]"):  # the library: at Trainer(...)
        vt.Trainer(vt.StoryModel.tiny(vocab_from=data), data,
                   config=vt.TrainingConfig(report_to=["tensorboard"], output_dir=str(tmp_path / "lib")))


@pytest.mark.slow
def test_a_trainer_run_with_report_to_tensorboard_leaves_the_loss_and_the_samples(tmp_path, tensorboard):
    data = vt.sample_dataset("train").select(range(8))
    val = vt.sample_dataset("val").select(range(2))
    config = vt.TrainingConfig.tiny(epochs=2, batch_size=4, log_every=1, num_samples=1, sample_max_new_tokens=6,
                                    progress=False, output_dir=str(tmp_path / "run"), report_to=["tensorboard"])
    trainer = vt.Trainer(vt.StoryModel.tiny(vocab_from=data), data, val, config)
    history = trainer.train()

    scalars, texts = read_events(tmp_path / "run" / TENSORBOARD_DIR)
    assert [s for s, _ in scalars["train/loss"]] == history["step"].tolist() == [1, 2, 3, 4]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(history["loss"].tolist(), rel=1e-6)
    evaluated = history.dropna(subset=["eval_loss"])
    assert scalars["eval/loss"] == [(s, pytest.approx(v, rel=1e-6))
                                    for s, v in zip(evaluated["step"], evaluated["eval_loss"])]
    assert [s for s, _ in texts["samples/text_summary"]] == [2, 4]      # one table per epoch
    last_story = next(cb for cb in trainer.callbacks if isinstance(cb, SampleCallback)).samples[0]["generated"]
    assert last_story.replace("|", "\\|") in texts["samples/text_summary"][-1][1]
    assert all(math.isfinite(v) for _, v in scalars["train/lr"])


@pytest.mark.slow
def test_report_to_wandb_logs_the_same_offline(tmp_path, monkeypatch, require):
    """Weights & Biases, offline (WANDB_MODE=offline writes the run under output_dir/wandb,
    nothing is sent). wandb is in the [test] extra: CI runs this, never skips it."""
    require(__import__("importlib").util.find_spec("wandb"),
            'W&B logging tests need wandb: pip install "visiontales[wandb]"')
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = vt.TrainingConfig(report_to=["wandb"], output_dir=str(tmp_path))
    sampler, report, state = SampleCallback(), ReportCallback(), TrainState()
    trainer = _stand_in(config, sampler)
    report.on_train_begin(trainer, state)
    run = report.writers[0].run
    assert run.config["report_to"] == ["wandb"] and run.config["output_dir"] == str(tmp_path)
    state.history.append({"step": 5, "epoch": 1, "loss": 2.0, "lr": 1e-3, "eval_loss": NAN})
    report.on_step_end(trainer, state)
    state.history[-1].update(eval_loss=1.5)
    sampler.samples, sampler.epoch, state.epoch, state.step = (
        [{"photos": "1 2 3", "generated": "a dog ran .", "reference": "the dog ran ."}], 1, 1, 5)
    report.on_epoch_end(trainer, state)
    state.history.append({"step": 10, "epoch": 2, "loss": 1.0, "lr": 1e-3})
    report.on_step_end(trainer, state)       # step 10 begins a new W&B row: step 5's is complete
    summary = dict(run.summary)
    assert (summary["_step"], summary["train/loss"], summary["eval/loss"]) == (5, 2.0, 1.5)
    report.on_train_end(trainer, state)
    [table] = (tmp_path / "wandb").glob("offline-run-*/files/media/table/samples_5_*.table.json")
    assert json.loads(table.read_text())["data"] == [["1 2 3", "a dog ran .", "the dog ran ."]]
