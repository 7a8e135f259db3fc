"""benchmarks/vs_pytorch.py compares like with like: for every shape it times, the PyTorch reference
(benchmarks/torch_reference.py) has ecgjax's parameter count and the FLOPs of its matrix products and
convolutions (forward + backward). Checked at batch 8 from shapes alone (no compilation, no timing);
skipped where PyTorch (the `bench` extra) is not installed."""
import math
import os
import sys

import jax
import pytest

pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))

import vs_pytorch  # noqa: E402
from ecgjax.train import cost as cost_lib, loop  # noqa: E402


def _both(name: str, **edit_reference):
    """(ecgjax's params, FLOPs), (the reference's) for a shape at batch 8; `edit_reference` changes
    the reference's projection head only."""
    config = vs_pytorch.without_augmentation(vs_pytorch.load_shape(name))
    if name in vs_pytorch.FINETUNE_SHAPES:  # the probe's step: encoder + label head
        ours, ref = vs_pytorch.JaxFinetuneStep(config, False, batch_size=8), vs_pytorch.TorchFinetuneStep(config, 8)
        return (ours.params, ours.matmul_flops()), (ref.params, ref.matmul_flops())
    config.train.batch_size = 8
    trainer = loop.Trainer(config)
    state, batch = cost_lib.abstract_inputs(trainer)
    ours = (sum(math.prod(p.shape) for p in jax.tree.leaves(state.params)),
            vs_pytorch.step_matmul_flops(trainer, state, batch))
    config.model.projection.update(edit_reference)
    ref = vs_pytorch.TorchStep(config)
    return ours, (ref.params, ref.matmul_flops())


@pytest.mark.parametrize("name", list(vs_pytorch.SHAPES))
def test_reference_has_ecgjax_params_and_flops(name):
    (params, flops), (ref_params, ref_flops) = _both(name)
    assert params == ref_params
    # Both are 2 x the multiply-adds of the same products, from shapes: equal for the ViTs; the
    # ResNet's padded convolutions place their SAME padding differently (one edge tap, ~0.02%).
    assert flops == pytest.approx(ref_flops, rel=vs_pytorch.FLOPS_TOLERANCE)


def test_a_different_reference_is_caught():
    """A reference whose projection is 64 units wider (0.14% of the FLOPs) fails both checks."""
    (params, flops), (ref_params, ref_flops) = _both("cl-p125", hidden=576)
    assert params != ref_params
    assert flops != pytest.approx(ref_flops, rel=vs_pytorch.FLOPS_TOLERANCE)


def test_the_timed_runners_take_steps():
    """What the benchmark times, one step each at batch 8 (the ViT and the fine-tune shape): each
    runner trains (a finite loss), the precision wrappers included."""
    import numpy as np

    config = vs_pytorch.load_shape("gl-p125")
    config.train.batch_size = 8
    runners = [vs_pytorch.TorchStep(config), vs_pytorch.WithPrecision(lambda: vs_pytorch.JaxStep(config), "float32"),
               vs_pytorch.WithPrecision(lambda: vs_pytorch.TorchStep(config), torch_precision="bf16"),
               vs_pytorch.TorchFinetuneStep(vs_pytorch.load_shape("ft-resnet18"), 8)]
    for runner in runners:
        assert np.isfinite(runner.run(1)), runner
