"""Rhythm-labelled training records beside PTB-XL: CinC 2017 and MIT-BIH pieces (on the real files
in ../shared), the batches that mix them, the reference rhythm groups the AF track is judged by, and
fine-tuning an annotation model further."""
from __future__ import annotations

import collections

import jax
import numpy as np
import pytest

from ecgjax.annotate import reference, rhythm_records, sampling, train_heads
from ecgjax.annotate.training_records import AF, CONFOUNDER, OTHER, RecordSet
from ecgjax.data.readers import read_annotations
from ecgjax.data.sources.cinc2017 import read_cinc2017_reference
from ecgjax.signal.heart_rate import heart_rate_from_beats

FS = 100.0


def test_cinc_pieces_keep_the_labels_and_cut_whole_pieces(cinc2017_dir):
    labels = read_cinc2017_reference(cinc2017_dir)
    chosen = [next(r for r, c in labels.items() if c == want) for want in "NAO~"]
    pieces = rhythm_records.load_cinc_records(str(cinc2017_dir), chosen, fs=FS)
    assert pieces.leads == ("I",) and pieces.signals.shape[1:] == (1000, 1)
    by_record = collections.Counter(pieces.ecg_ids.tolist())
    assert set(by_record) == {int(r.lstrip("A")) for r in chosen[:3]}          # '~' is left out
    for record, label in zip(chosen[:3], "NAO"):
        rows = pieces.ecg_ids == int(record.lstrip("A"))
        assert set(pieces.group[rows]) == {rhythm_records.CINC_GROUPS[label]}
        assert all(("OTHER_RHYTHM" in c) == (label == "O") for c, r in zip(pieces.codes, rows) if r)
    # Beats come from QRS detection, so a piece has a heart rate a person could have.
    bpm = [heart_rate_from_beats(b, pieces.beat_fs, np.array([0]), 2500)[0] for b in pieces.beats]
    assert np.nanmin(bpm) > 30 and np.nanmax(bpm) < 220


def test_mitdb_pieces_are_labelled_by_the_reference_rhythm(mitdb_dir):
    paths = [str(mitdb_dir / "119"), str(mitdb_dir / "201")]
    pieces = rhythm_records.load_annotated_records(paths, fs=FS, piece_s=10.0)
    assert pieces.leads == ("II",) and pieces.signals.shape[1:] == (1000, 1)
    r119, r201 = pieces.subset(pieces.ecg_ids == 0), pieces.subset(pieces.ecg_ids == 1)
    assert len(r119) == 180 and AF not in r119.group                          # 30 min, no AF
    codes_119 = collections.Counter(c for codes in r119.codes for c in codes)
    assert codes_119["BIGU"] > 10 and codes_119["TRIGU"] > 10 and codes_119["PVC"] > 50
    assert (r201.group == AF).sum() > 40 and len(r201) < 180                    # pieces half AF are left out
    # No more AF pieces than whole 10 s stretches of reference AF, and none in its sinus stretches.
    ref = read_annotations(paths[1])
    af_seconds = sum(e - b for b, e, label in ref.rhythms if label == "AFIB") / ref.fs
    assert (r201.group == AF).sum() <= af_seconds / 10 + 2
    # Beats are the reference's: piece k of 119 (whole record: every piece kept) has the reference rate.
    k = 5
    ref119 = read_annotations(paths[0])
    reference_bpm = heart_rate_from_beats(ref119.beat_samples, ref119.fs, np.array([k * 3600]), 3600)[0]
    piece_bpm = heart_rate_from_beats(r119.beats[k], r119.beat_fs, np.array([0]), 2500)[0]
    assert piece_bpm == pytest.approx(reference_bpm, rel=0.01)  # beat times rounded to 4 ms at 250 Hz


def test_mixed_sampler_draws_every_source_at_its_share():
    def source(value: float, af: float) -> RecordSet:
        signals = np.full((4, 1000, 1), value, np.float32)
        beats = [np.arange(0, 2500, 250)] * 4
        group = np.full(4, AF if af else OTHER)
        return RecordSet(signals, ("II",), FS, beats, 250.0, np.full(4, af, np.float32), group, [{}] * 4, np.arange(4))
    ones = sampling.CropSampler(source(1.0, 1.0), 8.0, band_hz=None, augment=False, noise_fraction=0.0)
    twos = sampling.CropSampler(source(2.0, 0.0), 8.0, band_hz=None, augment=False, noise_fraction=0.0)
    mixed = sampling.MixedSampler((ones, twos), (3.0, 1.0))
    batch = mixed(np.random.default_rng(0), 400)
    assert batch.windows.shape == (400, 800, 1)
    share = np.mean(batch.windows[:, 0, 0] == 1.0)
    assert 0.68 < share < 0.82                                                 # 0.75, binomial sd 0.02
    assert np.array_equal(batch.af == 1, batch.windows[:, 0, 0] == 1.0)        # labels travel with windows
    with pytest.raises(ValueError, match="shares"):
        sampling.MixedSampler((ones, twos), (1.0,))
    # A share so small that the crop sampler's part is all noise windows still makes a batch.
    noisy = sampling.CropSampler(source(1.0, 1.0), 8.0, noise_fraction=1.0)
    assert noisy(np.random.default_rng(0), 1).windows.shape == (1, 800, 1)


def test_rhythm_groups_of_the_mitdb_windows(mitdb_dir):
    groups = {name: collections.Counter(reference.reference_tracks(str(mitdb_dir / name), 8.0, 8.0)["rhythm_group"])
              for name in ("100", "119", "222")}
    assert groups["119"]["ventricular ectopy"] > 150 and groups["119"]["AF"] == 0
    assert groups["222"]["flutter, SVT, nodal"] > 50 and groups["222"]["AF"] > 5
    assert groups["100"]["sinus"] > 200


@pytest.mark.usefixtures("unoptimized_xla")  # flow: what is kept and what is trained, not numbers
def test_train_heads_goes_on_from_a_model():
    beats = [np.arange(0, 2500, 200)] * 6
    t = np.arange(1000) / FS
    signals = np.stack([np.sin(2 * np.pi * 1.25 * t) ** 15] * 6)[:, :, None].astype(np.float32)
    group = np.array([AF, OTHER, CONFOUNDER, AF, OTHER, CONFOUNDER])
    records = RecordSet(signals, ("II",), FS, beats, 250.0, (group == AF).astype(np.float32), group,
                        [{}, {}, {"PVC": 100.0}, {}, {}, {"PVC": 100.0}], np.arange(6))
    sampler = sampling.CropSampler(records, 4.0)
    val = sampling.fixed_crops(records, "II", 4.0)
    encoder = {"name": "resnet18", "chan_start": 4, "in_leads": 1, "num_samples": 400}
    first = train_heads.train_heads(sampler, val, encoder_config=encoder, fs=FS, leads=("II",), window_s=4.0,
                                    steps=2, batch_size=8, log_every=2, log=lambda _: None)
    second = train_heads.train_heads(sampler, val, encoder_config={}, fs=1.0, leads=("X",), window_s=1.0,
                                     steps=2, batch_size=8, log_every=2, log=lambda _: None, start=first)
    assert (second.fs, second.leads, second.window_s) == (FS, ("II",), 4.0)        # the start's input is kept
    assert len(second.history) == len(first.history) + 2 and "val" in second.history[-1]
    before, after = (jax.tree_util.tree_leaves(m.variables["params"]) for m in (first, second))
    assert any(not np.allclose(a, b) for a, b in zip(before, after))                  # trained further
    assert len(first.history) == 2                                                 # the start is not changed
