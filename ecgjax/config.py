"""Pretraining config pieces: every `configs/*.py` `get_config(arg)` builds on `base_config`.

`arg` is a short string such as "patch=125,depth=4,width=512,runlocal" (the big_vision habit):
keys set encoder shape, `runlocal` shrinks everything to a 2-core CPU (a smoke run on the
synthetic cohort), `cpu` is the recipe for real pretraining on 2 CPU cores (under an hour on a
PTB-XL-sized store; benchmarks/ptbxl.md).
"""
from __future__ import annotations

import ml_collections

from ecgjax.cli import closest
from ecgjax.data import augment, synthetic
from ecgjax.errors import UserError

# What `arg` may set and how to parse it. Anything else goes through --config.a.b=v overrides.
_ARG_TYPES = {
    "patch": int, "depth": int, "width": int, "heads": int, "encoder": str, "method": str,
    "batch": int, "steps": int, "seed": int, "runlocal": bool, "store": str, "stem": str, "cpu": bool,
}

# `cpu`: the encoder and length that 2 CPU cores pretrain in under an hour (a conv-stem ViT
# p125 d4 w256, or a ResNet18 of 16 base channels, batch 128, 2400 steps: ~40 epochs of PTB-XL's
# 7.8 k training patients). Keys given beside `cpu` in `arg` win over these.
CPU_RECIPE = dict(patch=125, depth=4, width=256, batch=128, steps=2400, stem="conv")
CPU_CHAN_START = 16


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses "k=v,k2,k3=v3" into a ConfigDict; a bare key means True."""
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in _ARG_TYPES:
            raise UserError(f"config arg {key!r} (the part after ':' in --config=configs/NAME.py:{arg}) is unknown"
                            f"{closest(key, _ARG_TYPES)}; known: {', '.join(sorted(_ARG_TYPES))}")
        kind = _ARG_TYPES[key]
        if kind is bool:
            values[key] = value.strip().lower() not in ("0", "false", "no") if value else True
            continue
        try:
            values[key] = kind(value.strip())
        except ValueError:
            raise UserError(f"config arg {item.strip()!r} in --config=configs/NAME.py:{arg}: expected "
                            f"{key}=<{kind.__name__}>") from None
    return ml_collections.ConfigDict(values)


def vit_heads(width: ml_collections.FieldReference) -> ml_collections.FieldReference:
    """max(1, width // 64): 64-dimensional attention heads, as in ViT-B/L, following `width`.

    Written in FieldReference arithmetic (which has no max): for k = width // 64 the second term
    1 // (k + 1) is 1 when k = 0 and 0 otherwise.
    """
    k = width // 64
    return k + 1 // (k + 1)


def base_config(arg: str | None, *, method: str, encoder: str = "vit1d") -> ml_collections.ConfigDict:
    """Everything a pretraining run needs; method configs edit the parts that differ and end
    with `finish(c)`, which applies `runlocal` last so it shrinks whatever they chose."""
    defaults = dict(patch=125, depth=4, width=512, encoder=encoder, batch=256, steps=20_000,
                    seed=0, runlocal=False, cpu=False, store="", method=method, stem="linear")
    a = parse_arg(arg, **defaults)
    if a.cpu:
        if a.runlocal:
            raise UserError(f"config arg {arg!r}: 'cpu' (real pretraining on 2 cores) and 'runlocal' "
                             "(a smoke run) exclude each other")
        a = parse_arg(arg, **{**defaults, **CPU_RECIPE})
    c = ml_collections.ConfigDict()
    c.seed = a.seed
    c.arg = arg or ""
    # A network to start from instead of random weights (continued pretraining on another corpus):
    # a pretraining run, an exported encoder or a released one (zoo:NAME) of the same architecture.
    c.init_from = ""
    c.runlocal = a.runlocal
    c.cpu = a.cpu

    c.data = ml_collections.ConfigDict()
    # An ingested store directory (python -m ecgjax.data.ingest ...); empty: the embedded
    # synthetic cohort, built once into `synthetic.cache_dir`.
    c.data.store = a.store
    c.data.synthetic = ml_collections.ConfigDict(
        dict(num_patients=synthetic.DEFAULT_NUM_PATIENTS, records_per_patient=4, seed=0, cache_dir="~/.cache/ecgjax")
    )
    # Derived values below are FieldReferences of these, so an override such as
    # --config.data.segment_s=5 or --config.model.encoder.width=128 carries to them.
    c.data.fs = ml_collections.FieldReference(250.0)
    c.data.segment_s = ml_collections.FieldReference(10.0)
    c.data.split = "train"
    c.data.num_workers = 2
    # name -> params of ecgjax.data.augment (prob, and the transform's keywords), applied on the
    # device inside the train step; each augmented view gets an independent draw. {} = none.
    c.data.augmentation = ml_collections.ConfigDict(augment.DEFAULT_AUGMENTATION)

    c.model = ml_collections.ConfigDict()
    width = ml_collections.FieldReference(a.width)
    num_samples = (c.data.get_ref("fs") * c.data.get_ref("segment_s")).to_int()
    c.model.encoder = ml_collections.ConfigDict(dict(
        name=a.encoder, patch=a.patch, depth=a.depth, width=width, heads=vit_heads(width), stem=a.stem,
        mlp_ratio=4, dropout=0.0, num_samples=num_samples, in_leads=12, chan_start=64, dual_stream=False,
    ))
    c.model.projection = ml_collections.ConfigDict(dict(hidden=512, out=128))
    # MAE decoder: half the encoder width (003 RQ1), set here and not tied to encoder.width, so an
    # encoder-width override changes that key alone; its heads follow its own width.
    decoder_width = ml_collections.FieldReference(a.width // 2)
    c.model.decoder = ml_collections.ConfigDict(dict(width=decoder_width, depth=2, heads=vit_heads(decoder_width)))
    c.model.cpc = ml_collections.ConfigDict(dict(d_model=512, depth=3, heads=8))

    c.objective = ml_collections.ConfigDict()
    c.objective.method = a.method
    c.objective.temperature = 0.1
    c.objective.mask_ratio = 0.75
    c.objective.weights = ml_collections.ConfigDict(dict(
        patient=1.0, sample=1.0, reconstruction=1.0, cpc=1.0, interlead=0.0, intersegment=0.0,
    ))
    c.objective.moco = ml_collections.ConfigDict(dict(enabled=False, queue_size=38912, momentum=0.999))
    # 001: n_context consecutive frames, `offset` frames skipped, then the future frame; negatives
    # are other samples' futures (0 = all of the batch).
    c.objective.cpc = ml_collections.ConfigDict(dict(n_context=4, frame_s=1.0, offset=2, num_negatives=0))

    # 003: constant lr 1e-4, weight decay 1e-5 for every stage.
    c.optim = ml_collections.ConfigDict(dict(
        schedule="constant", lr=1e-4, weight_decay=1e-5, warmup_steps=0, final_lr=1e-6,
        warmup_init_fraction=0.1, grad_clip=1.0,
    ))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=a.batch, num_steps=a.steps, log_every=50, checkpoint_every=1000,
        keep_checkpoints=3, bf16=False, num_devices=0,
    ))
    return c


def finish(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    if c.runlocal:
        apply_runlocal(c)
    if c.cpu:
        apply_cpu(c)
    return c


def apply_cpu(c: ml_collections.ConfigDict) -> None:
    """The optimisation of the `cpu` recipe, after the method's own choices: warm-up then cosine
    (a constant 1e-4 does not converge in 2400 steps), in-process loading (2 worker processes
    take cores from the step on a 2-core host: benchmarks/RESULTS.md "Host input path")."""
    resnet = c.model.encoder.name != "vit1d"
    if resnet:
        c.model.encoder.chan_start = CPU_CHAN_START
    c.optim.update(dict(schedule="warmup_cosine", lr=1e-3 if resnet else 5e-4, warmup_steps=100))
    c.data.num_workers = 0


def apply_runlocal(c: ml_collections.ConfigDict) -> None:
    """CPU-scale: a few minutes on 2 cores, same code paths as the full run."""
    c.data.synthetic.num_patients = 96
    c.data.synthetic.records_per_patient = 3
    c.data.num_workers = 0
    enc = c.model.encoder
    if enc.name == "vit1d":
        enc.width = min(enc.width, 64)
        enc.depth = min(enc.depth, 2)
        enc.heads = 2
        c.model.decoder.width = enc.width // 2
        c.model.decoder.depth = 1
        c.model.decoder.heads = 2
    else:
        enc.chan_start = min(enc.chan_start, 8)
    c.model.projection.hidden = 64
    c.model.projection.out = 32
    c.model.cpc.d_model = 64
    c.model.cpc.depth = 1
    c.model.cpc.heads = 2
    c.objective.moco.queue_size = min(c.objective.moco.queue_size, 256)
    c.optim.lr = max(c.optim.lr, 3e-4)
    c.train.batch_size = 32
    c.train.num_steps = 1000
    c.train.log_every = 10
    c.train.checkpoint_every = 250
