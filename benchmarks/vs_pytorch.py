"""ecgjax's pretraining step against the same network and objective in PyTorch eager, in one run.

    pip install -e ".[bench]"
    python benchmarks/vs_pytorch.py                      # every shape below, 10 steps x 5 repeats
    python benchmarks/vs_pytorch.py --shapes=gl-p125 --steps=5 --repeats=3

One training step = forward + backward + optimiser (global-norm clip, AdamW) on a batch already in
memory. The ecgjax side is the project's own compiled step (`ecgjax.train.loop.Trainer`, as in
benchmarks/throughput.py), timed twice: as users run it (with the device-side augmentation of
`config.data.augmentation`) and without augmentation, which is the same work as the PyTorch
reference (benchmarks/torch_reference.py; it augments nothing). The ratio is PyTorch's step time
over ecgjax's: above 1, ecgjax is faster.

Same network: the parameter counts are printed and must be equal. Same work: the FLOPs of the
matrix products and convolutions of forward + backward, counted for ecgjax by walking the step's
jaxpr (every dot_general and conv_general_dilated, from its shapes) and for PyTorch by
torch.utils.flop_counter.FlopCounterMode, must agree within 0.1% (XLA's own cost analysis of the
compiled step is printed beside them; it also counts element-wise work).

Timing: the two frameworks alternate in one process, `--repeats` blocks of `--steps` steps each
(the first of a pair alternates), after `--warmup` steps each; a short pause between blocks lets
OpenMP's spinning threads of one framework go idle before the other starts. Reported: the median
step time of each, the median and range of the per-repeat ratios, and the load average before and
after, so a run on a loaded machine can be recognised. On a loaded machine PyTorch's OpenMP threads
spin-wait for each other while the scheduler runs other work (a GL p125 step at load 11: 1.6-9 s
instead of 0.6 s), so there run it with OMP_WAIT_POLICY=passive; the result records the setting.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time

import jax
import numpy as np
from absl import flags

from ecgjax import cli
from ecgjax.errors import UserError
from ecgjax.kernels import onednn
from ecgjax.machine import describe as describe_machine
from ecgjax.sweep.grid import load_config_file
from ecgjax.train import cost as cost_lib, loop, mesh as mesh_lib, state as state_lib

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")

# name -> (config file, arg, what it is). The shapes of issue 27 and the ResNet18 users fine-tune most.
SHAPES = {
    "gl-p125": ("generative.py", "patch=125,depth=4,width=256,batch=128", "GL (MAE) ViT p125 d4 w256, batch 128"),
    "gl-p60": ("generative.py", "patch=60,depth=4,width=512,batch=32", "GL (MAE) ViT p60 d4 w512, batch 32"),
    "cl-p125": ("contrastive.py", "patch=125,depth=4,width=256,batch=64",
                "CL ViT p125 d4 w256, batch 64 (192 encoded views)"),
    "cl-resnet18": ("cl_resnet.py", "", "CL + interlead ResNet18 (configs/cl_resnet.py), batch 128 (640 views)"),
    # The probe's fine-tune step (experiments/probe.py with configs/probe.py's defaults: the encoder
    # and a 5-label head trained on 2.5 s crops of 12 leads at 250 Hz, batch 64, AdamW lr 1e-3, wd 1e-4).
    "ft-resnet18": ("cl_resnet.py", "", "fine-tune step: ResNet18 (configs/cl_resnet.py) + 5-label head, "
                                        "2.5 s crops, batch 64"),
}
FINETUNE_SHAPES = {"ft-resnet18"}
FINETUNE_LABELS = ("NORM", "MI", "STTC", "CD", "HYP")

# The FLOP counts may differ by where SAME padding puts a convolution's edge taps (XLA: the odd one
# on the right; PyTorch: symmetric), ~0.02% for the ResNet; a 64-unit wider projection head is 0.14%.
FLOPS_TOLERANCE = 1e-3

_SHAPES = flags.DEFINE_list("shapes", list(SHAPES), f"Which shapes, of {', '.join(SHAPES)}.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per framework (interleaved).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per framework before the first block.")
_JSON = flags.DEFINE_string("json", "", "Also append each shape's result as a JSON line to this file.")


def load_shape(name: str):
    if name not in SHAPES:
        raise UserError(f"--shapes: unknown shape {name!r}{cli.closest(name, SHAPES)}; known: {', '.join(SHAPES)}")
    path, arg, _ = SHAPES[name]
    return load_config_file(os.path.join(CONFIGS, path), arg)


def without_augmentation(config):
    plain = config.copy_and_resolve_references()
    plain.data.augmentation = {}
    return plain


# ------------------------------------------------------------------------------ ecgjax side

class JaxStep:
    """The project's compiled step for a config, its state and a device-resident batch."""

    def __init__(self, config):
        self.trainer = loop.Trainer(config)
        self.state = self.trainer.new_state()
        host = cost_lib.random_host_batch(config, config.train.batch_size)
        self.batch = mesh_lib.shard_batch(host, self.trainer.mesh)
        self.compiled = self.trainer.train_step.lower(self.state, self.batch).compile()
        self.metrics = None

    @property
    def params(self) -> int:
        return state_lib.count_params(self.state.params)

    def xla_flops(self) -> float:
        return cost_lib.compiled_cost(self.compiled)["flops"]

    def matmul_flops(self) -> float:
        return step_matmul_flops(self.trainer, self.state, self.batch)

    def run(self, steps: int) -> float:
        for _ in range(steps):
            self.state, self.metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(self.metrics)
        return float(self.metrics["loss"])


