"""Trainer: the loss falls, features come from the cache, freezing and resume work."""

import matplotlib
import pytest
import torch

import visiontales as vt
from visiontales.model.precision import resolve_precision
from visiontales.training.batching import length_grouped_batches
from visiontales.training.checkpoint import latest_checkpoint

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def small():
    return vt.sample_dataset("train").select(range(12))


def _config(tmp_path, **kw):
    base = dict(lr=2e-3, batch_size=4, epochs=3, progress=False, num_samples=0, log_every=1,
                output_dir=str(tmp_path / "run"), seed=7)
    return vt.TrainingConfig(**{**base, **kw})


def test_paper_defaults():
    cfg = vt.TrainingConfig()
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.scheduler) == (5e-5, 1, 7, "constant")
    with pytest.raises(ValueError, match="batch_size"):
        vt.TrainingConfig(batch_size=0)


@pytest.mark.slow
def test_overfitting_a_small_set_drives_the_loss_down(small, tmp_path):
    model = vt.StoryModel.tiny(vocab_from=small)
    trainer = vt.Trainer(model, small, small, _config(tmp_path, epochs=12))
    history = trainer.train()
    assert list(history.columns) == ["step", "epoch", "loss", "lr", "eval_loss", "eval_loss_shuffled"]
    assert history["loss"].iloc[-1] < 0.4 * history["loss"].iloc[0]
    evals = history.dropna(subset=["eval_loss"])
    # each epoch's eval loss below the last (every step over 0.1 for training seeds 0-3 and 7,
    # model seeds 0 and 5), ending under 0.3 of where it began (4.9 -> 0.75 here)
    assert len(evals) == 12 and evals["eval_loss"].is_monotonic_decreasing
    assert evals["eval_loss"].iloc[-1] < 0.3 * evals["eval_loss"].iloc[0]
    fig = trainer.plot_history()
    assert len(fig.axes[0].lines) == 3     # train curve, eval points, eval with the photos shuffled
    assert (tmp_path / "run" / "final" / "visiontales_config.json").is_file()


def test_clip_runs_once_per_image_then_never(small, tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTALES_CACHE", str(tmp_path / "fresh-cache"))
    model = vt.StoryModel.tiny(vocab_from=small)
    seen = []
    model.clip.visual.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    vt.Trainer(model, small, config=_config(tmp_path, epochs=2)).train()
    assert sum(seen) == len(small.image_paths)  # every unique image once, none per epoch
    vt.Trainer(model, small, config=_config(tmp_path, epochs=1)).train()
    assert sum(seen) == len(small.image_paths)  # a second run reads the cache


def test_freeze_lm_trains_only_the_mapper(small, tmp_path):
    model = vt.StoryModel.tiny(vocab_from=small)
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    mapper_before = {k: v.clone() for k, v in model.mapper.state_dict().items()}
    vt.Trainer(model, small, config=_config(tmp_path, epochs=1, freeze_lm=True)).train()
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in lm_before.items())
    assert not all(torch.equal(v, model.mapper.state_dict()[k]) for k, v in mapper_before.items())


def test_feature_statistics_are_fitted_on_the_training_set(small, tmp_path):
    model = vt.StoryModel.tiny(vocab_from=small)
    vt.Trainer(model, small, config=_config(tmp_path, epochs=1)).train()
    feats = model.encode_images(small.image_paths)
    # statistics of the windows' images (each image weighted by how many windows hold it)
    assert bool(model.feature_stats_fitted)
    assert model.feature_std.min() > 0
    assert torch.allclose(model.feature_mean, feats.mean(0), atol=0.05)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(small, tmp_path):
    straight = vt.StoryModel.tiny(vocab_from=small)
    history = vt.Trainer(straight, small, config=_config(tmp_path / "a", epochs=2, save_every=1)).train()
    checkpoint = tmp_path / "a" / "run" / "checkpoint-step3"
    assert latest_checkpoint(tmp_path / "a" / "run") == checkpoint

    resumed = vt.StoryModel.tiny(vocab_from=small, seed=123)  # other init: the checkpoint must win
    again = vt.Trainer(resumed, small, config=_config(tmp_path / "a", epochs=2, save_every=1))
    history_resumed = again.train(resume_from="latest")
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key    # bit-identical on CPU
    assert history_resumed["loss"].tolist() == history["loss"].tolist()


