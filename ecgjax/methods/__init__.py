"""Self-supervised pretraining methods, one object each, found by name (see registry.py)."""
from ecgjax.methods.registry import Method, active, get, names, register, weight  # noqa: F401
from ecgjax.methods import contrastive, cpc, generative, heart_rate, hybrid  # noqa: F401,E402  (register the built-ins)
