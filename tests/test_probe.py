"""Probe / fine-tune driver and saved classifiers, end to end on a tiny pretrained encoder."""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import probe as probe_config
from ecgjax.data.ingest import build_synthetic_store
from ecgjax.downstream.model import load_model
from ecgjax.downstream.network import adapt_encoder
from ecgjax.downstream import fit as fit_lib
from ecgjax.eval import classifier as clf_lib, probe, tasks
from ecgjax.eval.recipe import (FineTune, FitSettings, LinearHead, Recipe, SelfDistill, Teachers, WiSEFT, Windowing,
                                distill as distill_lib, teacher_targets)
from ecgjax.eval.task_data import TaskArrays
from ecgjax.eval.report import read_runs
from ecgjax.models import registry
import entry_points

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every check here is of flow, files, bounds or agreement between two computations of this process:
# XLA's optimisations off (conftest `unoptimized`) halve the many compilations of a ResNet's steps.
pytestmark = pytest.mark.usefixtures("unoptimized_xla")
TINY_OPTIM = dict(batch_size=16, eval_batch_size=32, linear_epochs=3, epochs=1, min_steps_per_epoch=1)
TINY_FIT = FitSettings(batch_size=8, eval_batch_size=32, min_steps_per_epoch=1)


def _recipe(*stages, windowing=Windowing()) -> Recipe:
    """A recipe of these stages with TINY_FIT's batching."""
    return Recipe(tuple(stages), TINY_FIT, windowing)


@pytest.fixture(scope="session")
def syn_store(tmp_path_factory):
    return build_synthetic_store(tmp_path_factory.mktemp("probe") / "store", 48, 2, seed=0)


@pytest.fixture(scope="session")
def checkpoint(pretrained_run):
    """A hybrid (HL) ViT pretrained for 2 steps on a tiny synthetic cohort (tests/conftest.py); its
    encoder is configs/generative.py:runlocal's, which the random and supervised arms build."""
    return str(pretrained_run)


def _config(**changes):
    c = probe_config.get_config("runlocal")
    c.seeds = 1
    c.bootstrap = 10
    c.optim.update(TINY_OPTIM)
    c.encoder_config = os.path.join(REPO, "configs/generative.py:runlocal")
    c.update_from_flattened_dict(changes)
    return c


@pytest.mark.parametrize("init,mode,task,expected", [
    ("pretrained", "finetune", "age", "finetune"), ("random", "linear", "wide_qrs", "random_init"),
    ("supervised", "finetune", "age", "supervised")])
def test_modes_write_runs(checkpoint, syn_store, tmp_path, init, mode, task, expected):
    # age runs on lead II only (first-layer channel selection) and share one compiled step.
    leads = "II" if task == "age" else ""
    runs = probe.run_probe(_config(checkpoint=checkpoint, init=init, mode=mode, task=task, leads=leads,
                                   **{"data.store": str(syn_store.path)}), tmp_path)
    assert len(runs) == 1
    run = read_runs(tmp_path)[0]
    assert run.mode == expected and run.task == task
    if task == "age":
        assert run.task_type == "regression" and set(run.metrics) == {"mae", "r2"} == set(run.ci)
        assert 0 < run.metrics["mae"] < 60  # in years, not standardised units
        assert run.extra["leads"] == ["II"]
    else:
        assert run.task_type == "binary" and set(run.metrics) == {"auroc", "auprc", "f1", "fmax", "f1_tuned"}
        assert set(run.ci) == {"auroc", "auprc"}
    assert run.cell["patch"] == 125 and run.cell["width"] == 64
    if init == "pretrained":
        assert run.cell["method"] == "HL" and run.pretrain_loss["reconstruction"] > 0
    else:
        assert run.cell["method"] is None and run.pretrain_loss == {}
    assert (tmp_path / f"summary_{task}_{expected}.json").is_file()


