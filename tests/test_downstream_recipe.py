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


# ---------------------------------------------------------------------------------- the recipe's stages

def _probe_config(**changes):
    from configs import probe as probe_config

    c = probe_config.get_config()
    c.update_from_flattened_dict(changes)
    return c


@pytest.mark.parametrize("init,mode,names,report", [
    ("pretrained", "linear", ("linear",), "linear"), ("pretrained", "finetune", ("linear", "finetune"), "finetune"),
    ("random", "linear", ("linear",), "random_init"), ("random", "finetune", ("finetune",), "supervised"),
    ("supervised", "linear", ("finetune",), "supervised"), ("supervised", "finetune", ("finetune",), "supervised")])
def test_a_mode_stands_for_its_stages(init, mode, names, report):
    from ecgjax.eval.probe import report_mode
    from ecgjax.eval.recipe import Recipe

    recipe = Recipe.from_config(_probe_config(init=init, mode=mode))
    assert recipe.names == names and report_mode(init, recipe) == report


def test_stages_read_their_own_settings_and_compose():
    from ecgjax.eval.recipe import FineTune, LinearHead, Recipe, SelfDistill, WiSEFT

    recipe = Recipe.from_config(_probe_config(**{
        "mode": "finetune", "recipe": "linear, finetune,wise_ft,distill", "optim.linear_epochs": 7, "optim.lr": 3e-4,
        "wise_ft.points": 5, "distill.epochs": 2, "distill.rounds": 3, "distill.teachers.size": 4,
        "distill.teachers.checkpoints": "runs/a, runs/b", "distill.pool.store": "stores/code15",
        "distill.pool.records": 100}))
    linear, finetune, wise, distill = recipe.stages
    assert isinstance(linear, LinearHead) and linear.epochs == 7
    assert isinstance(finetune, FineTune) and finetune.lr == 3e-4 and isinstance(wise, WiSEFT) and wise.points == 5
    assert isinstance(distill, SelfDistill) and (distill.epochs, distill.rounds) == (2, 3)
    assert distill.teachers.size == 4 and distill.teachers.checkpoints == ("runs/a", "runs/b")
    assert (distill.pool.store, distill.pool.records) == ("stores/code15", 100)


@pytest.mark.parametrize("changes,named", [
    ({"recipe": "linear,fintune", "mode": "finetune"}, "--config.recipe=linear,fintune: 'fintune' is not a stage "
                                                       "(did you mean finetune?)"),
    ({"recipe": "linear,wise_ft,finetune", "mode": "finetune"}, "wise_ft mixes fine-tuned weights"),
    ({"recipe": "linear,finetune,wise_ft", "mode": "finetune", "init": "random"}, "(init is random)"),
    ({"recipe": "linear,distill"}, "distill trains its student as the fine-tune stage"),
    ({"recipe": "linear,finetune"}, "--config.recipe=linear,finetune: trains the encoder's weights, but "
                                    "--config.mode=linear"),
    ({"recipe": "linear", "init": "supervised"}, "--config.init=supervised trains all weights from scratch"),
    ({"mode": "finetune", "distill.rounds": 2}, "--config.distill.*: set, but distill is not in the recipe; add it: "
                                               "--config.recipe=linear,finetune,distill"),
    ({"mode": "finetune", "recipe": "linear,finetune,distill", "distill.teachers.checkpoints": "runs/a"},
     "--config.distill.teachers.checkpoints=runs/a: start the other members of an ensemble teacher, so they "
     "need --config.distill.teachers.size>=2"),
    ({"mode": "finetune", "recipe": "linear,finetune,distill", "distill.epochs": 0}, "--config.distill.epochs=0"),
    ({"mode": "finetune", "recipe": "linear,finetune,wise_ft", "wise_ft.points": 1}, "--config.wise_ft.points=1"),
    ({"mode": "sideways"}, "--config.mode=sideways: must be 'linear' or 'finetune'"),
])
def test_a_stage_names_what_is_wrong_with_its_settings_or_its_place(changes, named):
    from ecgjax.errors import UserError
    from ecgjax.eval.recipe import Recipe

    with pytest.raises(UserError) as error:
        Recipe.from_config(_probe_config(**changes))
    assert named in str(error.value) and "\n" not in str(error.value)


