"""ecgjax.train."""
