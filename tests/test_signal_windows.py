"""One windowing implementation (ecgjax.signal.windows) for annotation, the downstream protocol
and embedding: the same grid, the same cut, whatever the caller."""
from __future__ import annotations

import numpy as np
import pytest

from ecgjax.signal import windows


def test_one_recording_and_a_batch_of_records_get_the_same_grid():
    for num_samples, window, stride in [(1000, 200, 100), (1050, 200, 100), (1000, 200, 300), (200, 200, 50)]:
        owner, starts = windows.sliding_windows(np.array([num_samples]), window, stride)
        np.testing.assert_array_equal(starts, windows.window_starts(num_samples, 100.0, window / 100, stride / 100))
        assert (owner == 0).all()
    # Below one window they part on purpose: annotation reports nothing, the protocol pads.
    assert windows.window_starts(150, 100.0, 2.0, 1.0).size == 0
    assert windows.sliding_windows(np.array([150]), 200, 100)[1].tolist() == [0]
    with pytest.raises(ValueError, match="under one sample"):
        windows.window_starts(1000, 100.0, 0.001, 1.0)


def test_cut_windows_pads_a_batch_shorter_than_the_window_and_keeps_nan():
    """A batch whose time axis is shorter than the window (records all shorter than it) is cut
    row by row and zero-padded; NaN (missing samples) is copied, not zeroed."""
    x = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    x[1, 1, 0] = np.nan
    lengths = np.array([5, 3])
    owner, starts = windows.sliding_windows(lengths, 8, 4)
    cut = windows.cut_windows(x, owner, starts, 8, lengths)
    assert cut.shape == (2, 8, 2) and cut.dtype == np.float32
    np.testing.assert_array_equal(cut[0, :5], x[0])
    np.testing.assert_array_equal(cut[1, :3], x[1, :3])
    assert not cut[0, 5:].any() and not cut[1, 3:].any()
    # One recording [time, leads] is a batch of one without lengths: windows past its end are zero.
    one = windows.extract_windows(x[1], np.array([0, 2]), 3)
    np.testing.assert_array_equal(one, np.stack([x[1, 0:3], x[1, 2:5]]))


def test_windows_inside_and_past_the_time_axis_are_cut_alike():
    """The gathered windows (inside x's time axis) and the copied ones (past it) agree with slicing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40, 2)).astype(np.float32)
    lengths = np.array([40, 25, 7])
    owner, starts = np.array([0, 0, 1, 2, 0]), np.array([0, 30, 20, 0, 35])
    cut = windows.cut_windows(x, owner, starts, 10, lengths)
    for m, (record, start) in enumerate(zip(owner, starts)):
        n = max(min(10, lengths[record] - start), 0)
        np.testing.assert_array_equal(cut[m, :n], x[record, start:start + n])
        assert not cut[m, n:].any()
