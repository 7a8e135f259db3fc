"""Every user mistake at the command line is a short `error:` naming the flag or file, a non-zero
exit and no traceback (unless --debug): each entry point's __main__ run from the repo root in
this process (tests/entry_points.py; a subprocess would add a Python start and a JAX import per
case, and the process boundary is not what these test). Also: a changed config in an existing
pretraining workdir is refused without touching it, and the same config still resumes."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from ecgjax.data.splits import SplitConfig

import entry_points
from fixtures import write_fold_store, write_wfdb_fixture

run = entry_points.run


def assert_user_error(result: subprocess.CompletedProcess, *named) -> str:
    """A failure with no traceback whose output names every string in `named`; returns the output."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for name in named:
        assert str(name) in output, (name, output[-3000:])
    return output


# ---------------------------------------------------------------------------------- configs

def test_misspelled_override_suggests_the_closest_key(pretrain_args, tmp_path):
    result = run(*pretrain_args, f"--workdir={tmp_path / 'run'}", "--config.train.stepz=5")
    assert_user_error(result, "--config.train.stepz", "did you mean train.")
    assert not (tmp_path / "run").exists()


def test_misspelled_config_arg_suggests_the_closest(tmp_path):
    """`:runlcoal` (the part after ':' in --config) was a ValueError with no suggestion; the probe
    config ignored it and ran its full-size recipe."""
    for config in ("configs/hybrid.py:runlcoal", "configs/probe.py:runlcoal"):
        script = "experiments/probe.py" if "probe" in config else "experiments/pretrain.py"
        result = entry_points.run(script, f"--config={config}", f"--workdir={tmp_path / 'run'}")
        assert result.returncode == 2
        assert_user_error(result, "config arg 'runlcoal'", "did you mean runlocal?")
        assert "ValueError" not in result.stderr
    result = entry_points.run("experiments/pretrain.py", "--config=configs/hybrid.py:patch=abc",
                              f"--workdir={tmp_path / 'run'}")
    assert_user_error(result, "config arg 'patch=abc'", "expected patch=<int>")
    assert not (tmp_path / "run").exists()


def test_missing_required_flags_are_named_with_what_to_pass():
    result = entry_points.run("experiments/pretrain.py", "--config=configs/hybrid.py:runlocal")
    assert result.returncode == 2
    assert_user_error(result, "--workdir is required (Directory for checkpoints and logs): pass --workdir=")
    result = entry_points.run("experiments/annotate.py")  # every missing flag at once, not the last one
    assert_user_error(result, "--checkpoint is required", "--input is required", "--output is required")


def test_missing_config_file(tmp_path):
    result = run("experiments/pretrain.py", "--config=configs/nope.py", f"--workdir={tmp_path / 'run'}")
    assert_user_error(result, "configs/nope.py", "not found")


def test_missing_store(pretrain_args, tmp_path):
    store = tmp_path / "no_store"
    result = run(*pretrain_args, f"--workdir={tmp_path / 'run'}", f"--config.data.store={store}")
    assert_user_error(result, store, "python -m ecgjax.data.ingest")
    assert not (tmp_path / "run").exists()


def test_pretraining_on_fewer_patients_than_the_batch(tmp_path):
    """A cohort of 4 patients (3 in train) under runlocal's batch of 32: was a traceback, exit 1 and an
    empty workdir; now one line naming the split, the batch and both fixes, and nothing written."""
    result = entry_points.run("experiments/pretrain.py", "--config=configs/hybrid.py:runlocal",
                              "--config.data.synthetic.num_patients=4",
                              f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}",
                              f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert_user_error(result, "split 'train' holds 3 patients", "fewer than --config.train.batch_size=32",
                      "Pass --config.train.batch_size=3 or less", "--config.data.synthetic.num_patients")
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.splitlines()[-1]]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- probe checkpoints

