"""HL (003 eq. 3): MAE reconstruction + patient-level + sample-level contrastive terms on a ViT1D.

The encoder sees only the unmasked patches of every query view (one mask per view and sample);
the same encodings feed the decoder (the anchor's reconstruction) and, mean-pooled, the
projection head of the contrastive terms.
"""
from __future__ import annotations

from ecgjax.methods import generative
from ecgjax.methods.contrastive import Contrastive
from ecgjax.methods.registry import register


@register("hl")
class Hybrid(Contrastive):
    terms = (*Contrastive.terms, "reconstruction")

    def checks(self, config):
        return [generative.vit_check(config, self.name), *super().checks(config)]

    def heads(self, net):
        return {**super().heads(net), "decoder": generative.decoder_head(net)}

    def inputs(self, config, rng, batch_size):
        return generative.masks(config, rng, len(self.query_views(config.objective)) * batch_size)

    def encode(self, net, x, inputs, *, train):
        """Adds 'reconstruction' [batch, N, patch * leads] of the anchor (the first batch rows)."""
        keep = inputs["keep_indices"]
        tokens = net.encoder(x, train=train, keep_indices=keep, return_tokens=True)
        b = x.shape[0] // len(self.query_views(net.objective))
        return tokens.mean(axis=1), {"reconstruction": net.decoder(tokens[:b], keep[:b], train=train)}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        parts, metrics, keys = super().losses(config, out, batch, inputs, model=model, extra=extra, rng=rng)
        return {**generative.reconstruction_parts(config, out, batch, inputs), **parts}, metrics, keys
