"""Apply a saved, fine-tuned model to recordings: the library behind experiments/annotate.py.

A model directory is either an `AnnotationModel` (ecgjax.annotate.train_heads: AF + heart-rate
heads) or a classifier saved by ecgjax.eval.classifier (`load_classifier`). Both expose
`.predict(windows [N, T, leads]) -> dict`, `.fs`, `.leads`, `.window_s`; an AnnotationModel also
names the band-pass it was trained with (`.band_hz`).
"""
from __future__ import annotations

import os

from ecgjax.annotate import run, train_heads
from ecgjax.data.errors import ECGInputError

# Output names of an AF probability: the AnnotationModel's, and an eval Classifier's 'afib' task.
# The WFDB file gets '(AFIB' / '(N' rhythm changes from the first one the model has.
AF_OUTPUTS = (train_heads.AF_KEY, "afib", "AFIB")


def load_model(directory: str):
    """The model saved in `directory` (AnnotationModel or eval Classifier)."""
    if not os.path.isdir(directory):
        raise ECGInputError(directory, "no such model directory")
    if train_heads.is_annotation_model_dir(directory):
        return train_heads.load_annotation_model(directory)
    from ecgjax.eval.classifier import load_classifier  # the eval module's format, loaded on demand
    return load_classifier(directory)


def annotate_with_model(model, input_path: str, output_dir: str, *, window_s: float | None = None,
                        stride_s: float | None = None, batch_size: int = 64, lead=None,
                        qrs_heart_rate: bool = True, qrs_fs: float | None = None,
                        plot: bool = True) -> dict[str, str]:
    """Slides `model` over one WFDB record or a folder of them; writes <name>.csv / .ecgjax / .png.

    window_s defaults to the model's training window, stride_s to window_s (no overlap). A ResNet
    (global average pooling) takes any window length; a ViT needs its own. Returns
    {record name: 'ok' or why it was skipped}.
    """
    window_s = float(window_s or model.window_s)
    stride_s = float(stride_s or window_s)
    outputs = tuple(getattr(model, "output_names", ()))
    af_key = next((key for key in AF_OUTPUTS if key in outputs), None)
    return run.annotate_path(input_path, output_dir, model.predict, model_fs=float(model.fs),
                             model_leads=list(model.leads), window_s=window_s, stride_s=stride_s,
                             batch_size=batch_size, lead=lead, qrs_heart_rate=qrs_heart_rate, qrs_fs=qrs_fs,
                             band_hz=getattr(model, "band_hz", None),
                             af_key=af_key, plot=plot, class_names=getattr(model, "output_classes", None))