@pytest.mark.parametrize("kind", ["missing", "empty", "checkpoints_folder"])
def test_probe_checkpoint_mistakes(kind, pretrained_run, tmp_path):
    given = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty",
             "checkpoints_folder": pretrained_run / "checkpoints"}[kind]
    if kind == "empty":
        given.mkdir()
    result = run("experiments/probe.py", "--config=configs/probe.py:runlocal", f"--config.checkpoint={given}",
                 f"--workdir={tmp_path / 'probe'}")
    fix = {"missing": "no such directory; pass a pretraining run", "empty": "pass the --workdir",
           "checkpoints_folder": f"pass --config.checkpoint={pretrained_run}"}[kind]
    assert_user_error(result, f"--config.checkpoint={given}", fix)
    assert not (tmp_path / "probe").exists()


def test_a_missing_teacher_checkpoint_is_named_before_any_work(pretrained_run, tmp_path):
    result = run("experiments/probe.py", "--config=configs/probe.py:runlocal", f"--config.checkpoint={pretrained_run}",
                 "--config.mode=finetune", "--config.recipe=linear,finetune,distill", "--config.distill.teachers.size=2",
                 f"--config.distill.teachers.checkpoints={pretrained_run},{tmp_path / 'nowhere'}",
                 f"--workdir={tmp_path / 'probe'}")
    assert_user_error(result, f"--config.distill.teachers.checkpoints={tmp_path / 'nowhere'}", "no such directory")
    assert not (tmp_path / "probe").exists()


def test_a_missing_unlabelled_store_is_named_before_any_work(pretrained_run, tmp_path):
    result = run("experiments/probe.py", "--config=configs/probe.py:runlocal", f"--config.checkpoint={pretrained_run}",
                 "--config.mode=finetune", "--config.recipe=linear,finetune,distill",
                 f"--config.distill.pool.store={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'probe'}")
    assert_user_error(result, str(tmp_path / "nowhere"), "no such directory")
    assert not (tmp_path / "probe").exists()


def test_probe_recipe_mistakes_are_named_before_any_work(tmp_path):
    result = run("experiments/probe.py", "--config=configs/probe.py:runlocal", "--config.init=supervised",
                 "--config.mode=finetune", "--config.recipe=finetune,wise_ft,distill",
                 "--config.protocol.aggregation=median", "--config.optim.epochs=0",
                 "--config.optim.layer_decay_resnet=-1", "--config.distill.epochs=-2",
                 "--config.distill.teachers.size=0", "--config.wise_ft.points=-1",
                 "--config.distill.teachers.checkpoints=runs/cl", "--config.distill.pool.records=-1",
                 "--config.protocol.skip_for_pretrained=amplitude,powerline", f"--workdir={tmp_path / 'probe'}")
    assert_user_error(result, "--config.protocol.aggregation=median", "--config.optim.epochs=0",
                      "--config.optim.layer_decay_resnet=-1", "--config.distill.epochs=-2",
                      "--config.distill.teachers.size=0", "--config.wise_ft.points=-1",
                      "wise_ft mixes fine-tuned weights with the linear-probed pretrained ones",
                      "--config.distill.teachers.checkpoints=runs/cl: are pretrained encoders",
                      "--config.distill.pool.records=-1",
                      "--config.protocol.skip_for_pretrained=amplitude,powerline: amplitude, powerline is not one of")
    assert not (tmp_path / "probe").exists()