def test_empty_training_set_is_a_clear_error(small):
    with pytest.raises(ValueError, match="empty"):
        vt.Trainer(None, vt.StoryDataset.from_frame(small.frame.head(0)))


def test_eval_metrics_each_epoch_and_the_best_checkpoint(small, tmp_path):
    model = vt.StoryModel.tiny(vocab_from=small)
    cfg = _config(tmp_path, epochs=3, eval_metrics=("BLEU-4", "CIDEr", "distinct-1"),
                  best_metric="CIDEr", sample_max_new_tokens=12)
    trainer = vt.Trainer(model, small, small.select(range(6)), cfg)
    history = trainer.train()
    evals = history.dropna(subset=["CIDEr"])
    assert list(history.columns)[-3:] == ["BLEU-4", "CIDEr", "distinct-1"]
    assert len(evals) == 3 and evals["epoch"].tolist() == [1, 2, 3]
    assert trainer.state.best_value == evals["CIDEr"].max()
    assert trainer.state.best_epoch == int(evals.loc[evals["CIDEr"].idxmax(), "epoch"])
    assert (tmp_path / "run" / "best" / "visiontales_config.json").is_file()
    with pytest.raises(ValueError, match="best_metric"):
        vt.TrainingConfig(best_metric="CIDEr")            # not among eval_metrics


def _matmul_output_dtypes(model) -> set:
    """Records the output dtype of every matmul layer of the mapper and the LM in a training
    forward: bf16 under autocast, float32 without it."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's attention and MLP layers
    seen = set()

    def record(module, inputs, output):
        if module.training:
            seen.add(output.dtype)
    for module in [*model.mapper.modules(), *model.lm.modules()]:
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            module.register_forward_hook(record)
    return seen


@pytest.mark.slow
def test_bf16_loss_curve_follows_fp32(small, tmp_path):
    curves, dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        model = vt.StoryModel.tiny(vocab_from=small)
        dtypes[precision] = _matmul_output_dtypes(model)
        history = vt.Trainer(model, small, config=_config(tmp_path / precision, epochs=8,
                                                          precision=precision)).train()
        curves[precision] = history["loss"].to_numpy()
        # the weights AdamW updates stay float32: autocast computes in bf16, it does not cast them
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}  # the forward really ran in bf16
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert bf16[-1] < 0.5 * bf16[0]                                  # it learns
    assert abs(bf16 - fp32).max() < 0.05 * fp32.max()                # and tracks fp32 closely
    assert abs(bf16[-1] - fp32[-1]) < 0.1 * fp32[-1]
    assert not (bf16 == fp32).all()                                  # and is not fp32 under another name


def test_length_grouped_batches_cover_everything_with_less_padding():
    lengths = [int(x) for x in torch.randint(5, 80, (400,), generator=torch.Generator().manual_seed(1))]
    order = torch.randperm(400, generator=torch.Generator().manual_seed(2)).tolist()
    grouped = length_grouped_batches(order, lengths, 8, torch.Generator().manual_seed(3))
    assert sorted(i for b in grouped for i in b) == list(range(400))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    plain = [order[i:i + 8] for i in range(0, 400, 8)]
    assert padding(grouped) < 0.2 * padding(plain)


BF16 = torch.bfloat16
# (precision, device): what it resolves to with native bf16 hardware, and without.
# auto: bf16 only where the hardware does it natively, and never on mps; asked for by
# name, the answer does not depend on the hardware (and bf16 on mps is refused).
RESOLVED = {("auto", "cpu"): (BF16, None), ("auto", "cuda"): (BF16, None), ("auto", "mps"): (None, None),
            ("fp32", "cpu"): (None, None), ("fp32", "cuda"): (None, None), ("fp32", "mps"): (None, None),
            ("bf16", "cpu"): (BF16, BF16), ("bf16", "mps"): (ValueError, ValueError)}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("precision,device", list(RESOLVED))
def test_precision_choice(monkeypatch, precision, device, native):
    monkeypatch.setattr("visiontales.model.precision.cpu_has_native_bf16", lambda: native)  # not this machine's CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
    expected = RESOLVED[precision, device][0 if native else 1]
    if expected is ValueError:
        with pytest.raises(ValueError, match=device):
            resolve_precision(precision, torch.device(device))
    else:
        assert resolve_precision(precision, torch.device(device)) is expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        vt.TrainingConfig(precision="fp8")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    model = vt.StoryModel.tiny(vocab_from=small)
    cfg = _config(tmp_path, epochs=20, lr=1e9, max_grad_norm=None, save_steps=1, log_every=1,
                  save_every=0)
    trainer = vt.Trainer(model, small, config=cfg)
    with pytest.raises(FloatingPointError, match="last good checkpoint") as err:
        trainer.train()
    good = latest_checkpoint(tmp_path / "run")
    assert good is not None and str(good) in str(err.value)
    assert not (tmp_path / "run" / "final").exists()          # nothing bad is saved as final
    reloaded = vt.StoryModel.from_pretrained(good)               # the kept checkpoint is finite
    assert all(torch.isfinite(p).all() for p in reloaded.mapper.parameters())


class _Recorder(vt.TrainerCallback):
    """Writes down every hook call, with the state it saw."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, trainer, state):
        self.calls.append(("train_begin", state.step))

    def on_step_end(self, trainer, state):
        self.calls.append(("step_end", state.step))

    def on_log(self, trainer, state, logs):
        logs["seen_by_callback"] = 1.0  # on_log may add a column
        self.calls.append(("log", logs["step"]))

    def on_evaluate(self, trainer, state, metrics):
        self.calls.append(("evaluate", round(metrics["eval_loss"], 6)))

    def on_epoch_end(self, trainer, state):
        self.calls.append(("epoch_end", state.epoch))

    def on_save(self, trainer, state, path):
        self.calls.append(("save", path.name))

    def on_train_end(self, trainer, state):
        self.calls.append(("train_end", state.step))


