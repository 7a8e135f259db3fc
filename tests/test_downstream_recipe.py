"""The windowed downstream protocol and the fine-tuning recipe: crops, sliding windows, aggregation,
thresholds tuned on validation, class-balanced losses, layer-wise lr decay, stochastic depth."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ecgjax.downstream import windows
from ecgjax.downstream.heads import Head, balanced_weights, head_loss
from ecgjax.downstream.step import Optimizer, layer_of
from ecgjax.eval import thresholds
from ecgjax.eval.task_data import load_task_arrays
from ecgjax.eval.tasks import Task
from ecgjax.models import registry


def _ramp_records(lengths, width=None, leads=2):
    """Rows whose value at sample t is t (so a window's content names its start), zero past the length."""
    width = width or max(lengths)
    x = np.zeros((len(lengths), width, leads), np.float32)
    for row, n in enumerate(lengths):
        x[row, :n] = np.arange(n, dtype=np.float32)[:, None]
    return x, np.asarray(lengths)


def test_random_crops_stay_inside_each_record_and_vary():
    x, lengths = _ramp_records([100, 40, 25])
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(50):
        crops = windows.random_crops(x, lengths, 30, rng)
        assert crops.shape == (3, 30, 2)
        first = crops[:, 0, 0].astype(int)
        # a crop is a contiguous run of the record: value = start + offset
        np.testing.assert_array_equal(crops[0, :, 0], first[0] + np.arange(30))
        assert 0 <= first[0] <= 70 and 0 <= first[1] <= 10
        # a record shorter than the window: the whole record, zero-padded at its end
        np.testing.assert_array_equal(crops[2, :25, 0], np.arange(25))
        assert not crops[2, 25:].any()
        starts.append(first[0])
    assert len(set(starts)) > 20  # drawn afresh, anywhere in the record


def test_sliding_windows_cover_every_sample_and_end_at_the_record_end():
    owner, starts = windows.sliding_windows(np.array([100, 30, 10]), 30, 20)
    assert owner.tolist() == [0, 0, 0, 0, 0, 1, 2]
    assert starts.tolist() == [0, 20, 40, 60, 70, 0, 0]
    x, lengths = _ramp_records([100, 30, 10])
    cut = windows.cut_windows(x, owner, starts, 30, lengths)
    assert cut.shape == (7, 30, 2) and cut[4, -1, 0] == 99 and not cut[6, 10:].any()


def test_aggregate_mean_and_max_per_record():
    owner = np.array([0, 0, 1, 1, 1])
    values = np.array([[0.2, 1.0], [0.4, 0.0], [0.1, 0.5], [0.9, 0.5], [0.2, 0.5]])
    np.testing.assert_allclose(windows.aggregate(values, owner, 3, "mean")[:2],
                               [[0.3, 0.5], [0.4, 0.5]])
    np.testing.assert_allclose(windows.aggregate(values, owner, 3, "max")[:2], [[0.4, 1.0], [0.9, 0.5]])
    assert np.isnan(windows.aggregate(values, owner, 3)[2]).all()  # a record without windows
    with pytest.raises(ValueError, match="aggregation"):
        windows.aggregate(values, owner, 3, "median")


def test_multiclass_offsets_tuned_on_validation_raise_macro_f1():
    """A rare class whose scores are calibrated low: argmax never predicts it, a tuned offset does."""
    rng = np.random.default_rng(0)

    def split(n):
        y = (rng.random(n) < 0.1).astype(int)
        p1 = np.clip(0.15 + 0.2 * y + 0.03 * rng.standard_normal(n), 0.01, 0.99)  # rare: 0.35, never > 0.5
        return y, np.stack([1 - p1, p1], axis=1)

    y_val, s_val = split(400)
    y_test, s_test = split(400)
    offsets = thresholds.tune("multiclass", y_val, s_val)
    tuned = thresholds.tuned_metrics("multiclass", y_test, s_test, offsets, ("common", "rare"))
    argmax = thresholds.tuned_metrics("multiclass", y_test, s_test, np.zeros(2), ("common", "rare"))
    assert argmax["f1_tuned/rare"] == 0.0 and tuned["f1_tuned/rare"] > 0.8
    assert tuned["macro_f1_tuned"] > argmax["macro_f1_tuned"] + 0.3


def test_binary_and_multilabel_thresholds_maximise_validation_f1():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.4])
    assert thresholds.tune("binary", y, s)[0] == pytest.approx(0.35)
    cut = thresholds.tune("multilabel", np.stack([y, 1 - y], 1), np.stack([s, 1 - s], 1))
    assert cut.shape == (2,) and thresholds.tuned_metrics("multilabel", np.stack([y, 1 - y], 1),
                                                          np.stack([s, 1 - s], 1), cut)["macro_f1_tuned"] == 1.0


