"""An encoder with named heads, built from configs, with pretrained encoder weights grafted in.

Variables: {'params': {'encoder': ..., 'heads': {head name: ...}}, ['batch_stats': {'encoder': ...}]}.
Jitted functions are cached per architecture, so every seed and model of one shape compiles once.
"""
from __future__ import annotations

import functools
import json
from typing import Sequence

import jax
import numpy as np

from ecgjax.data.leads import CANONICAL_LEADS
from ecgjax.downstream.batches import batched_apply
from ecgjax.downstream.heads import Head, head_outputs
from ecgjax.models import registry
from ecgjax.models.heads import EncoderWithHeads, MultiHead


def config_dict(config) -> dict:
    """A registry config as a plain dict (from a ConfigDict or a mapping)."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def config_key(config) -> str:
    """A hashable, order-independent spelling of a config (cache key of compiled functions)."""
    return json.dumps(config_dict(config), sort_keys=True)


def build(encoder_config, heads: Sequence[Head]) -> EncoderWithHeads:
    return EncoderWithHeads(registry.build_encoder(config_dict(encoder_config)), head_outputs(heads))


def init_variables(encoder_config, heads: Sequence[Head], encoder_variables: dict | None = None,
                   seed: int = 0) -> dict:
    """Variables (numpy) of encoder + new heads; the encoder from `encoder_variables`
    ({'params', ['batch_stats']} of the encoder alone) or random when None."""
    model = build(encoder_config, heads)
    example = registry.example_input(config_dict(encoder_config), batch=2)
    variables = jax.jit(lambda k: model.init(k, example, train=False))(jax.random.PRNGKey(seed))
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    for collection, tree in (encoder_variables or {}).items():
        variables[collection] = {**variables.get(collection, {}), "encoder": tree}
    return variables


def encoder_part(variables: dict) -> dict:
    """The encoder's own variables {'params', ['batch_stats']} out of a model's."""
    return {collection: tree["encoder"] for collection, tree in variables.items() if "encoder" in tree}


@functools.lru_cache(maxsize=64)
def _compiled_logits(config_json: str, outputs: tuple):
    model = EncoderWithHeads(registry.build_encoder(json.loads(config_json)), outputs)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def compiled_logits(encoder_config, heads: Sequence[Head]):
    """Jitted (variables, x [B, T, leads]) -> {head name: [B, k] logits}, evaluation mode."""
    return _compiled_logits(config_key(encoder_config), head_outputs(heads))


@functools.lru_cache(maxsize=64)
def _compiled_encoder(config_json: str):
    encoder = registry.build_encoder(json.loads(config_json))
    return jax.jit(lambda variables, x: encoder.apply(variables, x, train=False))


def compiled_encoder(encoder_config):
    """Jitted (encoder variables, x [B, T, leads]) -> [B, D] pooled features, evaluation mode."""
    return _compiled_encoder(config_key(encoder_config))


@functools.lru_cache(maxsize=64)
def compiled_heads(outputs: tuple):
    """Jitted (heads params, features [B, D]) -> {head name: [B, k] logits}."""
    heads = MultiHead(outputs)
    return jax.jit(lambda params, features: heads.apply({"params": params}, features))


def encoder_features(encoder_config, encoder_variables: dict | None, x: np.ndarray, *,
                     batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """Pooled features [N, D] of windows x [N, T, leads] (frozen encoder; random with `seed`
    when `encoder_variables` is None)."""
    if encoder_variables is None:
        encoder_variables = encoder_part(init_variables(encoder_config, (), None, seed))
    features = compiled_encoder(encoder_config)
    x = np.asarray(x, np.float32)
    return batched_apply(lambda chunk: features(encoder_variables, chunk), x, min(batch_size, len(x)))


def adapt_encoder(encoder_config: dict, variables: dict | None, leads: Sequence[str],
                  lead_adaptation: str = "select"):
    """Fits the encoder's first layer to `leads`; returns (config, variables, input leads).

    - encoder trained on 12 leads, fewer leads given: 'select' keeps those input channels of the
      first-layer kernel (input [.., len(leads)]); 'zero' keeps all 12 (absent leads fed as 0).
    - encoder trained on 1 lead, n given: filters duplicated n times and scaled by 1/n (001).
    A random encoder (variables None) is simply built for the leads.
    """
    config = dict(encoder_config)
    from_leads = int(config.get("in_leads") or 12)
    leads = tuple(leads)
    if lead_adaptation == "zero" and from_leads == 12:
        leads = CANONICAL_LEADS
    if variables is not None and from_leads != len(leads):
        if from_leads == 1:
            params = registry.adapt_input_leads(variables["params"], 1, len(leads))
        elif from_leads == 12 and lead_adaptation == "select":
            params = registry.adapt_input_leads(variables["params"], 12,
                                                [CANONICAL_LEADS.index(lead) for lead in leads])
        else:
            raise ValueError(f"cannot adapt a {from_leads}-lead encoder to leads {leads}")
        variables = {**variables, "params": params}
    config["in_leads"] = len(leads)
    return config, variables, leads
