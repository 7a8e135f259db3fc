"""ecgjax.eval."""
