"""Metrics against hand-computed values, degenerate inputs, bootstrap and seed aggregation."""
import math
import warnings

import numpy as np
import pytest

from ecgjax.eval import metrics as m, thresholds


def test_auroc_and_auprc_hand_computed():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # Pairs (pos, neg): (.35>.1) (.35<.4) (.8>.1) (.8>.4) -> 3/4.
    assert m.auroc(y, s) == pytest.approx(0.75)
    # Ranked: .8(+) .4(-) .35(+) .1(-): AP = (1/1 + 2/3) / 2.
    assert m.auprc(y, s) == pytest.approx((1 + 2 / 3) / 2)


def test_f1_and_fmax_binary():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.45])
    # threshold .5: predicted {0, 2}: tp=1 fp=1 fn=2 -> F1 = 2/(2+1+2) = 0.4
    assert m.f1_at_threshold(y, s) == pytest.approx(0.4)
    # threshold .4: predicted {0,1,2,4}: tp=3 fp=1 fn=0 -> 6/7, the best over thresholds.
    assert m.fmax(y, s) == pytest.approx(6 / 7)


def test_sample_centric_fmax_multilabel():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[0.9, 0.2], [0.3, 0.8], [0.7, 0.1]])
    # t=.7: preds [1,0],[0,1],[1,0]: precision 1 on all three; recall 1, 1, .5 -> R=5/6
    # F = 2*1*(5/6)/(1+5/6) = 10/11, and no threshold beats it (t=.1 gives P=2/3... lower).
    assert m.fmax(y, s) == pytest.approx(10 / 11)


def test_criteria_is_sum_of_four_auroc_and_four_auprc():
    # 003 App. C Table 4 row 0.
    per_task = {"MI": {"auroc": .7653, "auprc": .5147}, "STTC": {"auroc": .7573, "auprc": .4614},
                "CD": {"auroc": .7443, "auprc": .4073}, "HYP": {"auroc": .7811, "auprc": .2922}}
    assert m.criteria(per_task) == pytest.approx(4.7236)
    del per_task["HYP"]
    assert math.isnan(m.criteria(per_task))


def test_macro_f1_cinc2017_mean_over_classes():
    y = np.array([0, 0, 1, 1, 2, 3])
    pred = np.array([0, 1, 1, 1, 2, 2])
    per = m.per_class_f1(y, pred, labels=[0, 1, 2, 3])
    # class 0: tp1 fp0 fn1 -> 2/3; class1: tp2 fp1 fn0 -> 4/5; class2: tp1 fp1 fn0 -> 2/3; class3: 0
    assert per == pytest.approx({0: 2 / 3, 1: 0.8, 2: 2 / 3, 3: 0.0})
    assert m.macro_f1(y, pred, labels=[0, 1, 2, 3]) == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 4)
    assert m.macro_f1(y, pred, labels=[0, 1, 2]) == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)


