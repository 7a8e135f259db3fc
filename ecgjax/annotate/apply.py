"""Apply a saved, fine-tuned model to recordings: the library behind experiments/annotate.py.

A model directory is a downstream TrainedModel (ecgjax.downstream.model), trained with the
annotation heads (ecgjax.annotate.train_heads: AF + heart rate) or by a probe on any task. It
gives `.predict(windows [N, T, leads]) -> dict`, `.fs`, `.leads`, `.window_s`, `.band_hz` (the
band-pass it was trained with) and `.output_classes` (names of the columns of vector outputs).
"""
from __future__ import annotations

import numpy as np

from ecgjax.annotate import run, train_heads
from ecgjax.downstream.model import TrainedModel

# Output names of an AF probability: the annotation heads', and a probe's 'afib' task.
# The WFDB file gets '(AFIB' / '(N' rhythm changes from the first one the model has.
AF_OUTPUTS = (train_heads.AF_KEY, "afib", "AFIB")


def annotate_with_model(model: TrainedModel, input_path: str, output_dir: str, *, window_s: float | None = None,
                        stride_s: float | None = None, batch_size: int = 64, lead=None,
                        qrs_heart_rate: bool = True, qrs_fs: float | None = None,
                        plot: bool = True) -> dict[str, str]:
    """Slides `model` over one WFDB record or a folder of them; writes <name>.csv / .ecgjax / .png.

    window_s defaults to the model's training window, stride_s to window_s (no overlap). A ResNet
    (global average pooling) takes any window length; a ViT needs its own. The WFDB rhythm labels
    use the AF threshold chosen on validation data at training (af_threshold), else 0.5. Returns
    {record name: 'ok' or why it was skipped}.
    """
    window_s = float(window_s or model.window_s)
    stride_s = float(stride_s or window_s)
    af_key = next((key for key in AF_OUTPUTS if key in model.output_names), None)
    return run.annotate_path(input_path, output_dir, model.predict, model_fs=model.fs,
                             model_leads=list(model.leads), window_s=window_s, stride_s=stride_s,
                             batch_size=batch_size, lead=lead, af_threshold=af_threshold(model),
                             qrs_heart_rate=qrs_heart_rate, qrs_fs=qrs_fs,
                             band_hz=model.band_hz, af_key=af_key, plot=plot,
                             class_names=model.output_classes or None)


def af_threshold(model: TrainedModel, default: float = 0.5) -> float:
    """The AF threshold train_heads chose on its validation windows (history[-1]['val']), else `default`."""
    val = model.history[-1].get("val", {}) if model.history else {}
    threshold = val.get("af_threshold")
    return float(threshold) if threshold is not None and np.isfinite(threshold) else default