def step_matmul_flops(trainer, state, batch) -> float:
    """FLOPs of the step's dot_generals and convolutions, counted from its jaxpr's shapes (state
    and batch may be abstract: cost.abstract_inputs). Traced with float32 products, where every
    product is a dot_general or convolution; where they run on oneDNN (ecgjax.models.products)
    they are the same products, each a custom call of the same shapes."""
    with jax.default_matmul_precision("float32"):
        return _jaxpr_matmul_flops(jax.make_jaxpr(trainer.train_step)(state, batch).jaxpr)


def _sub_jaxprs(params):
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(v, "eqns"):
                yield v
            elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                yield v.jaxpr


def _jaxpr_matmul_flops(jaxpr) -> float:
    """2 x multiply-adds of every dot_general (batch x M x K x N) and convolution (output elements x
    input features per group x kernel taps that meet a sample), through nested jaxprs (a scan's body
    times its length)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        shapes = [v.aval.shape for v in eqn.invars]
        if name == "dot_general":
            (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
            free = [d for i, d in enumerate(shapes[1]) if i not in rhs_contract and i not in rhs_batch]
            total += 2.0 * math.prod(shapes[0]) * math.prod(free)
        elif name == "conv_general_dilated":
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
            taps = shapes[1][rhs_spec[1]] * math.prod(shapes[1][d] for d in rhs_spec[2:])
            # A strided convolution's input gradient runs over the cotangent dilated by the stride
            # (lhs_dilation): only 1 / stride of its taps meet a sample, the others zeros.
            useful = taps / math.prod(eqn.params["lhs_dilation"])
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * useful
        times = eqn.params.get("length", 1) if name == "scan" else 1
        total += times * sum(_jaxpr_matmul_flops(sub) for sub in _sub_jaxprs(eqn.params))
    return total


class JaxFinetuneStep:
    """The downstream step a probe fine-tunes with (ecgjax.downstream.step.train_step), its state and
    a batch of crops [batch, window_s * fs, leads] with 0/1 targets of each label."""

    def __init__(self, config, augment: bool, batch_size: int | None = None):
        from ecgjax.downstream import model as model_lib, step as step_lib
        from ecgjax.downstream.heads import Head
        from ecgjax.eval.recipe import settings

        optim, protocol = settings.default_optim(), settings.default_protocol()
        self.fs, window_s = float(config.data.fs), float(protocol.window_s)
        length = int(round(window_s * self.fs))
        encoder = {**dict(config.model.encoder), "num_samples": length}
        self.heads = (Head("labels", "multilabel", FINETUNE_LABELS),)
        model = model_lib.new_model(encoder, self.heads, fs=self.fs, leads=[f"lead{i}" for i in range(encoder["in_leads"])],
                                    window_s=window_s)
        params = model.variables["params"]
        optimizer = step_lib.Optimizer(optim.lr, optim.weight_decay, warmup_steps=20, decay_steps=10_000)
        self.tx, self.step = step_lib.train_step(model.encoder_config, self.heads, optimizer, with_batch_stats=True,
                                                 augmentation=protocol.augmentation.to_dict() if augment else None,
                                                 fs=self.fs)
        self.state = (params, model.variables["batch_stats"], self.tx.init(params))  # step's first three
        rng, batch = np.random.default_rng(config.seed), batch_size or optim.batch_size
        self.x = jax.device_put(rng.standard_normal((batch, length, encoder["in_leads"]), np.float32))
        self.targets = {"labels": jax.device_put((rng.random((batch, len(FINETUNE_LABELS))) < 0.3).astype(np.float32))}
        self.key, self.losses = jax.random.PRNGKey(0), None

    @property
    def params(self) -> int:
        return state_lib.count_params(self.state[0])

    def _args(self):
        return (*self.state, self.x, self.targets, self.key)

    def xla_flops(self) -> float:
        return cost_lib.compiled_cost(self.step.lower(*self._args()).compile())["flops"]

    def matmul_flops(self) -> float:
        with jax.default_matmul_precision("float32"):  # as step_matmul_flops
            return _jaxpr_matmul_flops(jax.make_jaxpr(self.step)(*self._args()).jaxpr)

    def run(self, steps: int) -> float:
        for _ in range(steps):
            *self.state, self.losses = self.step(*self._args())
        jax.block_until_ready(self.losses)
        return float(self.losses["labels"])


# ------------------------------------------------------------------------------ PyTorch side

class TorchFinetuneStep:
    """The reference ResNet with a linear head, BCE over the labels, AdamW (no clip, as the probe)."""

    def __init__(self, config, batch_size: int | None = None):
        import torch
        import torch_reference
        from ecgjax.eval.recipe import settings

        torch.manual_seed(config.seed)
        self.torch = torch
        optim, protocol = settings.default_optim(), settings.default_protocol()
        length = int(round(float(protocol.window_s) * float(config.data.fs)))
        encoder = torch_reference.ResNet(config.model.encoder.chan_start, config.model.encoder.in_leads)
        self.model = torch.nn.Sequential(encoder, torch.nn.Linear(encoder.feature_dim, len(FINETUNE_LABELS)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=optim.weight_decay)
        g, batch = torch.Generator().manual_seed(config.seed), batch_size or optim.batch_size
        self.x = torch.randn((batch, length, config.model.encoder.in_leads), generator=g)
        self.y = (torch.rand((batch, len(FINETUNE_LABELS)), generator=g) < 0.3).float()
        self.loss = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _loss(self):
        return self.torch.nn.functional.binary_cross_entropy_with_logits(self.model(self.x), self.y)

    def matmul_flops(self) -> float:
        return backward_flops(self.model, self._loss)

    def run(self, steps: int) -> float:
        for _ in range(steps):
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss()
            loss.backward()
            self.opt.step()
            self.loss = loss.detach()
        return float(self.loss)


class TorchStep:
    """The reference network of a config, its AdamW step and a batch."""

    def __init__(self, config):
        import torch
        import torch_reference

        torch.manual_seed(config.seed)
        self.torch = torch
        self.model = torch_reference.build(config)
        self.step = torch_reference.make_step(self.model, config)
        self.batch = torch_reference.batch_of(config, config.train.batch_size)
        self.loss = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def matmul_flops(self) -> float:
        return backward_flops(self.model, lambda: self.model(self.batch))

    def run(self, steps: int) -> float:
        for _ in range(steps):
            self.loss = self.step(self.batch)
        return float(self.loss)


def backward_flops(model, loss) -> float:
    """FlopCounterMode's count of forward + backward of `loss()` (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


