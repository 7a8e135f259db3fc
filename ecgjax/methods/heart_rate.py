"""Heart-rate pretext (001): classify each crop as bradycardia (< 60 bpm), normal, tachycardia
(> 100 bpm) or noise (no heart rate found), with labels from a QRS detector, not from a human.

The loader labels each 'segment' crop from the beats of its record (ecgjax.data.beats, detected
once per store), counting beats in the crop extended by 1 s at both ends as 001 does; the encoder's
pooled features go through one linear layer to the 4 classes; the loss is their cross-entropy.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from ecgjax.methods.registry import Method, active, register, segment_batch
from ecgjax.models.products import Dense
from ecgjax.signal.heart_rate import HEART_RATE_CLASSES


@register("hr")
class HeartRate(Method):
    terms = ("heart_rate",)

    def loader_views(self, objective):
        return ("segment", "heart_rate")  # 'segment' [B, T, 12] + 'heart_rate_class' [B] int32

    def label_classes(self):
        return {"heart_rate_class": len(HEART_RATE_CLASSES)}

    def example_batch(self, config, batch_size):
        return {**segment_batch(config, batch_size, ("segment",)),
                "heart_rate_class": jnp.zeros((batch_size,), jnp.int32)}

    def heads(self, net):
        return {"heart_rate_head": Dense(self.label_classes()["heart_rate_class"], dtype=net.dtype)}

    def forward(self, net, batch, inputs, *, train):
        """'heart_rate_logits' [batch, 4] of the anchor 'segment'."""
        return {"heart_rate_logits": net.heart_rate_head(net.encoder(batch["segment"], train=train))}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        if not active(config.objective, "heart_rate"):
            return {}, {}, None
        logits, labels = out["heart_rate_logits"].astype(jnp.float32), batch["heart_rate_class"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        accuracy = (logits.argmax(-1) == labels).mean()
        return {"heart_rate": loss}, {"heart_rate_accuracy": accuracy}, None
