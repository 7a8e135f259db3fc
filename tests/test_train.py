"""Pretraining: data-parallel equivalence, checkpoint resume, NaN guard, config validation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import generative, hybrid  # configs/ is on sys.path (pytest.ini)
from ecgjax.train import loop
from fixtures import set_fields
from ecgjax.train.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(module, arg="runlocal", **overrides):
    """A runlocal config shrunk further: a 24-patient cohort, batch 8, a handful of steps."""
    config = module.get_config(arg)
    config.data.synthetic.num_patients = 24
    config.data.synthetic.records_per_patient = 2
    config.data.num_workers = 0
    config.train.batch_size = 8
    config.train.num_steps = 6
    config.train.checkpoint_every = 3
    config.train.log_every = 1
    return set_fields(config, overrides)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic_cache"))


def _final_params(workdir):
    _, _, variables = loop.restore_pretrained(workdir)
    return jax.tree.leaves(variables)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, cache_dir, monkeypatch):
    config = tiny(hybrid, **{"data.synthetic.cache_dir": cache_dir})
    loop.pretrain(config, str(tmp_path / "straight"))

    calls = {"n": 0}
    original = loop.Trainer.step

    def dies_at_step_5(self, state, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return original(self, state, batch)

    monkeypatch.setattr(loop.Trainer, "step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        loop.pretrain(config, str(tmp_path / "resumed"))
    assert Checkpointer(str(tmp_path / "resumed" / "checkpoints")).latest_step() == 3
    monkeypatch.setattr(loop.Trainer, "step", original)
    loop.pretrain(config, str(tmp_path / "resumed"))

    for a, b in zip(_final_params(tmp_path / "straight"), _final_params(tmp_path / "resumed")):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # The resumed run logged steps 4..6 after 1..4 of the killed one (step 4 ran, wasn't saved).
    steps = [json.loads(line)["step"] for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 4, 5, 6]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    config = tiny(generative, **{"data.synthetic.cache_dir": cache_dir})
    original = loop.Trainer.step
    calls = {"n": 0}

    def nan_batch_at_step_5(self, state, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            batch = dict(batch, segment=np.full_like(batch["segment"], np.nan))
        return original(self, state, batch)

    monkeypatch.setattr(loop.Trainer, "step", nan_batch_at_step_5)
    with pytest.raises(loop.NonFiniteLossError, match="step 5.*step 3"):
        loop.pretrain(config, str(tmp_path / "run"))
    ckpt = Checkpointer(str(tmp_path / "run" / "checkpoints"))
    assert ckpt.latest_step() == 3
    ckpt.close()
    leaves = _final_params(tmp_path / "run")
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)


@pytest.mark.parametrize("field,value,message", [
    ("train.batch_size", 0, "batch_size"),
    ("objective.mask_ratio", 1.5, "mask_ratio"),
    ("objective.temperature", 0.0, "temperature"),
    ("model.encoder.num_samples", 1000, "num_samples"),
])
def test_absurd_configs_are_rejected_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        loop.validate_config(tiny(hybrid, **{field: value}))


def test_reconstruction_with_a_resnet_is_rejected():
    config = tiny(generative, **{"model.encoder.name": "resnet18"})
    with pytest.raises(ValueError, match="vit1d"):
        loop.Trainer(config).new_state()


_EQUIVALENCE = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {repo!r})
    from configs import hybrid, pclr_resnet
    from ecgjax.train import loop, state as state_lib
    assert jax.device_count() == 4, jax.devices()
    out = {{}}
    for name, module in (("hybrid", hybrid), ("pclr", pclr_resnet)):
        config = module.get_config("runlocal")
        config.train.batch_size = 8
        config.objective.moco.queue_size = 16
        batch_np = {{k: np.asarray(v) for k, v in state_lib.example_batch(config, 8).items()}}
        rng = np.random.default_rng(0)
        for k in ("segment", "segment_aug", "patient_segment"):
            batch_np[k] = rng.normal(size=batch_np[k].shape).astype(np.float32)
        batch_np["patient"] = np.arange(8, dtype=np.int32) // 2
        batch_np["lead_mask"] = np.ones((8, 12), np.float32)
        results = []
        for devices in (1, 4):
            trainer = loop.Trainer(config, num_devices=devices)
            state = trainer.new_state()
            for _ in range(2):  # two steps: the second sees updated params, BN stats and queue
                state, metrics = trainer.step(state, batch_np)
            results.append((float(metrics["loss"]), [np.asarray(x) for x in jax.tree.leaves(state)]))
        (l1, p1), (l4, p4) = results
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p4))
        out[name] = {{"loss1": l1, "loss4": l4, "max_param_diff": diff}}
    print(json.dumps(out))
""")


def test_four_devices_match_one_device(tmp_path):
    """The same global batch on a 1-device and a 4-device mesh: same loss and same update."""
    script = tmp_path / "equivalence.py"
    script.write_text(_EQUIVALENCE.format(repo=REPO))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert abs(r["loss1"] - r["loss4"]) < 1e-4 * max(1.0, abs(r["loss1"])), (name, r)
        # Adam's first steps move every weight by about lr (3e-4) whatever the gradient's size,
        # so a wrong reduction (per-device BatchNorm, a mean over a device's shard) shows up at
        # that scale; float reassociation across devices stays far below it.
        assert r["max_param_diff"] < 6e-5, (name, r)


def test_interlead_intersegment_terms_and_dual_stream_encoder_train():
    """002's extra terms and dual-stream encoder through one real step (every part logged)."""
    from configs import contrastive
    from ecgjax.train import state as state_lib

    config = tiny(contrastive, **{"objective.weights.interlead": 1.0, "objective.weights.intersegment": 0.5,
                                  "model.encoder.dual_stream": True})
    trainer = loop.Trainer(config)
    state = trainer.new_state()
    assert {"limb_encoder", "precordial_encoder", "fuse"} == set(state.params["encoder"])
    batch = {k: np.asarray(v) for k, v in state_lib.example_batch(config, 8).items()}
    rng = np.random.default_rng(0)
    for key in ("segment", "segment_aug", "patient_segment"):
        batch[key] = rng.normal(size=batch[key].shape).astype(np.float32)
    batch["patient"] = np.arange(8, dtype=np.int32)
    state, metrics = trainer.step(state, batch)
    metrics = {k: float(v) for k, v in metrics.items()}
    assert {"patient", "sample", "interlead", "intersegment"} <= set(metrics)
    expected = metrics["patient"] + metrics["sample"] + metrics["interlead"] + 0.5 * metrics["intersegment"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