def test_probe_distils_on_the_records_the_labelled_subset_leaves_out(checkpoint, syn_store, tmp_path):
    full = probe.run_probe(_config(checkpoint=checkpoint, task="age", leads="II", mode="finetune",
                                   **{"data.store": str(syn_store.path)}), tmp_path / "full")[0]
    config = _config(checkpoint=checkpoint, task="age", leads="II", mode="finetune", data_fraction=0.5,
                     recipe="linear,finetune,distill", **{"data.store": str(syn_store.path), "distill.epochs": 1})
    run = probe.run_probe(config, tmp_path / "half")[0]
    assert run["extra"]["n_train"] < full["extra"]["n_train"]
    assert run["extra"]["epochs_run"] == {"linear": 3, "finetune": 1, "distill": 1}
    assert run["extra"]["recipe"] == ["linear", "finetune", "distill"]
    assert "distill" not in full["extra"]["epochs_run"]  # off by default
    assert full["extra"]["recipe"] == ["linear", "finetune"]  # --config.mode=finetune's


def test_probe_adds_the_records_of_an_unlabelled_store_to_the_pool(checkpoint, syn_store, tmp_path, monkeypatch):
    """--config.distill.pool.store: its records (cut to the task's rows, in the task's leads)
    join the left-out training records as self-distillation's pool; a sample when capped."""
    from ecgjax.errors import UserError

    other = build_synthetic_store(tmp_path / "other", 6, 2, seed=3)
    pools, train = [], Recipe.train

    def spy_train(self, *args, **kwargs):
        pools.append(kwargs["pool"])
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Recipe, "train", spy_train)
    flags = {"data.store": str(syn_store.path), "distill.pool.store": str(other.path), "distill.epochs": 1}
    base = dict(checkpoint=checkpoint, task="age", leads="II", mode="finetune", data_fraction=0.5,
                recipe="linear,finetune,distill")
    run = probe.run_probe(_config(**base, **flags), tmp_path / "all")[0]
    probe.run_probe(_config(**base, **flags, **{"distill.pool.records": 5}), tmp_path / "five")
    everything, five = pools
    from_other = everything.record_index == -1
    assert from_other.sum() == len(other) == 12 and (~from_other).any()
    assert (five.record_index == -1).sum() == 5 and len(five) - 5 == (~from_other).sum()
    assert run["extra"]["n_pool"] == len(everything) and run["extra"]["unlabelled_store"] == str(other.path)
    lead_ii = tasks.CANONICAL_LEADS.index("II")
    row = np.flatnonzero(from_other)[0]
    n = everything.lengths[row]
    # The pool row is a copy of the store's float32 samples, no arithmetic: equal on any CPU.
    np.testing.assert_array_equal(everything.x[row, :n, 0], other.read(0, 0, int(n))[:, lead_ii])
    with pytest.raises(UserError, match="task's own store"):
        probe.run_probe(_config(**base, **{**flags, "distill.pool.store": str(syn_store.path)}), tmp_path / "own")
    without_ii = tmp_path / "without_ii"   # a corpus none of whose records has the task's lead
    shutil.copytree(other.path, without_ii)
    mask = np.load(without_ii / "lead_mask.npy")
    mask[:, lead_ii] = False
    np.save(without_ii / "lead_mask.npy", mask)
    with pytest.raises(UserError, match="no record of .* has every lead of the task"):
        probe.run_probe(_config(**base, **{**flags, "distill.pool.store": str(without_ii)}), tmp_path / "none")


