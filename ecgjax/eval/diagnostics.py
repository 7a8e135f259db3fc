"""Representation diagnostics (000 §5.1): a 2-D embedding plot and patient identification.

000 Fig. 1 shows a t-SNE of 200 ECGs from 10 held-out patients forming one tight cluster
per patient; `patient_identification_accuracy` puts a number on that picture: the share of
segments whose nearest other segment (cosine distance) comes from the same patient.
"""
from __future__ import annotations

import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # drawn off-screen: no backend chosen, no display needed
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

_MAX_LEGEND_ENTRIES = 20


def project_2d(embeddings, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2] with sklearn PCA or t-SNE (perplexity capped below N / 3)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"need embeddings [N >= 3, D], got shape {x.shape}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca",
                    random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def embedding_plot(embeddings, labels, path, method: str = "pca", *, title: str | None = None,
                   seed: int = 0) -> pathlib.Path:
    """Scatter of the 2-D projection of embeddings [N, D], coloured by labels [N] (class or patient).

    Writes a PNG to `path` and returns it. A legend is drawn for up to 20 distinct labels.
    """
    labels = np.asarray(labels)
    points = project_2d(embeddings, method, seed)
    if labels.shape[0] != points.shape[0]:
        raise ValueError("labels and embeddings differ in length")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    distinct = np.unique(labels)
    cmap = matplotlib.colormaps["tab20" if distinct.size > 10 else "tab10"]
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for k, value in enumerate(distinct):
        chosen = labels == value
        ax.scatter(points[chosen, 0], points[chosen, 1], s=10, color=cmap(k % cmap.N), label=str(value))
    if distinct.size <= _MAX_LEGEND_ENTRIES:
        ax.legend(fontsize=6, markerscale=1.5, loc="best")
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.set_title(title or f"{method.upper()} of {points.shape[0]} embeddings")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def patient_identification_accuracy(embeddings, patient_ids) -> float:
    """Share of segments whose nearest neighbour (cosine, itself excluded) is the same patient.

    embeddings: [N, D]; patient_ids: [N]. Only segments whose patient has at least two
    segments are scored (others cannot be identified); NaN if there are none.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    patient_ids = np.asarray(patient_ids)
    if x.shape[0] != patient_ids.shape[0]:
        raise ValueError("patient_ids and embeddings differ in length")
    _, inverse, counts = np.unique(patient_ids, return_inverse=True, return_counts=True)
    scored = counts[inverse] >= 2
    if not scored.any():
        return float("nan")
    # kneighbors() without a query excludes each point from its own neighbours.
    nearest = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x).kneighbors(
        return_distance=False)[:, 0]
    same = patient_ids[nearest] == patient_ids
    return float(same[scored].mean())
