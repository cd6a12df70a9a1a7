"""Depth and growth: bypassed layers, growth inside the envelope, one program."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink import data
from jaxshrink.config import validate
from jaxshrink.core import errors, models, train
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.deploy import export
from jaxshrink.experiments import depth, runner
from jaxshrink.search import batching, minimize

SIX = ["conv:3:3"] * 5 + ["conv:1:3"]  # conv_0 1->3, conv_1..conv_4 3->3, conv_5 3->1


def _six(bypass=True):
    return models.sequential_model(
        SIX, (8, 8, 1), init_std=0.3, final_activation=True, bypass=bypass
    )


def _x():
    return jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 1))


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_only_hidden_layers_that_keep_the_shape_are_bypassable():
    model = _six()
    assert [layer.name for layer in model.spec.bypassable] == [
        "conv_1",
        "conv_2",
        "conv_3",
        "conv_4",
    ]
    assert not _six(bypass=False).spec.bypassable
    # A layer that changes the number of channels cannot be declared bypassable.
    module = model.build(None)
    with pytest.raises(ValueError, match="conv_0.*cannot be bypassed.*differ"):
        spec_lib.trace(module, (8, 8, 1), model.layers, bypassable=["conv_0"])
    with pytest.raises(ValueError, match="not a candidate"):
        spec_lib.trace(module, (8, 8, 1), model.layers, bypassable=["conv_5"])


def test_a_bypassed_layer_equals_the_network_built_without_it():
    model = _six()
    params = model.init(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    masks["conv_2"] = jnp.zeros(3, bool)
    masks["conv_1"] = jnp.array([True, False, True])
    # The same network built with five layers: conv_2 is left out, the others keep
    # their weights (the Sequential numbers its conv layers 0..4).
    five = models.sequential_model(SIX[1:], (8, 8, 1), init_std=0.3, final_activation=True)
    names = ["conv_0", "conv_1", "conv_3", "conv_4", "conv_5"]
    p5 = {f"conv_{i}": params[n] for i, n in enumerate(names)}
    m5 = {f"conv_{i}": masks[n] for i, n in enumerate(names)}
    got, want = model.apply(params, masks, _x()), five.apply(p5, m5, _x())
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # Hand-counted: 2 layers bypassed out of 6 computing is 5; 3x3 windows on 8x8.
    assert spec_lib.depth(model.spec, masks) == 5
    live = spec_lib.live_outputs(model.spec, masks)
    np.testing.assert_array_equal(live["conv_2"], [True, False, True])  # conv_1's
    pixels, window = 64, 9
    flops = pixels * sum(
        2 * window * i * o + o for i, o in [(1, 3), (3, 2), (2, 3), (3, 3), (3, 1)]
    )
    assert spec_lib.count_flops(model.spec, masks) == flops


def test_the_export_leaves_a_bypassed_layer_out(tmp_path):
    model = _six()
    params = model.init(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    masks["conv_3"] = jnp.zeros(3, bool)
    masks["conv_2"] = jnp.array([False, True, True])
    report = export.export(str(tmp_path), model, params, masks, _x())  # checks equality
    assert report.widths == (3, 3, 2, 0, 3, 1) and report.depth == 5
    small = export.load(str(tmp_path))
    assert "conv_3" not in small
    assert small["conv_4"]["kernel"].shape == (3, 3, 2, 3)  # reads conv_2's live units


class _OwnNet(nn.Module):
    """A researcher's module with one bypassable dense layer ('hidden2', 6 -> 6)."""

    widths: dict | None = None

    @nn.compact
    def __call__(self, x, masks, train=False):
        w = {"hidden1": 6, "hidden2": 6, **(self.widths or {})}
        x = nn.relu(nn.Dense(w["hidden1"], name="hidden1")(x)) * masks["hidden1"]
        if w["hidden2"]:
            y = nn.relu(nn.Dense(w["hidden2"], name="hidden2")(x)) * masks["hidden2"]
            x = jnp.where(jnp.any(masks["hidden2"]), y, x)
        return nn.Dense(2, name="out")(x) * masks["out"]


