"""GL (003): MAE with random patch masking, L1 reconstruction of the masked patches of the anchor.

The MAE pieces here (decoder head, masks, reconstruction term, the ViT check) are shared with HL.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ecgjax.methods.registry import Method, active, register
from ecgjax.models.registry import build_mae_decoder
from ecgjax.models.vit1d import num_patches
from ecgjax.objectives import mae


def vit_check(config: ml_collections.ConfigDict, method: str) -> tuple[bool, str]:
    name = config.model.encoder.name
    return (name == "vit1d", f"objective.method={method!r} reconstructs masked patches and needs "
                             f"model.encoder.name='vit1d', not {name!r}")


def decoder_head(net: nn.Module) -> nn.Module:
    """The MAE decoder of `net`'s encoder config (003: half its width, see ecgjax.config)."""
    dec = net.model.decoder
    return build_mae_decoder({
        **net.model.encoder.to_dict(), "in_leads": net.leads, "dtype": jnp.dtype(net.dtype).name,
        "decoder_width": dec.width, "decoder_depth": dec.depth, "decoder_heads": dec.heads})


def masks(config: ml_collections.ConfigDict, rng: jax.Array, rows: int) -> dict:
    """One independent MAE mask per row: keep_indices [rows, n_keep] (visible patches), mask
    [rows, N] True = masked. The first batch rows are the anchor's, the one reconstructed."""
    enc = config.model.encoder
    keep, mask = mae.random_masking(rng, rows, num_patches(enc.num_samples, enc.patch),
                                    config.objective.mask_ratio)
    return {"keep_indices": keep, "mask": mask}


def reconstruction_parts(config: ml_collections.ConfigDict, out: dict, batch: dict, inputs: dict) -> dict:
    """{'reconstruction': L1 on the anchor's masked patches} when its weight is non-zero."""
    if not active(config.objective, "reconstruction"):
        return {}
    b = batch["patient"].shape[0]
    return {"reconstruction": mae.reconstruction_loss(
        out["reconstruction"], batch["segment"], inputs["mask"][:b], config.model.encoder.patch,
        lead_mask=batch.get("lead_mask"))}


@register("gl")
class Generative(Method):
    terms = ("reconstruction",)

    def checks(self, config):
        return [vit_check(config, self.name)]

    def heads(self, net):
        return {"decoder": decoder_head(net)}

    def inputs(self, config, rng, batch_size):
        return masks(config, rng, batch_size)

    def forward(self, net, batch, inputs, *, train):
        """'reconstruction' [batch, N, patch * leads] of the anchor 'segment' [batch, time, leads]."""
        keep = inputs["keep_indices"]
        tokens = net.encoder(batch["segment"], train=train, keep_indices=keep, return_tokens=True)
        return {"reconstruction": net.decoder(tokens, keep, train=train)}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        return reconstruction_parts(config, out, batch, inputs), {}, None