_REGISTERED = []


def _register_cpu_attention_flops():
    """FlopCounterMode has formulas for the GPU attention kernels only; the CPU flash kernel gets
    the same ones. Its backward recomputes the scores (torch's formula counts that product); XLA
    keeps the probabilities from the forward pass, so the four gradient products are counted here,
    the work both must do."""
    if _REGISTERED:
        return
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    @fc.register_flop_formula([aten._scaled_dot_product_flash_attention_for_cpu])
    def _forward(q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(q, k, v)

    @fc.register_flop_formula([aten._scaled_dot_product_flash_attention_for_cpu_backward])
    def _backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        b, h, s_q, d = q
        return fc.sdpa_backward_flop_count(grad_out, q, k, v) - 2 * b * h * s_q * k[2] * d

    _REGISTERED.append(True)


# ------------------------------------------------------------------------------ the comparison

class WithPrecision:
    """A runner whose products run at another precision: JAX's default_matmul_precision for an
    ecgjax step (its programs are traced, and cached, per setting: the first run traces), or
    PyTorch's oneDNN fp32_precision ("bf16": fp32 matmuls and convolutions in bf16 on oneDNN)."""

    def __init__(self, make, jax_precision: str | None = None, torch_precision: str | None = None):
        self.jax_precision, self.torch_precision = jax_precision, torch_precision
        with self._set():
            self.runner = make()

    @contextlib.contextmanager
    def _set(self):
        if self.torch_precision is None:
            with jax.default_matmul_precision(self.jax_precision):
                yield
            return
        import torch

        settings = (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)
        before = [s.fp32_precision for s in settings]
        for s in settings:
            s.fp32_precision = self.torch_precision
        try:
            yield
        finally:
            for s, b in zip(settings, before):
                s.fp32_precision = b

    @property
    def params(self) -> int:
        return self.runner.params

    def run(self, steps: int) -> float:
        with self._set():
            return self.runner.run(steps)


def time_block(runner, steps: int) -> float:
    """Seconds per step of `steps` steps, after a pause that lets the other framework's threads idle."""
    time.sleep(0.3)
    start = time.perf_counter()
    runner.run(steps)
    return (time.perf_counter() - start) / steps


def compare(name: str, steps: int, repeats: int, warmup: int) -> dict:
    config = load_shape(name)
    if name in FINETUNE_SHAPES:
        make_ours, make_plain = (lambda: JaxFinetuneStep(config, True)), (lambda: JaxFinetuneStep(config, False))
        make_ref = lambda: TorchFinetuneStep(config)  # noqa: E731
    else:
        make_ours, make_plain = (lambda: JaxStep(config)), (lambda: JaxStep(without_augmentation(config)))
        make_ref = lambda: TorchStep(config)  # noqa: E731
    ours, plain, ref = make_ours(), make_plain(), make_ref()
    params = {"ecgjax": ours.params, "pytorch": ref.params}
    if params["ecgjax"] != params["pytorch"]:
        raise AssertionError(f"{name}: parameter counts differ: {params}")
    flops = {"ecgjax_jaxpr": plain.matmul_flops(), "pytorch_counter": ref.matmul_flops(),
             "ecgjax_xla_cost_analysis": plain.xla_flops(),
             "ecgjax_with_augmentation_xla_cost_analysis": ours.xla_flops()}
    flops_gap = flops["ecgjax_jaxpr"] / flops["pytorch_counter"] - 1
    if abs(flops_gap) > FLOPS_TOLERANCE:
        raise AssertionError(f"{name}: matmul/conv FLOPs differ by {flops_gap:.1%}: {flops}")
    runners = {"ecgjax": ours, "ecgjax_no_aug": plain, "pytorch": ref}
    if onednn.available():  # the products' two precisions on both sides (elsewhere both are float32)
        runners["ecgjax_float32"] = WithPrecision(make_ours, jax_precision="float32")
        runners["pytorch_bf16"] = WithPrecision(make_ref, torch_precision="bf16")
    for runner in runners.values():
        runner.run(warmup)
    load_before = os.getloadavg()[0]
    times = {k: [] for k in runners}
    order = list(runners)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            times[k].append(time_block(runners[k], steps))
    load_after = os.getloadavg()[0]
    ratio = [p / j for p, j in zip(times["pytorch"], times["ecgjax"])]
    ratio_plain = [p / j for p, j in zip(times["pytorch"], times["ecgjax_no_aug"])]
    more = {}
    if "ecgjax_float32" in times:
        for key, (num, den) in {"ratio_float32": ("pytorch", "ecgjax_float32"),
                                "ratio_both_bf16": ("pytorch_bf16", "ecgjax")}.items():
            pairs = [p / j for p, j in zip(times[num], times[den])]
            more.update({key: statistics.median(pairs), f"{key}_range": [min(pairs), max(pairs)]})
    return {
        "shape": name, "what": SHAPES[name][2], "machine": describe_machine(with_load=False),
        "load_average": [load_before, load_after], "steps": steps, "repeats": repeats,
        "params": params, "flops": flops, "flops_gap": flops_gap,
        "step_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "step_ms_all": {k: [round(1e3 * t, 1) for t in v] for k, v in times.items()},
        "ratio": statistics.median(ratio), "ratio_range": [min(ratio), max(ratio)],
        "ratio_no_aug": statistics.median(ratio_plain), "ratio_no_aug_range": [min(ratio_plain), max(ratio_plain)],
        **more, "products": "one bf16 pass on oneDNN (AMX)" if onednn.available() else "float32 (XLA)",
        "loss": {k: r.run(0) for k, r in runners.items()},
        "versions": {"jax": jax.__version__, "torch": ref.torch.__version__,
                     "torch_threads": ref.torch.get_num_threads(),
                     "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset")},
    }