def test_your_own_module_can_declare_a_bypassable_layer(tmp_path):
    model = models.Model.create(
        lambda widths: _OwnNet(widths), (4,), ("hidden1", "hidden2", "out"), bypassable="auto"
    )
    assert [layer.name for layer in model.spec.bypassable] == ["hidden2"]
    params = model.init(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    masks["hidden2"] = jnp.zeros(6, bool)
    masks["hidden1"] = masks["hidden1"].at[0].set(False)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    report = export.export(str(tmp_path), model, params, masks, x)  # checks equality
    assert report.widths == (5, 0, 2) and report.depth == 2
    assert export.load(str(tmp_path))["out"]["kernel"].shape == (5, 2)


def _setup(**changes):
    c = tiny_config("canny")
    c.model.num_layers = 4  # conv_1, conv_2 are 5->5: bypassable
    c.model.bypass = True
    c.minimize.depth = "cost"
    for key, value in changes.items():
        section, name = key.split(".")
        c[section][name] = value
    validate.validate(c)
    dataset = data.load_dataset(c.data)
    trainer = train.from_config(c, data.input_shape(c.data))
    engine = batching.make_engine(trainer, c.batch)
    d = train.make_train_data(dataset.train)
    ev = train.make_eval_data(dataset.eval, 4)
    return c, engine, d, ev


@pytest.fixture(scope="module")
def deep():
    c, engine, d, ev = _setup()
    state = train.create_train_state(jax.random.PRNGKey(0), engine.trainer.model, engine.trainer.tx)
    states, _ = jax.jit(engine.train)(batching.stack([state]), d, jnp.array([20]))
    state = batching.take(states, 0)
    return c, engine, d, ev, state


def _round(c, engine, **spec):
    if spec.get("grow"):  # the round draws fresh values only when the job grows
        c = ml_collections.ConfigDict(c.to_dict())
        c.minimize.grow = True
    fn = jax.jit(minimize.make_round(c, engine))
    base = minimize.run_spec(c.minimize)

    def call(ms, d, ev, **override):
        s = base._replace(**{k: jnp.asarray(v) for k, v in {**spec, **override}.items()})
        new, rec = fn(batching.stack([ms]), batching.stack([s]), d, ev)
        return batching.take(new, 0), batching.take(rec, 0)

    return call, fn


def test_a_rolled_back_layer_removal_restores_everything_bit_for_bit(deep):
    c, engine, d, ev, state = deep
    spec = engine.trainer.model.spec
    call, _ = _round(c, engine)
    ms = minimize.init_state(spec, state, jnp.float32(0.3), jax.random.PRNGKey(1))
    new, rec = call(ms, d, ev, threshold=10.0)  # nothing clears 10x
    assert minimize.KINDS[int(rec.kind)] == "layer" and bool(rec.active)
    assert not bool(rec.accepted)
    for field in ("params", "masks", "frozen", "opt_state", "model_state"):
        _equal(getattr(new.run, field), getattr(state, field))
    assert int(new.failures) == 0  # layer rounds do not count towards max_failures
    assert int(np.sum(new.layer_failed)) == 1 and not np.any(new.failed)
    # The accepted version bypasses the layer chosen by the 'cost' rule.
    kept, rec = call(ms, d, ev, threshold=0.0)
    layer = spec.layers[int(np.argmax(new.layer_failed))].name
    assert bool(rec.accepted) and not np.any(kept.run.masks[layer])
    assert np.all(kept.run.frozen[layer]) and spec_lib.depth(spec, kept.run.masks) == 3


def test_the_cost_rule_bypasses_the_cheapest_layer(deep):
    c, engine, d, ev, state = deep
    model = engine.trainer.model
    x = engine.trainer.eval_transform(train.decode(ev.inputs[0]))
    y = train.decode(ev.targets[0])
    losses = {}
    for layer in model.spec.bypassable:
        masks = {**state.masks, layer.name: jnp.zeros_like(state.masks[layer.name])}
        out = model.apply(state.params, masks, x, state=state.model_state)
        losses[layer.name] = float(engine.trainer.task.loss(out, y))
    call, _ = _round(c, engine)
    ms = minimize.init_state(model.spec, state, jnp.float32(0.3), jax.random.PRNGKey(1))
    new, rec = call(ms, d, ev, threshold=10.0)
    chosen = model.spec.layers[int(np.argmax(new.layer_failed))].name
    assert chosen == min(losses, key=losses.get)
    fewest = masks_lib.candidate_name(model.spec, int(rec.candidate)).split("/")[0]
    assert fewest == chosen


def _started(state, spec, widths):
    """`state` with only the first `widths` units alive (the others dead and frozen)."""
    start = masks_lib.start_masks(spec, widths)
    return state.replace(masks=start, frozen=jax.tree.map(jnp.logical_not, start))


def test_growth_enables_a_fresh_unit_equal_to_a_network_built_with_it(deep, tmp_path):
    c, engine, d, ev, state = deep
    spec = engine.trainer.model.spec
    small = _started(state, spec, (2, 3, 2, 1))
    call, _ = _round(c, engine, grow=True, grow_margin=0.0)
    ms = minimize.init_state(spec, small, jnp.float32(-1.0), jax.random.PRNGKey(2))
    new, rec = call(ms, d, ev, threshold=1.0)
    assert minimize.KINDS[int(rec.kind)] == "grow" and bool(rec.accepted)
    # The layer with the fewest live units (conv_0 and conv_2 tie at 2: the earlier)
    # gets its first dead unit.
    assert masks_lib.candidate_name(spec, int(rec.candidate)) == "conv_0/2"
    np.testing.assert_array_equal(new.run.masks["conv_0"], [True, True, True, False, False])
    assert not bool(new.run.frozen["conv_0"][2]) and bool(new.run.frozen["conv_0"][3])
    # Fresh values: the unit's kernel is the one a new initialisation draws, not the old.
    assert not np.array_equal(
        new.run.params["conv_0"]["kernel"][..., 2], state.params["conv_0"]["kernel"][..., 2]
    )
    # The grown network equals the network built at those widths with the same weights.
    model, x = engine.trainer.model, _x16(c)
    report = export.export(str(tmp_path), model, new.run.params, new.run.masks, x)
    assert report.widths == (3, 3, 2, 1) and report.max_abs_diff == 0.0


def _x16(c):
    return jax.random.uniform(jax.random.PRNGKey(6), (2, c.data.crop_size, c.data.crop_size, 1))


def test_a_failed_growth_rolls_back_and_ends_the_growth_phase(deep):
    c, engine, d, ev, state = deep
    spec = engine.trainer.model.spec
    small = _started(state, spec, (5, 4, 5, 1))  # only conv_1 can grow
    call, _ = _round(c, engine, grow=True, grow_margin=100.0)  # no unit pays that much
    ms = minimize.init_state(spec, small, jnp.float32(0.3), jax.random.PRNGKey(2))
    new, rec = call(ms, d, ev)
    assert minimize.KINDS[int(rec.kind)] == "grow" and not bool(rec.accepted)
    _equal(new.run.params, small.params)
    _equal(new.run.masks, small.masks)
    assert bool(new.growing)
    new, rec = call(new, d, ev)  # nothing left to grow: the phase ends, depth comes next
    assert minimize.KINDS[int(rec.kind)] == "layer" and not bool(new.growing)


def test_one_compilation_serves_growth_depth_and_width(deep):
    c, engine, d, ev, state = deep
    spec = engine.trainer.model.spec
    small = _started(state, spec, (4, 5, 5, 1))
    call, fn = _round(c, engine, grow=True, grow_margin=0.0)
    ms = minimize.init_state(spec, small, jnp.float32(-1.0), jax.random.PRNGKey(3))
    kinds = []
    for threshold in (0.0, 0.0, 0.0, 0.0, 0.0):  # accept everything
        ms, rec = call(ms, d, ev, threshold=threshold)
        kinds.append(minimize.KINDS[int(rec.kind)])
    # grow conv_0's last unit; then nothing to grow; bypass both layers; then units.
    assert kinds == ["grow", "layer", "layer", "unit", "unit"]
    assert spec_lib.depth(spec, ms.run.masks) == 2
    assert fn._cache_size() == 1


def test_configs_refuse_depth_without_bypassable_layers_and_bad_widths():
    c = tiny_config("sobel")
    c.minimize.depth = "cost"
    with pytest.raises(errors.ConfigError, match="minimize.depth.*model.bypass=True"):
        validate.validate(c)
    c.model.bypass = True
    c.model.num_layers = 2  # conv_0 is 1->5, conv_1 5->1: nothing keeps its shape
    with pytest.raises(errors.ConfigError, match="minimize.depth"):
        validate.validate(c)
    c = tiny_config("sobel")
    c.train.start_widths = (5, 0, 1)  # conv_1 is not bypassable
    with pytest.raises(errors.ConfigError, match="train.start_widths"):
        validate.validate(c)
    c.train.start_widths = (2, 3, 1)
    validate.validate(c)


@pytest.mark.e2e
def test_depth_experiment_end_to_end(tmp_path):
    c = depth.get_preset("quick")
    c.data.crop_size = 16
    c.data.train_size = 24
    c.data.eval_size = 6
    c.train.initial_steps = 20
    c.train.log_every = 20
    c.train.eval_every = 20
    c.train.eval_batch_size = 4
    c.minimize.round_steps = 5
    c.minimize.max_rounds = 6
    c.model.num_layers = 4
    c.depth.num_seeds = 1
    c.depth.thesis_widths = (5, 5, 0, 1)
    c.depth.grow_widths = (2, 2, 2, 1)
    results = runner.run(c, str(tmp_path))
    rows = results["runs"]
    assert [(r["target"], r["variant"]) for r in rows] == [
        (t, v) for t in ("sobel", "canny") for v in ("thesis", "depth", "grow")
    ]
    for r in rows:
        assert r["rounds"] <= 6
        if r["variant"] == "thesis":  # widths only: the two bypassed layers stay out
            assert r["widths"].split("-")[2] == "0" and r["layers"] == 3 and r["bypassed"] == 0
            assert r["vs_thesis"] == 1.0 or (r["final"] == 0 and np.isnan(r["vs_thesis"]))
        if r["variant"] != "grow":
            assert r["grown"] == 0
    assert (tmp_path / "depth.csv").exists() and "Per seed" in (tmp_path / "depth.md").read_text()


@pytest.mark.e2e
def test_a_single_run_bypasses_layers_and_exports_without_them(tmp_path, capsys):
    c = tiny_config("canny")
    c.model.num_layers = 4
    c.model.bypass = True
    c.minimize.depth = "fewest"
    c.minimize.threshold = 0.01  # keeps almost anything: both layers go first
    c.minimize.max_rounds = 3
    results = runner.run(c, str(tmp_path))
    kinds = [r["kind"] for r in results["rounds"]]
    assert kinds == ["layer", "layer", "unit"]
    assert [r["candidate"] for r in results["rounds"][:2]] == ["conv_1", "conv_2"]
    assert results["widths"]["after"][1:3] == [0, 0]
    assert "bypass  conv_1" in capsys.readouterr().out
    small = export.load(str(tmp_path / "export"))
    assert sorted(small) == ["conv_0", "conv_3"]
