"""Derived config values follow command-line overrides (ml_collections FieldReferences)."""
from __future__ import annotations

import os
import sys
from unittest import mock

from absl import flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(*argv):
    """config as experiments/pretrain.py gets it from these flags (config_flags reads the
    overrides from sys.argv itself)."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values)
    argv = ["pretrain", *argv]
    with mock.patch.object(sys, "argv", argv):
        values(argv)
    return values.config


def test_derived_values_follow_overrides():
    hybrid = os.path.join(REPO, "configs", "hybrid.py")
    c = _parse(f"--config={hybrid}", "--config.model.encoder.width=128", "--config.data.segment_s=5")
    assert (c.model.encoder.heads, c.model.decoder.width, c.model.decoder.heads) == (2, 256, 4)
    assert c.model.encoder.num_samples == 1250
    c = _parse(f"--config={hybrid}", "--config.model.decoder.width=128")
    assert c.model.decoder.heads == 2
    c = _parse(f"--config={hybrid}:width=1024")
    assert (c.model.encoder.heads, c.model.decoder.width, c.model.decoder.heads) == (16, 512, 8)
    # runlocal fixes the heads at 2; the decoder's width is its own key (see ecgjax.config).
    c = _parse(f"--config={hybrid}:runlocal", "--config.model.encoder.width=32")
    assert (c.model.encoder.heads, c.model.decoder.width, c.model.decoder.heads) == (2, 32, 2)
    # An explicit value wins over the derived one.
    c = _parse(f"--config={hybrid}", "--config.model.encoder.width=128", "--config.model.encoder.heads=4")
    assert (c.model.encoder.heads, c.model.decoder.width) == (4, 256)
    c = _parse(f"--config={hybrid}:width=32")
    assert (c.model.encoder.heads, c.model.decoder.heads) == (1, 1)  # never 0 heads


def test_cpu_recipe_sets_the_documented_run_and_explicit_keys_win():
    """`cpu` is the 2-core pretraining recipe of benchmarks/ptbxl.md; a key beside it wins."""
    hybrid = os.path.join(REPO, "configs", "hybrid.py")
    c = _parse(f"--config={hybrid}:cpu,store=stores/ptbxl")
    enc = c.model.encoder
    assert (enc.patch, enc.depth, enc.width, enc.heads, enc.stem) == (125, 4, 256, 4, "conv")
    assert (c.train.batch_size, c.train.num_steps, c.data.num_workers, c.data.store) == (128, 2400, 0, "stores/ptbxl")
    assert (c.optim.schedule, c.optim.lr, c.optim.warmup_steps) == ("warmup_cosine", 5e-4, 100)
    assert c.model.decoder.width == 128
    c = _parse(f"--config={hybrid}:cpu,steps=600,stem=linear")
    assert (c.train.num_steps, c.model.encoder.stem) == (600, "linear")
    resnet = _parse(f"--config={os.path.join(REPO, 'configs', 'contrastive.py')}:cpu,encoder=resnet18")
    assert (resnet.model.encoder.chan_start, resnet.optim.lr) == (16, 1e-3)


def test_cl_resnet_is_the_measured_recipe_and_arg_keys_win():
    """configs/cl_resnet.py is the run behind benchmarks/ptbxl.md's best pretrained arm."""
    cl_resnet = os.path.join(REPO, "configs", "cl_resnet.py")
    c = _parse(f"--config={cl_resnet}:store=stores/ptbxl")
    assert (c.model.encoder.name, c.model.encoder.chan_start, c.objective.method) == ("resnet18", 16, "cl")
    weights = c.objective.weights
    assert (weights.patient, weights.sample, weights.interlead, weights.reconstruction) == (1.0, 1.0, 1.0, 0.0)
    assert (c.train.batch_size, c.train.num_steps, c.data.num_workers) == (128, 600, 0)
    assert (c.optim.schedule, c.optim.lr, c.optim.warmup_steps) == ("warmup_cosine", 1e-3, 50)
    c = _parse(f"--config={cl_resnet}:batch=64,steps=1200", "--config.objective.weights.interlead=0.5")
    assert (c.train.batch_size, c.train.num_steps, c.objective.weights.interlead) == (64, 1200, 0.5)


def test_cpu_and_runlocal_exclude_each_other():
    import pytest

    hybrid = os.path.join(REPO, "configs", "hybrid.py")
    with pytest.raises(Exception, match="exclude each other"):
        _parse(f"--config={hybrid}:cpu,runlocal")
