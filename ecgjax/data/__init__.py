"""ecgjax.data."""
