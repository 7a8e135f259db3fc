"""CL (003): patient-level + sample-level InfoNCE on projected embeddings, plus 002's intersegment
and interlead terms; with objective.moco.enabled, PCLR (000): the positives are keys of a momentum
encoder and the negatives a queue of past keys (ecgjax.methods.momentum).
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ecgjax.data.leads import LIMB_LEADS
from ecgjax.methods import momentum
from ecgjax.methods.registry import Method, active, register
from ecgjax.models import heads
from ecgjax.objectives import contrastive, moco


def lead_group_view(x, group: str):
    """x [batch, time, 12] with one lead group zeroed: 'limb_only' keeps I..aVF, 'precordial_only' V1..V6."""
    limb = jnp.arange(x.shape[-1]) < len(LIMB_LEADS)
    return x * (limb if group == "limb_only" else ~limb).astype(x.dtype)


@register("cl")
class Contrastive(Method):
    terms = ("patient", "sample", "intersegment", "interlead")

    def loader_views(self, objective):
        return ("segment", "patient_segment")  # the step draws 'segment_aug' from the 'segment' crop

    def device_views(self, objective):
        """'segment' and 'segment_aug' are two augmentations of one crop (the sample-level pair),
        'patient_segment' one of the patient's other crop; with a MoCo queue 'segment_aug' only
        feeds the sample term."""
        views = [("segment", "segment")]
        if not objective.moco.enabled or active(objective, "sample"):
            views.append(("segment_aug", "segment"))
        return (*views, ("patient_segment", "patient_segment"))

    def query_views(self, objective: ml_collections.ConfigDict) -> list[str]:
        """Views the online encoder embeds, in the order of the forward pass's 'z'.

        In-batch contrast embeds the anchor, its second augmentation and the patient's other
        segment; with a MoCo queue the positives are momentum-encoder keys, so only the anchor.
        The interlead term (002) adds the anchor through its limb and its precordial leads only.
        """
        views = ["segment"] if objective.moco.enabled else ["segment", "segment_aug", "patient_segment"]
        if active(objective, "interlead"):
            views += ["limb_only", "precordial_only"]
        return views

    def checks(self, config):
        mc = config.objective.moco
        return [(not mc.enabled or mc.queue_size >= config.train.batch_size,
                 f"objective.moco.queue_size={mc.queue_size} is smaller than the batch "
                 f"({config.train.batch_size})")]

    def heads(self, net):
        proj = net.model.projection
        return {"projection": heads.ProjectionHead(
            hidden_dims=(proj.hidden, proj.hidden), out_dim=proj.out, dtype=net.dtype)}

    def encode(self, net, x, inputs: dict, *, train: bool) -> tuple:
        """(features [views * batch, D], other outputs) of the stacked query views x."""
        return net.encoder(x, train=train), {}

    def forward(self, net, batch, inputs, *, train):
        """'z' [views, batch, projection.out] of `query_views` (plus what `encode` adds)."""
        views = self.query_views(net.objective)
        anchor = batch["segment"]
        x = jnp.concatenate([batch[v] if v in batch else lead_group_view(anchor, v) for v in views])
        features, out = self.encode(net, x, inputs, train=train)
        z = net.projection(features, train=train)
        return {**out, "z": z.reshape((len(views), anchor.shape[0]) + z.shape[1:])}

    def losses(self, config, out, batch, inputs, *, model, extra, rng):
        """aux: the momentum keys {view: [batch, proj]} for the queue (None without MoCo)."""
        obj = config.objective
        z = dict(zip(self.query_views(obj), out["z"]))
        t = obj.temperature
        parts, metrics, keys = {}, {}, None
        if obj.moco.enabled:
            keys = momentum.keys(model, extra, batch, self.key_views(obj), rng)
            for name, view in (("patient", "patient_segment"), ("sample", "segment_aug")):
                if active(obj, name):
                    parts[name] = moco.moco_infonce(
                        z["segment"], keys[view], extra["queue"], t, q_patient=batch["patient"],
                        queue_patient=extra["queue_patient"])
            # 000 tracks NT-Xent between the positive pairs alongside the queue InfoNCE.
            metrics["nt_xent"] = contrastive.nt_xent(z["segment"], keys["patient_segment"], t)
        else:
            if active(obj, "sample"):
                parts["sample"] = contrastive.sample_contrastive(z["segment"], z["segment_aug"], t)
            if active(obj, "patient"):
                parts["patient"] = contrastive.patient_contrastive(
                    z["segment"], z["patient_segment"], batch["patient"], t)
            if active(obj, "intersegment"):
                parts["intersegment"] = contrastive.intersegment_contrastive(
                    z["segment"], z["patient_segment"], batch["patient"], t)
        if active(obj, "interlead"):
            parts["interlead"] = contrastive.interlead_contrastive(
                jnp.stack([z["limb_only"], z["precordial_only"]], axis=1), t)
        return parts, metrics, keys

    def key_views(self, objective) -> list[str]:
        """Views the momentum encoder embeds: the patient positive, and the sample one if used."""
        return ["patient_segment"] + (["segment_aug"] if active(objective, "sample") else [])

    def init_extra(self, config, params, batch_stats):
        if not config.objective.moco.enabled:
            return {}
        return momentum.init(config.objective.moco, config.model.projection.out, params, batch_stats)

    def update_extra(self, config, extra, params, batch_stats, batch, aux):
        if not config.objective.moco.enabled:
            return extra
        return momentum.update(config.objective.moco.momentum, extra, params, batch_stats,
                               aux["patient_segment"], batch["patient"])
