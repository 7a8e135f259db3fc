"""Continuous annotation of long ECG recordings (Kite et al. §5.3–5.4, Fig. 4–5).

windows     flag the windows that cannot be trusted (the windows themselves: ecgjax.signal.windows)
heart_rate  the automatic heart-rate labels of Weimann & Conrad (4 classes) of every window of a
            recording (QRS detection and the classes: ecgjax.signal.heart_rate)
reference   per-window reference tracks (AF, heart rate) from MIT-BIH-style annotations
outputs     per-window CSV, WFDB annotation file and PNG plot of the tracks
run         windowed inference of any `predict_fn` over a recording or a folder of records
train_heads AF + heart-rate heads on one encoder (an ecgjax.downstream model), heart-rate targets from
            QRS detection (no manual labels)
training_records  PTB-XL records for the heads: AF, the rhythms mistaken for AF, the rest; leads; beats
crops       random crops of short records, labelled from the beats inside each crop
sampling    fresh, augmented single-lead crop batches every training step
operating_point   AF threshold for a sensitivity (chosen on validation data) and its rates
apply       load a saved downstream model (annotation heads or a probe's) and annotate records with it
"""