def test_cli_entry_point(checkpoint, syn_store, tmp_path):
    result = entry_points.run("experiments/probe.py", "--config=configs/probe.py:runlocal",
                              f"--config.checkpoint={checkpoint}", f"--config.data.store={syn_store.path}",
                              "--config.task=afib", "--config.seeds=1", "--config.optim.linear_epochs=2",
                              "--config.bootstrap=5", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = read_runs(tmp_path)
    assert run.task == "afib" and run.mode == "linear" and "auroc" in run.metrics  # NaN if test lacks AF
    assert run.cell["method"] == "HL" and (tmp_path / "summary_afib_linear.json").is_file()


def test_multilabel_metrics(checkpoint, syn_store, tmp_path):
    multi = probe.run_probe(_config(checkpoint=checkpoint, task="conditions",
                                    **{"data.store": str(syn_store.path)}), tmp_path)[0]
    assert {"macro_auroc", "macro_auprc", "fmax", "auroc/afib"} <= set(multi["metrics"])
    assert multi["task_type"] == "multilabel" and "macro_auroc" in multi["ci"]


def test_cinc2017_multiclass(cinc_store, tmp_path):
    """001's task end to end on generated CinC 2017 records of 9-30 s: records padded / cropped to
    60 s, trained from scratch on augmented 5 s crops with a class-balanced loss, scored by
    aggregating sliding windows over each whole record, F1 also with offsets tuned on validation."""
    run = probe.run_probe(_config(init="supervised", mode="finetune", task="cinc2017", **{
        "data.store": str(cinc_store.path), "protocol.window_s": 5.0, "protocol.record_s": 60.0,
        "protocol.augment": True, "optim.class_weighting": "balanced", "optim.patience": 1}), tmp_path / "out")[0]
    assert {"macro_f1", "accuracy", "f1/N", "f1/A", "f1/O", "f1/~"} <= set(run["metrics"])
    assert {"macro_f1_tuned", "f1_tuned/N", "f1_tuned/A", "f1_tuned/O", "f1_tuned/~"} <= set(run["metrics"])
    assert run["metrics"]["challenge_f1"] == pytest.approx(np.mean([run["metrics"][f"f1/{c}"] for c in "NAO"]))
    assert "challenge_f1_tuned" in run["metrics"]
    assert run["extra"]["leads"] == ["I"] and {"macro_f1", "challenge_f1"} <= set(run["ci"])
    assert run["extra"]["window_s"] == 5.0 and run["extra"]["epochs_run"] == {"finetune": 1}


def test_label_scarcity_is_patient_level():
    patient = np.repeat(np.arange(40), 3)
    y = (patient % 4 == 0).astype(np.float32)
    train = TaskArrays(x=np.zeros((120, 4, 1), np.float32), y=y, patient=patient,
                             record_index=np.arange(120))
    task = tasks.Task("t", "binary", ("t",))
    small = probe.scarce_training_set(train, task, 0.25, 0.0, seed=3)
    assert len(np.unique(small.patient)) == 10 and len(small) == 30  # whole patients
    assert set(np.unique(small.y)) == {0.0, 1.0}
    assert probe.scarce_training_set(train, task, 0.25, 0.0, seed=3).record_index.tolist() == \
        small.record_index.tolist()  # fixed seed
    rare = probe.scarce_training_set(train, task, 1.0, 0.05, seed=0)
    assert abs(rare.y.mean() - 0.05) < 0.03 and len(np.unique(rare.patient[rare.y == 0])) == 30
    both = probe.scarce_training_set(train, task, 0.5, 0.05, seed=0)
    assert set(both.record_index) <= set(rare.record_index)
    for p in np.unique(both.patient):
        assert (both.patient == p).sum() == 3


def _tiny_vit(in_leads):
    return dict(name="vit1d", num_samples=250, patch=25, depth=1, width=32, heads=2, in_leads=in_leads)


@pytest.mark.usefixtures("float32_products")
def test_lead_adaptation_equivalence():
    rng = np.random.default_rng(0)
    config = _tiny_vit(12)
    encoder = registry.build_encoder(config)
    variables = encoder.init(jax.random.PRNGKey(0), registry.example_input(config, 2), train=False)
    lead_ii = tasks.get_task("MI", leads=["II"])
    x = rng.standard_normal((3, 250, 1)).astype(np.float32)
    # select: a 1-channel kernel fed lead II; zero: the 12-lead kernel with absent leads zeroed.
    sel_config, sel_vars, leads = adapt_encoder(config, dict(variables), lead_ii.leads, "select")
    assert leads == ("II",) and sel_config["in_leads"] == 1
    zero_config, zero_vars, zero_leads = adapt_encoder(config, dict(variables), lead_ii.leads, "zero")
    assert len(zero_leads) == 12
    full = probe.zero_fill_leads(TaskArrays(x, np.zeros(3), np.zeros(3), np.zeros(3)), leads, zero_leads).x
    assert np.all(full[:, :, 0] == 0) and np.array_equal(full[:, :, 1], x[:, :, 0])
    selected = registry.build_encoder(sel_config).apply(sel_vars, x, train=False)
    zeroed = registry.build_encoder(zero_config).apply(zero_vars, full, train=False)
    np.testing.assert_allclose(selected, zeroed, rtol=1e-5, atol=1e-5)
    # 001: a 1-lead encoder on 12 identical leads equals the 1-lead encoder on that lead.
    one = _tiny_vit(1)
    one_vars = registry.build_encoder(one).init(jax.random.PRNGKey(1), registry.example_input(one, 2), train=False)
    twelve_config, twelve_vars, _ = adapt_encoder(one, dict(one_vars), tasks.get_task("MI").leads)
    np.testing.assert_allclose(
        registry.build_encoder(twelve_config).apply(twelve_vars, np.repeat(x, 12, axis=2), train=False),
        registry.build_encoder(one).apply(one_vars, x, train=False), rtol=1e-4, atol=1e-5)


def test_cut_leads_use_their_own_layer_decay():
    """A 12-lead checkpoint cut to lead I fine-tunes with optim.layer_decay_new_leads; the same
    checkpoint on its own 12 leads, and a random encoder on one lead, keep optim.layer_decay."""
    recipe = _recipe(LinearHead(), FineTune(layer_decay=0.75, layer_decay_resnet=0.8, layer_decay_new_leads=0.9))
    resnet = dict(name="resnet18", chan_start=4, in_leads=12, num_samples=250)
    finetune = recipe.stage("finetune")
    assert finetune.layer_decay_for(_tiny_vit(12)) == 0.75 and finetune.layer_decay_for(resnet) == 0.8
    pretrained = probe.EncoderSource(_tiny_vit(12), {"params": {}}, None, "HL", {}, "ckpt")
    cut = probe.recipe_for_leads(recipe, pretrained, ("I",)).stage("finetune")
    assert cut.layer_decay_for(_tiny_vit(1)) == cut.layer_decay_for(resnet) == 0.9
    assert recipe.stage("finetune").layer_decay == 0.75  # the caller's recipe is not changed
    assert probe.recipe_for_leads(recipe, pretrained, tasks.get_task("MI").leads) is recipe
    random = probe.EncoderSource(_tiny_vit(12), None, None, None, {}, "")
    assert probe.recipe_for_leads(recipe, random, ("I",)) is recipe


@pytest.mark.usefixtures("float32_products")  # two programs: equal to float32 rounding
@pytest.mark.parametrize("task,config", [
    (tasks.Task("hr", "regression", ("hr",), leads=("I", "II"), window_s=1.0), _tiny_vit(2)),
    # ResNet: BatchNorm statistics trained and saved
    (tasks.Task("rhythm", "multiclass", ("r",), classes=("N", "A", "O"), leads=("I", "II"), window_s=1.0),
     dict(name="resnet18v2", chan_start=4, in_leads=2, num_samples=250))])
def test_classifier_save_load_round_trip(task, config, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 250, 2)).astype(np.float32)
    y = (rng.uniform(50, 120, 24).astype(np.float32) if task.type == "regression"
         else rng.integers(0, 3, 24).astype(np.int32))
    model, history = _recipe(LinearHead(epochs=3), FineTune(epochs=1)).train(config, None, (x[:16], y[:16]),
                                                                             (x[16:], y[16:]), task, 0)
    assert [h["stage"] for h in history] == ["linear"] * 3 + ["finetune"] and model.history == history
    if config["name"].startswith("resnet"):
        assert "batch_stats" in model.variables
    before = model.predict(x)
    model.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "classifier.json").read_text())["leads"] == ["I", "II"]
    loaded = load_model(tmp_path / "model", batch_size=5)
    after = loaded.predict(x)
    assert list(after) == list(task.output_names) and loaded.leads == ("I", "II")
    assert loaded.fs == 250.0 and loaded.window_s == 1.0 and loaded.output_names == task.output_names
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-5)
    if task.type == "multiclass":
        np.testing.assert_allclose(sum(after.values()), 1.0, rtol=1e-5)
    else:
        assert 20 < after["hr"].mean() < 200  # raw units
    with pytest.raises(ValueError, match="windows must be"):
        loaded.predict(x[:, :, :1])