def test_balanced_class_weights_equalise_the_classes():
    y = np.array([0] * 90 + [1] * 10)
    weights = balanced_weights(y, 3)
    assert weights[0] * 90 == pytest.approx(weights[1] * 10) and weights[2] == 1.0  # absent class: 1
    head = Head("r", "multiclass", ("a", "b", "c"), class_weights=weights)
    logits = jnp.zeros((100, 3)).at[:, 0].set(2.0)  # confident in the common class
    plain = head_loss(Head("r", "multiclass", ("a", "b", "c")), logits, jnp.asarray(y))
    weighted = head_loss(head, logits, jnp.asarray(y))
    # the rare class's (larger) loss now counts as much as the common class's
    per_class = optax.softmax_cross_entropy_with_integer_labels(logits[:2], jnp.array([0, 1]))
    # A weighted mean of two distinct float32 losses over 100 rows: rounding ~1e-7 relative, 1e-5 is safe anywhere.
    assert float(weighted) == pytest.approx(float(per_class.mean()), rel=1e-5)
    assert float(weighted) > float(plain)
    with pytest.raises(ValueError, match="class_weights"):
        Head("b", "binary", class_weights=(1.0, 2.0))


def test_layer_wise_lr_decay_scales_updates_towards_the_input():
    params = {"encoder": {"input_conv": {"kernel": jnp.ones(2)},
                          "transformer": {"block0": {"w": jnp.ones(2)}, "block1": {"w": jnp.ones(2)},
                                          "final_norm": {"scale": jnp.ones(2)}}},
              "heads": {"t": {"dense": {"kernel": jnp.ones(2)}}}}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    decayed = Optimizer(0.1, layer_decay=0.5, num_layers=2).build()
    plain = Optimizer(0.1).build()
    updates, _ = decayed.update(grads, decayed.init(params), params)
    reference, _ = plain.update(grads, plain.init(params), params)
    # Exact up to one float32 rounding: the decayed update is the plain one times a power of 0.5,
    # so pytest.approx's default relative 1e-6 holds on any CPU.
    ratio = jax.tree_util.tree_map(lambda u, r: float(u[0] / r[0]), updates, reference)
    assert ratio["heads"]["t"]["dense"]["kernel"] == pytest.approx(1.0)
    assert ratio["encoder"]["transformer"]["final_norm"]["scale"] == pytest.approx(1.0)
    assert ratio["encoder"]["transformer"]["block1"]["w"] == pytest.approx(0.5)
    assert ratio["encoder"]["transformer"]["block0"]["w"] == pytest.approx(0.25)
    assert ratio["encoder"]["input_conv"]["kernel"] == pytest.approx(0.125)
    assert layer_of("['encoder']['stage2_block1']['conv']", 4) == 3  # ResNet stages


def test_stochastic_depth_is_identity_in_evaluation_and_random_in_training():
    config = dict(name="vit1d", num_samples=200, patch=50, width=32, depth=3, heads=2, in_leads=1)
    x = np.random.default_rng(0).standard_normal((8, 200, 1)).astype(np.float32)
    plain, dropped = registry.build_encoder(config), registry.build_encoder({**config, "drop_path": 0.5})
    variables = plain.init(jax.random.PRNGKey(0), x, train=False)
    # In evaluation both build the same graph on the same inputs: equal up to XLA's fusion choices,
    # far inside rtol 1e-6 of O(1) features on any CPU.
    np.testing.assert_allclose(dropped.apply(variables, x, train=False), plain.apply(variables, x, train=False),
                               rtol=1e-6)
    train = [dropped.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)}) for k in (1, 2)]
    assert not np.allclose(train[0], train[1])
    assert not np.allclose(train[0], plain.apply(variables, x, train=True))


def test_task_records_whole_or_cut_to_a_length(tmp_path):
    from fixtures import write_cinc2017_fixture
    from ecgjax.data.ingest import build_store

    write_cinc2017_fixture(tmp_path / "cinc", n_records=6, seed=3)
    store = build_store("cinc2017", tmp_path / "cinc", tmp_path / "store")
    task = Task("cinc2017", "multiclass", ("label",), classes=("N", "A", "O", "~"), leads=("I",))
    records = np.arange(len(store.lengths))
    whole = load_task_arrays(store, task, records, record_s=0)
    assert whole.x.shape[1] == store.lengths.max() and whole.lengths.tolist() == store.lengths.tolist()
    padded = load_task_arrays(store, task, records, record_s=60.0)
    assert padded.x.shape[1] == 60 * store.fs and (padded.lengths == store.lengths).all()
    np.testing.assert_array_equal(padded.x[:, :whole.x.shape[1]], whole.x)
    first = load_task_arrays(store, task, records)  # default: the task's first window_s seconds
    assert first.x.shape[1] == int(task.window_s * store.fs)
    assert (first.lengths == np.minimum(store.lengths, first.x.shape[1])).all()