def _ratio(r: dict, key: str) -> str:
    if key not in r:
        return "-"
    return f"{r[key]:.2f}x ({r[key + '_range'][0]:.2f}-{r[key + '_range'][1]:.2f})"


def row(r: dict) -> str:
    ms = r["step_ms"]
    return (f"| {r['what']} | {r['params']['ecgjax'] / 1e6:.2f} M | {r['flops']['ecgjax_jaxpr'] / 1e9:.1f} | "
            f"{ms['ecgjax']:.0f} | {ms['ecgjax_no_aug']:.0f} | {ms['pytorch']:.0f} | "
            f"**{r['ratio']:.2f}x** ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}) | "
            f"{_ratio(r, 'ratio_no_aug')} | {_ratio(r, 'ratio_float32')} | {_ratio(r, 'ratio_both_bf16')} | "
            f"{r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")


def main(argv):
    del argv
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("benchmarks/vs_pytorch.py needs PyTorch: pip install -e \".[bench]\"") from None
    names = [load_shape(n) and n for n in _SHAPES.value]  # unknown names fail before any compile
    print("machine:", describe_machine())
    rows = []
    for name in names:
        result = compare(name, _STEPS.value, _REPEATS.value, _WARMUP.value)
        print(json.dumps(result, indent=1))
        rows.append(row(result))
        if _JSON.value:
            with open(_JSON.value, "a") as f:
                f.write(json.dumps(result) + "\n")
    print("| shape | params | GFLOP matmul+conv / step | ecgjax ms (as run) | ecgjax ms (no aug) | PyTorch ms | "
          "PyTorch / ecgjax (as run) | PyTorch / ecgjax (no aug) | PyTorch / ecgjax with float32 products | "
          "PyTorch bf16 / ecgjax | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("machine:", describe_machine())


if __name__ == "__main__":
    cli.run(main)
