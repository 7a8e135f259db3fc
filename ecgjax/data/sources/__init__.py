"""Corpora ingest can read, one module each, found by name (`get(--source)`, registry.py).

wfdb       any folder of WFDB records
ptbxl      PTB-XL's official layout (tables + records100/500), split by strat_fold
code15     CODE-15% (exams.csv + HDF5 parts), streamed
cinc2017   PhysioNet/CinC 2017 (REFERENCE.csv + WFDB records), split 75/5/20 % as in 001
synthetic  the embedded synthetic cohort, from a spec

Adding a source: write `ecgjax/data/sources/<name>.py` with a `Source` subclass under
`@register("<name>")` (its `layout`, `items`, `read`, and `item_name` / `default_split` where the
defaults do not fit), and import it below.
"""
from ecgjax.data.sources import cinc2017, code15, ptbxl, synthetic, wfdb  # noqa: F401  (registers them)
from ecgjax.data.sources.registry import Source, get, names, register  # noqa: F401