def test_diagnostics_of_a_checkpoint(checkpoint, syn_store, tmp_path):
    """Embedding plot, patient identification and risk decomposition from the CLI's library call."""
    from ecgjax.eval.diagnose import run_diagnostics

    out = run_diagnostics(checkpoint, "wide_qrs", tmp_path, store=str(syn_store.path))
    assert (tmp_path / "embedding.png").stat().st_size > 1000
    assert json.loads((tmp_path / "diagnostics.json").read_text())["task"] == "wide_qrs"
    ident = out["patient_identification"]
    assert ident["patients"] > 0 and 0.0 <= ident["accuracy"] <= 1.0
    parts = out["risk_decomposition"]
    # Without a supervised encoder the approximation term is undefined; the rest add up to total.
    assert np.isnan(parts["approximation"])
    total = parts["risk_train_train"] + parts["probe_generalization"] + parts["encoder_generalization"]
    assert total == pytest.approx(parts["total"])
    assert 0.0 <= parts["total"] <= 1.0


def test_empty_split_stops_probe_and_diagnose_before_any_work(checkpoint, tmp_path, monkeypatch):
    """Standard folds on a store without fold 10 whose ingest split has no test share either: one
    error naming the flags, raised before a window is read or an output directory made."""
    from ecgjax.data.splits import SplitConfig
    from ecgjax.errors import UserError
    from ecgjax.eval import diagnose
    from fixtures import write_fold_store

    store = write_fold_store(tmp_path / "store", SplitConfig(method="hash", test_fraction=0.0))

    def no_work(*args, **kwargs):
        raise AssertionError("task windows were read before the split check")

    monkeypatch.setattr(probe, "load_task_arrays", no_work)
    monkeypatch.setattr(diagnose, "load_task_arrays", no_work)
    with pytest.raises(UserError, match="test split is empty .*pass --config.folds.train=1-7 "
                                        "--config.folds.val=8 --config.folds.test=9$"):
        probe.run_probe(_config(checkpoint=checkpoint, **{"data.store": str(store.path)}), tmp_path / "probe")
    with pytest.raises(UserError, match="test split is empty .*pass --folds=1-7,8,9$"):
        diagnose.run_diagnostics(checkpoint, "MI", tmp_path / "diagnose", store=str(store.path))
    assert not (tmp_path / "probe").exists() and not (tmp_path / "diagnose").exists()