def test_user_callbacks_see_every_hook_in_order(small, tmp_path):
    recorder = _Recorder()
    cfg = _config(tmp_path, epochs=2, log_every=2, save_every=1)  # 12 windows / 4: 3 steps an epoch
    trainer = vt.Trainer(vt.StoryModel.tiny(vocab_from=small), small, small.select(range(4)), cfg,
                         callbacks=[recorder])
    history = trainer.train()
    names = [name for name, _ in recorder.calls]
    assert names[0] == "train_begin" and names[-1] == "train_end"
    assert [v for n, v in recorder.calls if n == "step_end"] == [1, 2, 3, 4, 5, 6]
    assert [v for n, v in recorder.calls if n == "log"] == [2, 3, 4, 6] == history["step"].tolist()
    assert [v for n, v in recorder.calls if n == "epoch_end"] == [1, 2]
    evaluated = [v for n, v in recorder.calls if n == "evaluate"]
    assert evaluated == [round(v, 6) for v in history["eval_loss"].dropna()] and len(evaluated) == 2
    # epoch 1 ends in a checkpoint (epoch 2's end is the final model), after its evaluation;
    # built-in callbacks run before the user's
    assert names.index("evaluate") < names.index("save") < names.index("epoch_end")
    assert [v for n, v in recorder.calls if n == "save"] == ["checkpoint-step3"]
    assert (history["seen_by_callback"] == 1.0).all()