def _separable(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float32)
    return rng.standard_normal((n, 250, 1)).astype(np.float32) + y[:, None, None], y


def test_stages_run_in_the_order_listed():
    """WiSE-FT after distill mixes the kept student once; before distill it also mixes each student
    (the student is trained by the stages from fine-tune on)."""
    from ecgjax.eval.recipe import FineTune, FitSettings, LinearHead, Recipe, SelfDistill, WiSEFT

    task = Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    x, y = _separable(40)
    config = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    encoder = registry.build_encoder(config).init(jax.random.PRNGKey(0), registry.example_input(config, 2),
                                                  train=False)
    fit = FitSettings(batch_size=8, eval_batch_size=32, min_steps_per_epoch=1)
    stages = {"linear": LinearHead(epochs=1), "finetune": FineTune(epochs=1), "wise_ft": WiSEFT(points=2),
              "distill": SelfDistill(epochs=1)}
    for order, expected in ((("linear", "finetune", "wise_ft", "distill"),
                             ["linear", "finetune", "wise_ft", "distill", "wise_ft"]),
                            (("linear", "finetune", "distill", "wise_ft"),
                             ["linear", "finetune", "distill", "wise_ft"])):
        _, history = Recipe(tuple(stages[name] for name in order), fit).train(
            config, encoder, (x[:8], y[:8]), (x[8:16], y[8:16]), task, 0, pool=(x[16:], np.full(24, np.nan)))
        assert [h["stage"] for h in history] == expected


def test_the_fit_loop_returns_a_new_model_and_keeps_what_it_must_beat():
    from ecgjax.downstream.fit import fit
    from ecgjax.downstream.step import Optimizer
    from ecgjax.eval.classifier import task_model

    task = Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    x, y = _separable(8)
    model = task_model(dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250), task, 250.0)
    before = jax.tree_util.tree_map(np.array, model.variables)
    batches = lambda epoch: [(x, y)]   # noqa: E731
    trained, rows = fit(model, "finetune", 2, Optimizer(1e-2), batches, lambda v: 0.5, patience=0, seed=0)
    assert [r["epoch"] for r in rows] == [0, 1] and trained is not model
    # The model passed in keeps its weights, bit for bit; the trained one has others.
    jax.tree_util.tree_map(np.testing.assert_array_equal, model.variables, before)
    assert not np.array_equal(trained.variables["params"]["heads"]["af"]["dense"]["kernel"],
                              before["params"]["heads"]["af"]["dense"]["kernel"])
    kept, _ = fit(model, "distill", 2, Optimizer(1e-2), batches, lambda v: 0.5, patience=0, seed=0,
                  to_beat=(0.9, before))
    assert kept.variables is before   # no epoch scored above 0.9


def test_a_resnets_window_may_pass_its_input_length_a_vits_may_not():
    """CinC 2017's long windows on an encoder built (or pretrained) for 1 s: a ResNet's global pool
    takes any length, so the window is protocol.window_s (capped at the longest record); a ViT's
    position embeddings hold it at num_samples."""
    from ecgjax.eval.recipe import FineTune, FitSettings, Recipe, Windowing

    task = Task("af", "binary", ("af",), leads=("I",), window_s=1.0)
    x, y = _separable(16)
    x = np.tile(x, (1, 3, 1))   # 3 s records at 250 Hz
    fit = FitSettings(batch_size=8, eval_batch_size=8, min_steps_per_epoch=1)
    recipe = Recipe((FineTune(epochs=1),), fit, Windowing(window_s=2.0))
    resnet = dict(name="resnet18", chan_start=4, in_leads=1, num_samples=250)
    model, _ = recipe.train(resnet, None, (x[:8], y[:8]), (x[8:], y[8:]), task, 0, fs=250.0)
    assert model.window_s == 2.0
    longer, _ = Recipe((FineTune(epochs=1),), fit, Windowing(window_s=5.0)).train(
        resnet, None, (x[:8], y[:8]), (x[8:], y[8:]), task, 0, fs=250.0)
    assert longer.window_s == 3.0   # the longest record
    vit = dict(name="vit1d", num_samples=250, patch=25, depth=1, width=16, heads=1, in_leads=1)
    model, _ = recipe.train(vit, None, (x[:8], y[:8]), (x[8:], y[8:]), task, 0, fs=250.0)
    assert model.window_s == 1.0
