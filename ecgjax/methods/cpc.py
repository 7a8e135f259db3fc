"""CPC (001): frames of a ResNet encoder, attention pooling over n_context consecutive frames, and
InfoNCE between the pooled context's prediction and the embedding of a future frame `offset`
frames later; negatives are other samples' futures (objective.cpc.num_negatives, 0 = all)."""
from __future__ import annotations

import jax.numpy as jnp

from ecgjax.methods.registry import Method, active, register
from ecgjax.models import heads
from ecgjax.models.products import Dense
from ecgjax.objectives import cpc


@register("cpc")
class CPC(Method):
    terms = ("cpc",)

    def loader_views(self, objective):
        return ("cpc",)  # 'context' [batch, n_context, frame, leads] + 'future' [batch, frame, leads]

    def device_views(self, objective):
        return ()  # frames stay unaugmented

    def example_batch(self, config, batch_size):
        frame = int(round(config.objective.cpc.frame_s * config.data.fs))
        leads = config.model.encoder.in_leads
        return {"context": jnp.zeros((batch_size, config.objective.cpc.n_context, frame, leads)),
                "future": jnp.zeros((batch_size, frame, leads)),
                "patient": jnp.zeros((batch_size,), jnp.int32)}

    def heads(self, net):
        c = net.model.cpc
        return {"context_pool": heads.AttentionPooling(d_model=c.d_model, layers=c.depth, heads=c.heads,
                                                       dtype=net.dtype),
                "predictor": Dense(net.encoder.feature_dim, dtype=net.dtype)}

    def forward(self, net, batch, inputs, *, train):
        """'cpc_prediction', 'cpc_future' [batch, features]: all frames go through the encoder at once."""
        context, future = batch["context"], batch["future"]
        b, n_ctx = context.shape[:2]
        frames = jnp.concatenate([context.reshape((b * n_ctx,) + context.shape[2:]), future])
        h = net.encoder(frames, train=train)
        h_context, h_future = h[: b * n_ctx].reshape(b, n_ctx, -1), h[b * n_ctx:]
        return {"cpc_prediction": net.predictor(net.context_pool(h_context, train=train)),
                "cpc_future": h_future}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        if not active(config.objective, "cpc"):
            return {}, {}, None
        n_neg = config.objective.cpc.num_negatives or None
        return {"cpc": cpc.cpc_infonce(out["cpc_prediction"], out["cpc_future"], num_negatives=n_neg,
                                       rng=rng)}, {}, None
