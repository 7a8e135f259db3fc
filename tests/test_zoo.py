"""The released models as a user meets them: they load (checksums hold), a shared record embeds
as recorded when the model was released, and ptbxl-superclass reproduces its figure on a fixed
subset of PTB-XL test fold 9 read from the WFDB files through the Python API."""
from __future__ import annotations

import json
import numpy as np
import pytest

import ecgjax
from ecgjax import zoo
from ecgjax.zoo import evaluation


def _figures(name: str) -> dict:
    return json.loads((zoo.verified_path(name) / "figures.json").read_text())


def _released(kind: str | None = None) -> list[str]:
    return [n for n in zoo.names() if kind is None or zoo.entry(n)["kind"] == kind]


@pytest.mark.parametrize("name", _released())
def test_a_released_model_loads_with_its_card(name):
    model = ecgjax.load(f"zoo:{name}")
    card = (zoo.verified_path(name) / zoo.CARD).read_text()
    assert "## How it was built" in card and "Rebuild:" in card and "## Known limits" in card
    assert model.fs > 0 and model.leads


@pytest.mark.usefixtures("float32_products")  # released with float32 products: compared with them
@pytest.mark.parametrize("name", [n for n in _released() if "reference_embedding" in _figures(n)])
def test_a_shared_record_embeds_as_when_released(name, ptbxl_dir):
    reference = _figures(name)["reference_embedding"]
    signals, leads = evaluation.read_ptbxl_records(ptbxl_dir, [reference["record"]])
    features = ecgjax.load(f"zoo:{name}").embed(signals, fs=100, leads=leads)[0, :16]
    # Same float32 program on another x86 CPU: XLA may pick other vector widths and summation
    # orders in the convolutions and the mean over windows, moving features by ~1e-6 relative;
    # 1e-4 (with an absolute floor for features near 0) leaves a wide margin and still fails on
    # any change of weights or preprocessing, which moves them by 1e-2 or more.
    np.testing.assert_allclose(features, reference["features"], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif("ptbxl-superclass" not in zoo.names(), reason="ptbxl-superclass not released")
def test_ptbxl_superclass_reproduces_its_figures_on_a_fold9_subset(ptbxl_dir):
    figures = _figures("ptbxl-superclass")["figures"]
    now = evaluation.subset_figures(ecgjax.load("zoo:ptbxl-superclass"), ptbxl_dir)
    # The same records and program as at release: equal but for CPU rounding (see above).
    assert now["macro_auroc"] == pytest.approx(figures["subset"]["macro_auroc"], abs=1e-3)
    # And the subset agrees with the card's whole-fold figure: over 300 records a macro AUROC's
    # sampling spread is about 0.015 (the card's CI over 2,146 records is ~0.008 wide each side);
    # 0.05 is over 3 of those spreads, and a broken model (chance: 0.5) is far outside it.
    assert now["macro_auroc"] == pytest.approx(figures["metrics"]["macro_auroc"], abs=0.05)


@pytest.mark.skipif("telemetry-af-hr" not in zoo.names(), reason="telemetry-af-hr not released")
def test_annotate_runs_the_released_annotator_on_a_wfdb_record(mitdb_dir, tmp_path):
    from tests import entry_points

    result = entry_points.run("experiments/annotate.py", "--checkpoint=zoo:telemetry-af-hr",
                              f"--input={mitdb_dir / '202'}", f"--output={tmp_path}", "--noplot",
                              "--noqrs_heart_rate")
    assert result.returncode == 0, result.stderr
    import pandas as pd

    tracks = pd.read_csv(tmp_path / "202.csv")
    assert len(tracks) == 226 and tracks["valid"].all()  # 30 min in 8 s windows, none bad
    # 202 is a third AF: the card reports sensitivity 0.99-1.0 and specificity 0.97 on it at its
    # threshold (held out and as shipped), so well over a fifth of its windows are flagged and
    # well under all of them.
    flagged = (tracks["af_prob"] >= figures_threshold()).mean()
    assert 0.2 < flagged < 0.6


def figures_threshold() -> float:
    return _figures("telemetry-af-hr")["figures"]["af_threshold"]
