"""ecgjax.models."""
