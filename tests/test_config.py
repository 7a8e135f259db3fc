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