@pytest.mark.parametrize("task", [
    tasks.Task("af", "binary", ("af",), leads=("I", "II"), window_s=1.0),
    tasks.Task("rhythm", "multiclass", ("r",), classes=("N", "A"), leads=("I", "II"), window_s=1.0)])
def test_self_distillation_learns_from_teacher_labels_and_keeps_the_better_model(task):
    """A distill stage: the fine-tuned teacher labels the unlabelled pool (whose own labels are
    never read: NaN here), a student trains on both (two rounds here: the kept model teaches the
    second), and the model kept is the one of the best validation score over all epochs."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64).astype(np.int32 if task.type == "multiclass" else np.float32)
    x = rng.standard_normal((64, 250, 2)).astype(np.float32) + 2.0 * y[:, None, None]  # separable
    pool = (x[24:], np.full(40, np.nan))
    config = dict(name="resnet18", chan_start=4, in_leads=2, num_samples=250)
    recipe = _recipe(FineTune(epochs=2), SelfDistill(epochs=2, rounds=2))
    model, history = recipe.train(config, None, (x[:8], y[:8]), (x[8:24], y[8:24]), task, 0, pool=pool)
    assert [h["stage"] for h in history] == ["finetune"] * 2 + ["distill"] * 4
    assert all(np.isfinite(h["train_loss"]) for h in history)
    # The kept weights re-scored by the same code in the same process: equal on any CPU.
    kept = clf_lib.selection_score(task, y[8:24], model.record_scores(x[8:24])[task.name])
    assert kept == pytest.approx(max(h["val_score"] for h in history), abs=1e-6)
    # Without a pool there is no distill stage.
    _, plain = recipe.train(config, None, (x[:8], y[:8]), (x[8:24], y[8:24]), task, 0)
    assert [h["stage"] for h in plain] == ["finetune"] * 2


def test_an_ensemble_teacher_labels_the_pool_with_the_mean_of_its_members(monkeypatch):
    """teachers.size=3: two more models are trained by the stages before distill from other seeds,
    and the pool's targets are the mean of the three models' scores."""
    task = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 40).astype(np.float32)
    x = rng.standard_normal((40, 250, 1)).astype(np.float32) + y[:, None, None]
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    calls, pool_scores, targets = [], [], []
    train, record_scores = Recipe.train, clf_lib.TrainedModel.record_scores

    def spy_train(self, *args, **kwargs):
        calls.append((args[5], self.names))   # seed, stages
        return train(self, *args, **kwargs)

    def spy_scores(model, records, *args, **kwargs):
        scores = record_scores(model, records, *args, **kwargs)
        if len(records) == 24:   # the pool
            pool_scores.append((id(model), scores["af"]))
        return scores

    monkeypatch.setattr(Recipe, "train", spy_train)
    monkeypatch.setattr(clf_lib.TrainedModel, "record_scores", spy_scores)
    monkeypatch.setattr(distill_lib, "teacher_targets", lambda task, scores: targets.append(scores) or scores)
    recipe = _recipe(FineTune(epochs=1), SelfDistill(epochs=1, teachers=Teachers(size=3)))
    _, history = recipe.train(config, None, (x[:8], y[:8]), (x[8:16], y[8:16]), task, 5,
                              pool=(x[16:], np.full(24, np.nan)))
    assert calls == [(5, ("finetune", "distill")), (1005, ("finetune",)), (2005, ("finetune",))]
    assert len({model for model, _ in pool_scores}) == 3
    # The same float32 scores averaged by the same np.mean in the same process: equal on any CPU;
    # the tolerance only absorbs a reordered sum.
    np.testing.assert_allclose(targets[0], np.mean([scores for _, scores in pool_scores], axis=0), rtol=1e-6)
    assert [h["stage"] for h in history] == ["finetune", "distill"]


def test_ensemble_members_start_from_the_given_encoders_in_turn(monkeypatch):
    """teacher_starts: the other members of an ensemble teacher start from those encoders in turn
    (other pretraining runs), not from the student's."""
    task = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 40).astype(np.float32)
    x = rng.standard_normal((40, 250, 1)).astype(np.float32) + y[:, None, None]
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    student, *members = [registry.build_encoder(config).init(jax.random.PRNGKey(k), registry.example_input(config, 2),
                                                             train=False) for k in range(3)]
    starts, train = [], Recipe.train

    def spy_train(self, *args, **kwargs):
        starts.append(args[1])
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Recipe, "train", spy_train)
    recipe = _recipe(LinearHead(epochs=3), FineTune(epochs=1), SelfDistill(epochs=1, teachers=Teachers(size=4)))
    recipe.train(config, student, (x[:8], y[:8]), (x[8:16], y[8:16]), task, 0, pool=(x[16:], np.full(24, np.nan)),
                 teacher_starts=[(config, m) for m in members])
    assert [id(start) for start in starts] == [id(student), id(members[0]), id(members[1]), id(members[0])]


