"""ecgjax: self-supervised ECG foundation models in JAX.

    import ecgjax
    model = ecgjax.load("zoo:ptbxl-superclass")   # a released model, run directory or saved folder
    model.predict(x, fs=500, leads=[...])          # see ecgjax.api
"""

__version__ = "0.1.0"


def load(spec: str):
    """A released model (zoo:NAME), pretraining run or saved model folder as an ecgjax.api.Model."""
    from ecgjax import api  # imported on use: `import ecgjax` stays free of JAX

    return api.load(spec)
