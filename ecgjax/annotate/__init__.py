"""Continuous annotation of long ECG recordings (Kite et al. §5.3–5.4, Fig. 4–5).

windows     slide fixed windows over a recording and flag the ones that cannot be trusted
heart_rate  QRS detection and the automatic heart-rate labels of Weimann & Conrad (4 classes)
reference   per-window reference tracks (AF, heart rate) from MIT-BIH-style annotations
outputs     per-window CSV, WFDB annotation file and PNG plot of the tracks
run         windowed inference of any `predict_fn` over a recording or a folder of records
train_heads AF + heart-rate heads on one encoder (an ecgjax.downstream model), heart-rate targets from
            QRS detection (no manual labels)
apply       load a saved downstream model (annotation heads or a probe's) and annotate records with it
"""