def test_a_checkpoint_holds_the_train_state_and_fills_the_model_in_place(small, tmp_path, monkeypatch):
    cfg = _config(tmp_path, epochs=2, save_steps=2, save_every=0, log_every=1)
    trainer = vt.Trainer(vt.StoryModel.tiny(vocab_from=small), small, config=cfg)
    trainer.train()
    checkpoint = latest_checkpoint(cfg.output_dir)
    resumed = vt.Trainer(vt.StoryModel.tiny(vocab_from=small, seed=1), small, config=cfg)
    built = []
    monkeypatch.setattr(vt.StoryModel, "__init__", lambda *a, **k: built.append(a) or 1 / 0)
    resumed.optimizer = resumed.create_optimizer()
    resumed.scheduler = resumed.create_scheduler(resumed.optimizer)
    state = resumed.resume(checkpoint)
    assert not built  # no second StoryModel was built to load the weights
    assert (state.step, state.epoch, state.batch) == (4, 1, 1)  # 3 batches an epoch; step 4 is 1 into epoch 2
    without_nan = [{k: v for k, v in row.items() if k != "eval_loss"} for row in trainer.state.history[:4]]
    assert [{k: v for k, v in row.items() if k != "eval_loss"} for row in state.history] == without_nan
    assert state.rng is not None
    saved = vt.StoryModel.from_pretrained.__func__  # the folder's weights, now in the resumed model
    monkeypatch.undo()
    reference = saved(vt.StoryModel, checkpoint)
    for (name, a), b in zip(reference.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_building_training_and_seeded_generation_leave_global_state_alone(small, tmp_path):
    import logging
    import random

    import numpy as np

    root = logging.getLogger()
    before_logging = (root.level, list(root.handlers), list(root.filters), logging.getLogger("open_clip").level)
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    model = vt.StoryModel.tiny(vocab_from=small)
    vt.Trainer(model, small, config=_config(tmp_path, epochs=1)).train()
    stories = model.generate([list(small[0]["image_paths"])], do_sample=True, seed=1, max_new_tokens=8,
                             progress=False)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    assert (root.level, list(root.handlers), list(root.filters),
            logging.getLogger("open_clip").level) == before_logging
    # seeded sampling is repeatable, whatever the global stream did in between
    torch.rand(7)
    again = model.generate([list(small[0]["image_paths"])], do_sample=True, seed=1, max_new_tokens=8,
                           progress=False)
    assert again == stories


# /proc/cpuinfo flag lines, shortened: only AVX-512 BF16 and AMX compute bf16 natively
CPU_FLAGS = {"avx2 only (Zen 2/3, Haswell)": ("fpu sse2 avx avx2 fma", False),
             "plain AVX-512 (Skylake-SP, Ice Lake)": ("avx2 avx512f avx512dq avx512bw avx512_vnni", False),
             "AVX-512 BF16 (Zen 4, Cooper Lake)": ("avx2 avx512f avx512_vnni avx512_bf16", True),
             "AMX (Sapphire Rapids)": ("avx2 avx512f amx_tile amx_int8 amx_bf16", True)}


@pytest.mark.parametrize("cpu", list(CPU_FLAGS))
def test_native_bf16_is_read_from_the_cpu_flags(cpu):
    from visiontales.model.precision import native_bf16_in_flags
    flags, native = CPU_FLAGS[cpu]
    assert native_bf16_in_flags(f"processor : 0\nflags : {flags}\n") is native


@pytest.mark.parametrize("bf16,amx", [(False, False), (True, False), (False, True)])
def test_without_proc_cpuinfo_torch_decides_and_plain_avx512_is_not_native(monkeypatch, bf16, amx):
    from pathlib import Path

    from visiontales.model import precision

    def no_proc(self, *a, **k):
        raise OSError("not Linux")
    monkeypatch.setattr(Path, "read_text", no_proc)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    precision.cpu_has_native_bf16.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() is (bf16 or amx)
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_cuda_bf16_by_emulation_does_not_count(monkeypatch):
    from visiontales.model.precision import frozen_weights_dtype
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or including_emulation)
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) is None and asked == [False]
    assert frozen_weights_dtype("auto", cuda) is torch.float16   # frozen CLIP: fp16 weights instead
    assert frozen_weights_dtype("fp32", cuda) is None


def test_progress_bars_in_a_log_do_not_redraw_every_step(small, tmp_path, capsys):
    """Redirected to a file, a bar prints when it opens and closes, not at every step."""
    model = vt.StoryModel.tiny(vocab_from=small)
    cfg = _config(tmp_path, epochs=2, batch_size=1, progress=True, save_every=0)
    vt.Trainer(model, small, config=cfg).train()
    err = capsys.readouterr().err            # pytest's capture is not a terminal
    redraws = err.count("epoch 1/2:")
    assert 1 <= redraws <= 3, err[-500:]     # 12 steps of epoch 1, at most 3 lines of it