def test_challenge_f1_is_the_mean_over_n_a_o_by_class_name():
    """CinC 2017's score by hand: F1 of N, A, O (not ~), whatever order the classes come in."""
    true = ["N", "N", "N", "A", "A", "O", "O", "~", "~"]
    said = ["N", "N", "~", "A", "N", "O", "A", "~", "O"]
    # N: tp 2, fp 1 (an A), fn 1 (called ~) -> 4/6; A: tp 1 fp 1 fn 1 -> 1/2; O: 1/2; ~: 1/2
    for names in (("N", "A", "O", "~"), ("~", "O", "A", "N")):
        y, pred = (np.array([names.index(c) for c in seq]) for seq in (true, said))
        assert m.challenge_f1(y, pred, names) == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
        scores = np.eye(4)[pred]  # one-hot scores: argmax gives `pred`
        out = m.compute_metrics("multiclass", y, scores, class_names=names)
        assert out["challenge_f1"] == pytest.approx(0.5555556, abs=1e-6)
        assert out["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.5 + 0.5) / 4)
        tuned = thresholds.tuned_metrics("multiclass", y, scores, np.zeros(4), names)
        assert tuned["challenge_f1_tuned"] == pytest.approx(out["challenge_f1"])
    other = m.compute_metrics("multiclass", y, scores, class_names=["a", "b", "c", "d"])
    assert "challenge_f1" not in other


def test_compute_metrics_each_task_type():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 4))
    s = np.clip(y * 0.6 + rng.random((40, 4)) * 0.5, 0, 1)
    out = m.compute_metrics("multilabel", y, s, class_names=list(m.CRITERIA_TASKS))
    assert out["criteria"] == pytest.approx(sum(out[f"auroc/{t}"] + out[f"auprc/{t}"] for t in m.CRITERIA_TASKS))
    assert out["macro_auroc"] == pytest.approx(m.macro_auroc(y, s))
    binary = m.compute_metrics("binary", y[:, 0], s[:, 0])
    assert set(binary) == {"auroc", "auprc", "f1", "fmax"}
    logits = rng.normal(size=(30, 4))
    labels = np.arange(30) % 4
    multi = m.compute_metrics("multiclass", labels, logits, class_names=["N", "A", "O", "~"])
    assert multi["macro_f1"] == pytest.approx(np.mean([multi[f"f1/{c}"] for c in "NAO~"]))
    assert 0 <= multi["macro_auroc"] <= 1
    reg = m.compute_metrics("regression", [1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
    assert reg["mae"] == pytest.approx(0.5)
    assert reg["r2"] == pytest.approx(1 - (0.25 + 0 + 1) / 2)
    with pytest.raises(ValueError):
        m.compute_metrics("ranking", y, s)


def test_degenerate_inputs_give_nan_with_warning():
    with pytest.warns(m.DegenerateMetricWarning):
        assert math.isnan(m.auroc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.warns(m.DegenerateMetricWarning):
        out = m.compute_metrics("binary", [0, 0, 0], [0.1, 0.2, 0.3])
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(m.DegenerateMetricWarning):
        assert math.isnan(m.r2([2.0, 2.0], [1.0, 3.0]))
    y = np.array([[0, 1], [0, 0], [0, 1]])
    with pytest.warns(m.DegenerateMetricWarning):
        assert m.macro_auroc(y, np.array([[.1, .9], [.2, .1], [.3, .8]])) == pytest.approx(1.0)


def test_bootstrap_ci_contains_point_and_is_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = y * 0.5 + rng.random(200)
    ci = m.bootstrap_ci(m.auroc, y, s, n=200, seed=3)
    assert ci["lower"] < ci["point"] < ci["upper"]
    assert ci["n_valid"] == 200
    assert m.bootstrap_ci(m.auroc, y, s, n=200, seed=3) == ci


def test_bootstrap_patient_level_skips_single_class_resamples():
    # Two patients, each with one class only: half of all resamples hold a single class.
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([.1, .2, .3, .7, .8, .9])
    patients = np.array([7, 7, 7, 9, 9, 9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped resamples must not warn or raise
        ci = m.bootstrap_ci(m.auroc, y, s, n=100, seed=0, patient_ids=patients)
    assert 0 < ci["n_valid"] < 100
    assert ci["lower"] == ci["upper"] == 1.0  # whole patients travel together


def test_aggregate_runs_mean_and_sample_std():
    runs = [{"auroc": 0.8, "auprc": 0.5}, {"auroc": 0.9, "auprc": float("nan")}, {"auroc": 0.7}]
    agg = m.aggregate_runs(runs)
    assert agg["auroc"]["mean"] == pytest.approx(0.8)
    assert agg["auroc"]["std"] == pytest.approx(0.1)  # ddof=1
    assert agg["auprc"] == {"mean": 0.5, "std": pytest.approx(float("nan"), nan_ok=True), "n": 1}
