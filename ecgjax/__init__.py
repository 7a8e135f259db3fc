"""ecgjax: self-supervised ECG foundation models in JAX."""

__version__ = "0.1.0"
