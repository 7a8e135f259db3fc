"""The embedded synthetic cohort (ecgjax.data.synthetic) as a source: --input is a spec such as
'patients=400,records=4,seed=0' (or generate_cohort's kwargs), not a path; missing keys take
defaults. One item per patient: `generate_patient_records` is deterministic per (seed, patient),
so workers generate their own shards and the store equals `generate_cohort(**cohort)`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ecgjax.data.record import ECGRecord
from ecgjax.data.sources.registry import Source, register
from ecgjax.data.synthetic import DEFAULT_NUM_PATIENTS, generate_patient_records
from ecgjax.errors import UserError

# --input of the synthetic source: spec keys -> `generate_patient_records` arguments.
SYNTHETIC_KEYS = {"patients": "num_patients", "records": "records_per_patient", "seed": "seed", "fs": "fs",
                  "duration_s": "duration_s"}


def parse_synthetic_spec(spec: str | None) -> dict[str, Any]:
    """'patients=400,records=4,seed=0' (the command line's --input) -> generate_cohort kwargs
    (missing keys take defaults)."""
    kwargs: dict[str, Any] = {"num_patients": DEFAULT_NUM_PATIENTS, "records_per_patient": 4, "seed": 0}
    if spec:
        for part in filter(None, spec.split(",")):
            key, _, value = (s.strip() for s in part.partition("="))
            try:
                number = float(value)
            except ValueError:
                number = None
            if key not in SYNTHETIC_KEYS or number is None:
                raise UserError(f"--input={spec}: bad synthetic spec part {part!r}; expected KEY=NUMBER "
                                f"with KEY in {', '.join(SYNTHETIC_KEYS)}, e.g. 'patients=400,records=4,seed=0'")
            kwargs[SYNTHETIC_KEYS[key]] = int(number) if number.is_integer() else number
    return kwargs


def synthetic_cohort(input) -> dict[str, Any]:
    """The synthetic source's `input` as generate_cohort kwargs: a spec string (the command line's)
    is parsed, kwargs are taken as they are."""
    return dict(input) if isinstance(input, Mapping) else parse_synthetic_spec(input)


def format_synthetic_spec(cohort: Mapping[str, Any]) -> str:
    """generate_cohort kwargs -> 'patients=400,records=4,seed=0': how a synthetic store records its input."""
    def text(value) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"  # no '1e+06' patients

    return ",".join(f"{key}={text(cohort[name])}" for key, name in SYNTHETIC_KEYS.items() if name in cohort)


@register("synthetic")
class Synthetic(Source):
    layout = "a synthetic cohort spec such as 'patients=400,records=4,seed=0'"
    needs_input = False

    def items(self, input, *, sampling_rate: int) -> list[dict]:
        cohort = synthetic_cohort(input)
        per_patient = {k: v for k, v in cohort.items() if k != "num_patients"}
        return [{"patient_index": i, **per_patient} for i in range(cohort["num_patients"])]

    def read(self, item) -> list[ECGRecord]:
        return generate_patient_records(**item)

    def item_name(self, item) -> tuple[str, str]:
        return f"patient {item['patient_index']}", f"synthetic:{item}"

    def describe_input(self, input) -> str:
        return format_synthetic_spec(synthetic_cohort(input))
