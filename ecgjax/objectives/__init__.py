"""ecgjax.objectives."""
