"""Encoders from configs, and first-layer surgery for a different number of input leads.

Config fields (ml_collections.ConfigDict or dict; all but `name` optional):
  name: 'vit1d' | 'resnet{18,34,50,101,152}[x2]' (000) | 'resnet{18,34,50}v2' (001)
  num_samples (2500), patch (125), depth (4), width (512), heads (width // 64), mlp_ratio (4.0),
  dropout (0.0), drop_path (0.0: stochastic depth), stem ('linear' | 'conv') -- ViT
  decoder_width (width // 2, 003), decoder_depth (2), decoder_heads (heads) -- MAE decoder
  chan_start (Table 1 of 000, or 64 for v2)      -- ResNets
  in_leads (12): leads the encoder is initialised with (see `example_input`)
  dual_stream (False): limb / precordial streams, each a copy of the base encoder (needs 12 leads)
  dtype ('float32' | 'bfloat16'): compute dtype; param_dtype ('float32').
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ecgjax.models.dual_stream import DualStreamEncoder
from ecgjax.models.resnet1d import kite_resnet, resnet_v2
from ecgjax.models.vit1d import MAEDecoder, ViT1D, num_patches

_RESNET_NAME = re.compile(r"resnet(\d+)(x2)?(v2)?")
# Name of the first convolution in every encoder; adapt_input_leads rewrites these kernels.
INPUT_CONV = "input_conv"


def _get(config, key: str, default: Any = None) -> Any:
    value = config.get(key, default)
    return default if value is None else value


def _dtypes(config) -> dict:
    return {"dtype": jnp.dtype(_get(config, "dtype", "float32")),
            "param_dtype": jnp.dtype(_get(config, "param_dtype", "float32"))}


def _build_single(config) -> nn.Module:
    name = str(_get(config, "name")).lower()
    if name == "vit1d":
        width = int(_get(config, "width", 512))
        return ViT1D(num_samples=int(_get(config, "num_samples", 2500)),
                     patch=int(_get(config, "patch", 125)), width=width,
                     depth=int(_get(config, "depth", 4)), heads=int(_get(config, "heads", width // 64)),
                     mlp_ratio=float(_get(config, "mlp_ratio", 4.0)),
                     dropout=float(_get(config, "dropout", 0.0)),
                     drop_path=float(_get(config, "drop_path", 0.0)),
                     stem=str(_get(config, "stem", "linear")), **_dtypes(config))
    match = _RESNET_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown encoder name {name!r}: use 'vit1d', 'resnet18'..'resnet152', "
                         "'resnet18x2'.., or 'resnet18v2'/'resnet34v2'/'resnet50v2'")
    depth, doubled, v2 = int(match[1]), bool(match[2]), bool(match[3])
    chan_start = _get(config, "chan_start")
    if v2:
        if depth not in (18, 34, 50) or doubled:
            raise ValueError(f"001 defines ResNet-18v2/34v2/50v2 only, got {name!r}")
        return resnet_v2(depth, chan_start, **_dtypes(config))
    if depth not in (18, 34, 50, 101, 152):
        raise ValueError(f"000 defines ResNet18/34/50/101/152 only, got {name!r}")
    if chan_start is None and doubled:
        chan_start = 2 * kite_resnet(depth).stem_features
    return kite_resnet(depth, chan_start, **_dtypes(config))


def build_encoder(config) -> nn.Module:
    """Encoder `(x [batch, time, leads], *, train) -> [batch, feature_dim]` from a config."""
    if not _get(config, "dual_stream", False):
        return _build_single(config)
    limb, precordial = _build_single(config), _build_single(config)
    return DualStreamEncoder(limb, precordial, features=limb.feature_dim, **_dtypes(config))


def build_mae_decoder(config) -> MAEDecoder:
    """MAE decoder matching a ViT config (003: width half the encoder's)."""
    width = int(_get(config, "width", 512))
    patch = int(_get(config, "patch", 125))
    return MAEDecoder(num_patches=num_patches(int(_get(config, "num_samples", 2500)), patch),
                      patch_dim=patch * int(_get(config, "in_leads", 12)),
                      width=int(_get(config, "decoder_width", width // 2)),
                      depth=int(_get(config, "decoder_depth", 2)),
                      heads=int(_get(config, "decoder_heads", _get(config, "heads", width // 64))),
                      mlp_ratio=float(_get(config, "mlp_ratio", 4.0)),
                      dropout=float(_get(config, "dropout", 0.0)), **_dtypes(config))


def example_input(config, batch: int = 1) -> jnp.ndarray:
    """Zeros [batch, num_samples, in_leads] for `model.init` (or jax.eval_shape)."""
    return jnp.zeros((batch, int(_get(config, "num_samples", 2500)), int(_get(config, "in_leads", 12))),
                     jnp.float32)


def adapt_input_leads(params, from_leads: int, to_leads: int | Sequence[int]):
    """Rewrites the first-layer kernels of an encoder trained on `from_leads` input leads.

    - 1 -> n (to_leads an int): the single-lead filters are duplicated for each of the n leads
      and scaled by 1/n (001), so an ECG whose leads are all equal gives the same output.
    - n -> subset (to_leads a sequence of lead columns, or an int m < n meaning columns 0..m-1):
      the kernel keeps only those input channels.
    Works on a params tree or a variables dict {'params': ...}; every kernel named `input_conv`
    with `from_leads` input channels is rewritten (both streams of a dual-stream encoder).
    """
    if isinstance(to_leads, (int, np.integer)):
        if from_leads == 1:
            columns = None
        elif to_leads <= from_leads:
            columns = list(range(int(to_leads)))
        else:
            raise ValueError(f"cannot widen a {from_leads}-lead input layer to {to_leads} leads; "
                             "only 1 -> n duplication is defined")
    else:
        columns = [int(c) for c in to_leads]
        if not columns or min(columns) < 0 or max(columns) >= from_leads:
            raise ValueError(f"lead columns {columns} out of range for {from_leads} input leads")

    def rewrite(kernel):  # kernel [width, in_leads, out_channels]
        if columns is None:
            return jnp.tile(kernel, (1, int(to_leads), 1)) / int(to_leads)
        return kernel[:, jnp.asarray(columns), :]

    flat = traverse_util.flatten_dict(params)
    found = False
    for path, value in flat.items():
        if len(path) >= 2 and path[-2] == INPUT_CONV and path[-1] == "kernel":
            if value.shape[1] != from_leads:
                raise ValueError(f"{'/'.join(map(str, path))} has {value.shape[1]} input leads, "
                                 f"not {from_leads}")
            flat[path] = rewrite(value)
            found = True
    if not found:
        raise ValueError(f"no '{INPUT_CONV}' kernel in the given params")
    return traverse_util.unflatten_dict(flat)