def test_probe_starts_ensemble_members_from_teacher_checkpoints(checkpoint, syn_store, tmp_path, monkeypatch):
    """--config.distill.teachers.checkpoints reaches the recipe as pretrained encoders cut to the
    task's leads, and the run records where its members started."""
    from ecgjax.train import loop

    seen, train = [], Recipe.train

    def spy_train(self, *args, **kwargs):
        seen.append(kwargs.get("teacher_starts"))
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Recipe, "train", spy_train)
    config = _config(checkpoint=checkpoint, task="age", leads="II", mode="finetune", data_fraction=0.5,
                     recipe="linear,finetune,distill",
                     **{"data.store": str(syn_store.path), "distill.epochs": 1, "distill.teachers.size": 2,
                        "distill.teachers.checkpoints": f"{checkpoint}, {checkpoint}"})
    run = probe.run_probe(config, tmp_path / "probe")[0]
    members = seen[0]   # the probe's call; the member's own call (seen[1]) has none
    assert len(members) == 2 and all(encoder_config["in_leads"] == 1 for encoder_config, _ in members)
    pretrain_config, _, variables = loop.restore_pretrained(checkpoint)
    expected = adapt_encoder(pretrain_config.model.encoder.to_dict(), loop.encoder_variables(variables), ("II",))[1]
    # The same checkpoint restored and cut by the same code: bit-identical weights on any CPU.
    jax.tree_util.tree_map(np.testing.assert_array_equal, members[0][1], expected)
    assert run["extra"]["teacher_checkpoints"] == f"{checkpoint},{checkpoint}"
    assert run["extra"]["epochs_run"]["distill"] == 1


