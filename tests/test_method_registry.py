"""A method defined here alone (one registered object) pretrains through the normal loop."""
from __future__ import annotations

import json

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import config as common
from ecgjax.errors import UserError
from ecgjax.methods import Method, names, register
from ecgjax.train import loop
from ecgjax.train.checkpoint import Checkpointer


@register("toy_mean")
class ToyMean(Method):
    """Regresses each lead's mean over the anchor segment from the encoder's features."""

    terms = ("lead_mean",)

    def heads(self, net):
        return {"mean_head": nn.Dense(net.model.encoder.in_leads, dtype=net.dtype)}

    def forward(self, net, batch, inputs, *, train):
        """'lead_mean' [batch, leads] predicted from 'segment' [batch, time, leads]."""
        return {"lead_mean": net.mean_head(net.encoder(batch["segment"], train=train))}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        target = batch["segment"].mean(axis=1)
        return {"lead_mean": jnp.mean((out["lead_mean"] - target) ** 2)}, {}, None


def _tiny(method: str, cache_dir: str, steps: int = 8):
    config = common.finish(common.base_config("runlocal", method=method))
    config.update_from_flattened_dict({
        "data.synthetic.num_patients": 24, "data.synthetic.records_per_patient": 2,
        "data.synthetic.cache_dir": cache_dir, "train.batch_size": 8, "train.num_steps": steps,
        "train.checkpoint_every": 4, "train.log_every": 1, "optim.lr": 1e-3})
    return config


@pytest.mark.usefixtures("unoptimized_xla")  # checked for flow, keys and a falling loss, not numbers
def test_a_registered_method_pretrains_through_the_loop(tmp_path):
    assert "toy_mean" in names()
    workdir = tmp_path / "run"
    last = loop.pretrain(_tiny("toy_mean", str(tmp_path / "cache")), str(workdir))

    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses = np.array([row["loss"] for row in rows])
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert np.isfinite(losses).all() and set(last) >= {"loss", "lead_mean"}
    np.testing.assert_allclose(losses, [row["lead_mean"] for row in rows])  # its one term, weight 1
    assert losses[-4:].mean() < losses[:4].mean()
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    assert ckpt.latest_step() == 8
    ckpt.close()
    _, _, variables = loop.restore_pretrained(str(workdir))
    assert set(variables["params"]) == {"encoder", "mean_head"}


def test_an_unknown_method_names_the_registered_ones():
    config = _tiny("nope", "/unused")
    with pytest.raises(UserError, match=r"unknown pretraining method 'nope'.*registered: cl, cpc, gl, hl"):
        loop.validate_config(config)
    with pytest.raises(ValueError, match="already registered"):
        register("cl")(ToyMean)
