"""Optimizers and learning-rate schedules from ml-collections configs.

Two schedules from the papers:
  - 'warmup_cosine' (000, Table 2): linear warmup from lr/10, cosine decay to `final_lr`.
  - 'constant' (003): a fixed lr (1e-4) and weight decay (1e-5) throughout.
"""
from __future__ import annotations

import optax


def make_schedule(optim, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step."""
    if optim.schedule == "constant":
        return optax.constant_schedule(optim.lr)
    if optim.schedule == "warmup_cosine":
        warmup = min(int(optim.warmup_steps), max(total_steps - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            init_value=optim.lr * optim.get("warmup_init_fraction", 0.1),
            peak_value=optim.lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=optim.get("final_lr", 0.0),
        )
    raise ValueError(f"unknown learning-rate schedule {optim.schedule!r} (constant | warmup_cosine)")


def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with the configured schedule and optional global-norm gradient clipping."""
    if optim.lr <= 0 or optim.lr > 1.0:
        raise ValueError(f"optim.lr={optim.lr} is not a sensible learning rate (0 < lr <= 1)")
    schedule = make_schedule(optim, total_steps)
    chain = []
    if optim.get("grad_clip", 0.0):
        chain.append(optax.clip_by_global_norm(optim.grad_clip))
    chain.append(optax.adamw(schedule, b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                             eps=optim.get("eps", 1e-8), weight_decay=optim.weight_decay))
    return optax.chain(*chain), schedule