def test_wise_ft_keeps_the_best_of_the_fine_tuned_and_interpolated_weights():
    """wise_ft with 4 points: after fine-tuning a pretrained encoder, the weights 3/4, 1/2 and 1/4 of the
    way back to the linear-probed model are scored on validation, and the model kept scores the best
    of them and of the fine-tuned epochs."""
    task = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 48).astype(np.float32)
    x = rng.standard_normal((48, 250, 1)).astype(np.float32) + y[:, None, None]
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    encoder = registry.build_encoder(config).init(jax.random.PRNGKey(0), registry.example_input(config, 2),
                                                  train=False)
    recipe = _recipe(LinearHead(epochs=3), FineTune(epochs=3), WiSEFT(points=4))
    model, history = recipe.train(config, encoder, (x[:16], y[:16]), (x[16:], y[16:]), task, 0)
    wise = [h["val_score"] for h in history if h["stage"] == "wise_ft"]
    assert [h["epoch"] for h in history if h["stage"] == "wise_ft"] == [1, 2, 3]
    assert len(set(wise)) > 1   # the interpolations are different models
    tuned = [h["val_score"] for h in history if h["stage"] in ("finetune", "wise_ft")]
    # The kept weights re-scored by the same code in the same process: equal on any CPU.
    kept = clf_lib.selection_score(task, y[16:], model.record_scores(x[16:])[task.name])
    assert kept == pytest.approx(max(tuned), abs=1e-6)


@pytest.mark.parametrize("encoder_pretrained,mode,skip,expected", [
    (True, "finetune", "amplitude_scale", {"baseline_wander", "gaussian_noise"}),
    (True, "finetune", "", {"amplitude_scale", "baseline_wander", "gaussian_noise"}),
    (False, "supervised", "amplitude_scale", {"amplitude_scale", "baseline_wander", "gaussian_noise"})])
def test_a_pretrained_encoder_trains_without_the_augmentations_it_skips(monkeypatch, encoder_pretrained, mode, skip,
                                                                       expected):
    """protocol.skip_for_pretrained leaves those augmentations out of the all-weights training of a
    pretrained encoder only; a model from scratch keeps every one."""
    task = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 24).astype(np.float32)
    x = rng.standard_normal((24, 250, 1)).astype(np.float32)
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    encoder = registry.build_encoder(config).init(jax.random.PRNGKey(0), registry.example_input(config, 2),
                                                  train=False) if encoder_pretrained else None
    seen, train_step = [], fit_lib.train_step

    def spy_step(*args, **kwargs):
        if not kwargs.get("frozen_encoder"):
            seen.append(set(kwargs["augmentation"] or {}))
        return train_step(*args, **kwargs)

    monkeypatch.setattr(fit_lib, "train_step", spy_step)
    stages = (LinearHead(epochs=3), FineTune(epochs=1)) if mode == "finetune" else (FineTune(epochs=1),)
    windowing = Windowing(skip_for_pretrained=tuple(filter(None, skip.split(","))))
    _recipe(*stages, windowing=windowing).train(config, encoder, (x[:12], y[:12]), (x[12:], y[12:]), task, 0)
    assert seen == [expected]


def test_teacher_targets_by_task_type():
    multiclass = tasks.Task("rhythm", "multiclass", ("r",), classes=("N", "A", "O"), leads=("I",), window_s=1.0)
    scores = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]], np.float32)
    np.testing.assert_array_equal(teacher_targets(multiclass, scores), [1, 0])
    binary = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    np.testing.assert_array_equal(teacher_targets(binary, np.array([0.25, 0.75])), [0.25, 0.75])


def test_the_student_trains_on_the_teacher_targets(monkeypatch):
    """What teacher_targets returns is what the pool's rows are trained on: two runs that differ
    only in those targets (all 0 vs all 1) differ in the student's loss."""
    task = tasks.Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40).astype(np.float32)
    x = rng.standard_normal((40, 250, 1)).astype(np.float32)
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    losses = []
    for value in (0.0, 1.0):
        monkeypatch.setattr(distill_lib, "teacher_targets", lambda task, scores, v=value: np.full(len(scores), v))
        _, history = _recipe(FineTune(epochs=1), SelfDistill(epochs=1)).train(
            config, None, (x[:8], y[:8]), (x[8:16], y[8:16]), task, 0, pool=(x[16:], y[16:]))
        losses.append([h["train_loss"] for h in history if h["stage"] == "distill"])
    assert losses[0] and losses[0] != losses[1]