def test_a_fold_given_on_the_command_line_is_refused_not_replaced(tmp_path):
    """--config.folds.test=10 on a store of folds 1-9 silently tested on fold 9 ("with the default
    ..."): a fold the user set is used or refused; only unset ones fall back (tests/test_folds.py)."""
    store = write_fold_store(tmp_path / "store", SplitConfig(method="folds", train_folds=tuple(range(1, 8)),
                                                             val_folds=(8,), test_folds=(9,)))
    result = entry_points.run("experiments/probe.py", "--config=configs/probe.py:runlocal", "--config.init=supervised",
                              "--config.encoder_config=configs/hybrid.py:runlocal", f"--config.data.store={store.path}",
                              "--config.folds.test=10", f"--workdir={tmp_path / 'probe'}")
    assert result.returncode == 2
    assert_user_error(result, "--config.folds.test=10: the test split is empty", "holds folds 1-9",
                      "pass --config.folds.train=1-7 --config.folds.val=8 --config.folds.test=9")
    assert not (tmp_path / "probe").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run("experiments/probe.py", "--config=configs/probe.py:runlocal",
                 f"--config.checkpoint={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'probe'}", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "in resolve" in result.stderr


# ---------------------------------------------------------------------------------- ingest

def ingest(*flags) -> subprocess.CompletedProcess:
    return run("-m", "ecgjax.data.ingest", "--workers=0", *flags)


def test_ingest_of_a_missing_input(tmp_path):
    assert_user_error(ingest("--source=wfdb", f"--input={tmp_path / 'nope'}", f"--output={tmp_path / 'store'}"),
                      tmp_path / "nope", "--input")


def test_ingest_wfdb_without_input(tmp_path):
    assert_user_error(ingest("--source=wfdb", f"--output={tmp_path / 'store'}"), "--input")


def test_ingest_of_a_folder_without_records(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.txt").write_text("no records here\n")
    assert_user_error(ingest("--source=wfdb", f"--input={tmp_path / 'corpus'}", f"--output={tmp_path / 'store'}"),
                      tmp_path / "corpus")


def test_ingest_where_every_record_is_rejected(tmp_path):
    for name in ("flat1", "flat2"):  # every lead constant: refused by the reader's checks
        write_wfdb_fixture(tmp_path / "corpus", name, signal_mv=np.full((1000, 12), 0.5))
    result = ingest("--source=wfdb", f"--input={tmp_path / 'corpus'}", f"--output={tmp_path / 'store'}")
    assert_user_error(result, tmp_path / "corpus", "rejected")
    rejected = (tmp_path / "store" / "rejected.csv").read_text()
    assert "flat1" in rejected and "flat2" in rejected


# ---------------------------------------------------------------------------------- annotate

def test_annotate_on_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("experiments/annotate.py", f"--checkpoint={tmp_path / 'model'}", f"--input={tmp_path / 'empty'}",
                 f"--output={tmp_path / 'out'}")
    assert_user_error(result, f"--input={tmp_path / 'empty'}", "no WFDB records")


def test_annotate_with_a_missing_checkpoint_suggests_the_closest_and_what_to_pass(tmp_path):
    """Was a bare 'no such directory' (or a pretraining run's advice): now the folder beside it that
    was probably meant and the kinds of model annotate reads."""
    write_wfdb_fixture(tmp_path / "records")
    (tmp_path / "models" / "telemetry").mkdir(parents=True)
    result = run("experiments/annotate.py", f"--checkpoint={tmp_path / 'models' / 'telemetyr'}",
                 f"--input={tmp_path / 'records'}", f"--output={tmp_path / 'out'}")
    assert result.returncode == 2
    assert_user_error(result, f"--checkpoint={tmp_path / 'models' / 'telemetyr'}: no such directory (did you mean "
                              f"{tmp_path / 'models' / 'telemetry'}?)", "experiments/probe.py --config.save_model=True")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- changed config

def test_changed_config_in_an_existing_workdir_is_refused(pretrain_args, pretrained_run, tmp_path):
    pretrained_run = shutil.copytree(pretrained_run, tmp_path / "run")  # the session's run stays as it is
    config_before = (pretrained_run / "config.json").read_bytes()
    steps_before = sorted(os.listdir(pretrained_run / "checkpoints"))
    result = run(*pretrain_args, f"--workdir={pretrained_run}", "--config.model.encoder.width=32")
    output = assert_user_error(result, f"--workdir={pretrained_run}", "  model.encoder.width: saved 64, now 32",
                               "Use a new --workdir")
    assert [line for line in output.splitlines() if ": saved " in line] == ["  model.encoder.width: saved 64, now 32"]
    assert (pretrained_run / "config.json").read_bytes() == config_before
    assert sorted(os.listdir(pretrained_run / "checkpoints")) == steps_before

    resumed = run(*pretrain_args, f"--workdir={pretrained_run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "restored step 2" in resumed.stderr
