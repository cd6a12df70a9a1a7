"""Rounds with rollback: exact restores, the thesis's stopping rules, one compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink import data
from jaxshrink.config import validate
from jaxshrink.core import errors, optim, train
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import batching, minimize, strategies
from jaxshrink.search.plan import Plan


def _one(tree):
    return jax.tree.map(lambda a: jnp.asarray(a)[None], tree)


class _SingleRound:
    """The batched round driven with a batch of one: `(ms, threshold)` in, one run out."""

    def __init__(self, c, engine):
        self.c = c
        self.fn = jax.jit(minimize.make_round(c, engine))

    def __call__(self, ms, threshold, d, ev):
        spec = minimize.run_spec(self.c.minimize, threshold=1.0)._replace(
            threshold=jnp.float32(threshold)
        )
        new, rec = self.fn(_one(ms), _one(spec), d, ev)
        return batching.take(new, 0), batching.take(rec, 0)

    def _cache_size(self):
        return self.fn._cache_size()


@pytest.fixture(scope="module")
def setup():
    c = tiny_config("canny")  # the soft F1 loss never collapses to an all-zero output
    dataset = data.load_dataset(c.data)
    rng = jax.random.PRNGKey(0)
    trainer = train.from_config(c, data.input_shape(c.data))
    engine = batching.make_engine(trainer, c.batch)
    state = train.create_train_state(rng, trainer.model, trainer.tx)
    d = train.make_train_data(dataset.train)
    ev = train.make_eval_data(dataset.eval, 4)
    states, _ = jax.jit(engine.train)(_one(state), d, jnp.array([30]))
    state = batching.take(states, 0)
    baseline = trainer.evaluate(state.params, state.model_state, state.masks, ev)["score"]
    return c, engine, state, d, ev, baseline


def _run_rounds(c, engine, state, d, ev, baseline, threshold, limit=30):
    round_fn = _SingleRound(c, engine)
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    records = []
    while not bool(ms.done) and len(records) < limit:
        ms, rec = round_fn(ms, threshold, d, ev)
        if bool(rec.active):
            records.append(rec)
    return ms, records, round_fn


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_rollback_restores_params_masks_and_adam_bit_for_bit(setup):
    c, engine, state, d, ev, baseline = setup
    round_fn = _SingleRound(c, engine)
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    new, rec = round_fn(ms, 10.0, d, ev)  # no score can clear 10x
    assert bool(rec.active) and not bool(rec.accepted)
    _assert_trees_equal(new.run.params, state.params)
    _assert_trees_equal(new.run.masks, state.masks)
    _assert_trees_equal(new.run.frozen, state.frozen)
    _assert_trees_equal(new.run.opt_state, state.opt_state)
    assert float(new.reference) == float(baseline)
    assert int(new.failures) == 1
    assert np.asarray(new.failed).sum() == 1 and bool(new.failed[int(rec.candidate)])


def test_accepted_round_disables_and_freezes_the_unit(setup):
    c, engine, state, d, ev, baseline = setup
    round_fn = _SingleRound(c, engine)
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    new, rec = round_fn(ms, 0.0, d, ev)
    assert bool(rec.accepted)
    name, unit = masks_lib.candidate_name(engine.trainer.model.spec, int(rec.candidate)).split("/")
    assert not bool(new.run.masks[name][int(unit)])
    assert bool(new.run.frozen[name][int(unit)])
    assert int(new.run.step) == int(state.step) + c.minimize.round_steps
    assert float(new.reference) == pytest.approx(float(rec.score))
    # The disabled (frozen) unit's weights did not move during the round.
    np.testing.assert_array_equal(
        new.run.params[name]["kernel"][..., int(unit)], state.params[name]["kernel"][..., int(unit)]
    )


def test_cosmax_stops_when_first_and_second_choice_fail(setup):
    c, engine, state, d, ev, baseline = setup
    ms, records, _ = _run_rounds(c, engine, state, d, ev, baseline, threshold=10.0)
    assert len(records) == 2 and bool(ms.done)
    first, second = (int(r.candidate) for r in records)
    net = strategies.Net(
        engine.trainer.model, None, state.params, {}, state.masks, None, None, None
    )
    scores = strategies.cosine_score(net, c.minimize)
    order = np.argsort(-np.asarray(scores), kind="stable")
    assert (first, second) == (order[0], order[1])  # max, then the second max


def test_random_stops_after_ten_rounds(setup):
    c, engine, state, d, ev, baseline = setup
    c = c.copy_and_resolve_references()
    c.minimize.strategy = "random"
    ms, records, _ = _run_rounds(c, engine, state, d, ev, baseline, threshold=10.0)
    assert len(records) == 10 and bool(ms.done)
    assert len({int(r.candidate) for r in records}) == 10  # a failed unit is not retried


def test_sequential_visits_every_candidate_once_in_order(setup):
    c, engine, state, d, ev, baseline = setup
    c = c.copy_and_resolve_references()
    c.minimize.strategy = "sequential"
    ms, records, _ = _run_rounds(c, engine, state, d, ev, baseline, threshold=10.0)
    assert [int(r.candidate) for r in records] == list(range(10))
    assert bool(ms.done)


def test_always_accepting_keeps_one_unit_per_layer_and_never_recompiles(setup):
    c, engine, state, d, ev, baseline = setup
    c = c.copy_and_resolve_references()
    c.minimize.strategy = "sequential"
    ms, records, round_fn = _run_rounds(c, engine, state, d, ev, baseline, threshold=0.0)
    assert all(bool(r.accepted) for r in records)
    # Never the last live unit of a layer, never the output layer.
    assert [int(np.sum(ms.run.masks[n])) for n in ("conv_0", "conv_1", "conv_2")] == [1, 1, 1]
    assert len(records) == 8
    # Masks changed every round and the threshold changes below: still one compilation.
    ms2, _ = round_fn(
        minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(2)),
        0.5,
        d,
        ev,
    )
    assert round_fn._cache_size() == 1


def test_a_stopped_run_does_not_change(setup):
    c, engine, state, d, ev, baseline = setup
    ms, _, round_fn = _run_rounds(c, engine, state, d, ev, baseline, threshold=10.0)
    again, rec = round_fn(ms, 0.0, d, ev)
    assert not bool(rec.active)
    _assert_trees_equal(again, ms)


_ONEHOT = {  # conv_0's unit 1
    "conv_0": jnp.array([False, True, False, False, False]),
    "conv_1": jnp.zeros(5, bool),
    "conv_2": jnp.zeros(1, bool),
}


@pytest.fixture(scope="module")
def modes(setup):
    """Every mode, with kept/zero values and with re-drawn ones, after 5 steps."""
    c, engine, state, d, *_ = setup
    spec, model, tx = engine.trainer.model.spec, engine.trainer.model, engine.trainer.tx
    fresh = model.init_variables(jax.random.PRNGKey(7))
    variants = [(m, v) for m in minimize.MODES for v in (None, fresh)]
    starts = []
    for mode, values in variants:
        run = minimize.alter(spec, state, _ONEHOT, mode, values)
        starts.append(run.replace(opt_state=optim.reset(tx, run.params)))
    ends, _ = jax.jit(engine.train)(batching.stack(starts), d, jnp.full(len(starts), 5))
    out = {}
    for i, (mode, values) in enumerate(variants):
        out[mode, values is not None] = (starts[i], batching.take(ends, i))
    owned = spec_lib.expand(spec, _ONEHOT, state.params)
    return state, fresh[0], owned, out


def _changed(a, b):
    """Per leaf, a bool array: which entries differ."""
    return jax.tree.map(lambda x, y: np.asarray(x) != np.asarray(y), a, b)


def test_disabled_and_frozen_gates_the_unit_and_keeps_it_bit_identical(modes):
    state, _, owned, out = modes
    for redrawn in (False, True):
        start, end = out["disabled_frozen", redrawn]
        assert not bool(end.masks["conv_0"][1]) and bool(end.frozen["conv_0"][1])
        moved = _changed(end.params, start.params)
        assert not any(
            np.any(m & o) for m, o in zip(jax.tree.leaves(moved), jax.tree.leaves(owned))
        )
        assert any(np.any(m & ~o) for m, o in zip(jax.tree.leaves(moved), jax.tree.leaves(owned)))
    # Gated, the kept and the re-drawn unit compute the same function.
    np.testing.assert_array_equal(
        out["disabled_frozen", False][0].params["conv_2"]["kernel"],
        out["disabled_frozen", True][0].params["conv_2"]["kernel"],
    )


def test_reinit_replaces_exactly_what_the_unit_owns(modes):
    state, fresh, owned, out = modes
    start, _ = out["disabled_frozen", True]
    for got, new, old, own in zip(
        *(jax.tree.leaves(t) for t in (start.params, fresh, state.params, owned))
    ):
        np.testing.assert_array_equal(got, np.where(own, new, old))
    assert any(np.any(_c) for _c in jax.tree.leaves(_changed(start.params, state.params)))


def test_disabled_others_frozen_with_redrawn_values_trains_only_that_unit(modes):
    state, fresh, owned, out = modes
    start, end = out["disabled_others_frozen", True]
    assert bool(end.masks["conv_0"][1])  # it stays in the network
    moved = _changed(end.params, start.params)
    for m, o in zip(jax.tree.leaves(moved), jax.tree.leaves(owned)):
        assert not np.any(m & ~o)  # nothing else moved
    assert np.any(moved["conv_0"]["kernel"][..., 1]) and bool(moved["conv_0"]["bias"][1])


def test_zero_values_under_relu_get_no_gradient_and_stay_zero(modes):
    state, _, owned, out = modes
    for mode in minimize.RELEARN_MODES:
        start, end = out[mode, False]
        assert not np.any(start.params["conv_0"]["kernel"][..., 1])
        np.testing.assert_array_equal(end.params["conv_0"]["kernel"][..., 1], 0.0)
        assert float(end.params["conv_0"]["bias"][1]) == 0.0
    # In "disabled" the rest of the network trains; others frozen: nothing moves at all.
    start, end = out["disabled", False]
    assert np.any(_changed(end.params, start.params)["conv_1"]["kernel"])
    start, end = out["disabled_others_frozen", False]
    assert not any(np.any(m) for m in jax.tree.leaves(_changed(end.params, start.params)))


def test_disabled_with_redrawn_values_trains_the_unit_and_the_rest(modes):
    _, _, _, out = modes
    start, end = out["disabled", True]
    moved = _changed(end.params, start.params)
    assert np.any(moved["conv_0"]["kernel"][..., 1]) and np.any(moved["conv_1"]["kernel"])


def test_gated_others_frozen_trains_nothing(modes):
    _, _, _, out = modes
    start, end = out["disabled_frozen_others_frozen", False]
    assert not bool(end.masks["conv_0"][1])
    assert not any(np.any(m) for m in jax.tree.leaves(_changed(end.params, start.params)))


def test_relearning_modes_cannot_minimize(setup):
    c = setup[0].copy_and_resolve_references()
    c.minimize.mode = "disabled"
    with pytest.raises(errors.ConfigError, match="relearning modes"):
        validate.validate(c)
    c.minimize.enabled = False  # a measurement (correlation, relearn) may use them
    validate.validate(c)


def test_unknown_mode_and_reference_are_clear_errors(setup):
    c, engine, *_ = setup
    for field, value in (("mode", "nope"), ("reference", "nope")):
        bad = c.copy_and_resolve_references()
        bad.minimize[field] = value
        with pytest.raises(errors.ConfigError, match=f"minimize.{field}"):
            validate.validate(bad)


def test_a_reference_of_zero_accepts_any_finite_score(setup):
    # e.g. an accuracy of 0 on a tiny eval split: score / 0 is not a ratio to compare.
    c, engine, state, d, ev, _ = setup
    round_fn = _SingleRound(c, engine)
    spec = engine.trainer.model.spec
    ms = minimize.init_state(spec, state, jnp.float32(0.0), jax.random.PRNGKey(1))
    _, rec = round_fn(ms, 0.95, d, ev)
    assert bool(rec.active) and bool(rec.accepted) and float(rec.score) >= 0.0


def _spec_with(c, **group):
    c = c.copy_and_resolve_references()
    c.minimize.update(group)
    return minimize.run_spec(c.minimize)


def test_group_sizes_follow_their_rule(setup):
    c = setup[0]
    scores = jnp.arange(10, dtype=jnp.float32)  # unit i scores i
    allowed = jnp.ones(10, bool).at[9].set(False)

    def size(**g):
        return int(minimize.group_size(_spec_with(c, **g), jnp.int32(0), scores, allowed, 10))

    assert size(group="one") == 1
    assert size(group="fixed", group_size=3) == 3
    assert size(group="fraction", group_fraction=0.25) == 2  # floor(2.5)
    assert size(group="fraction", group_fraction=0.01) == 1  # at least one
    assert size(group="threshold", group_threshold=6.0) == 3  # 6, 7, 8 (9 not allowed)
    assert size(group="threshold", group_threshold=60.0) == 0  # none: the run stops
    assert size(group="adaptive", group_size=4) == 4
    spec = _spec_with(c, group="adaptive", group_size=4)
    assert int(minimize.group_size(spec, jnp.int32(2), scores, allowed, 10)) == 2


def test_a_group_takes_the_best_scores_and_leaves_every_layer_a_unit(setup):
    spec = setup[1].trainer.model.spec  # candidates: conv_0 (5 units), conv_1 (5)
    masks = {"conv_0": jnp.ones(5, bool), "conv_1": jnp.ones(5, bool), "conv_2": jnp.ones(1, bool)}
    scores = jnp.array([9.0, 8, 7, 6, 5, 1, 2, 3, 4, 0])
    allowed = jnp.ones(10, bool)
    chosen = minimize.choose_group(spec, scores, allowed, masks, 3)
    assert np.flatnonzero(chosen).tolist() == [0, 1, 2]
    # Seven best are conv_0's five and conv_1's 8, 7: conv_0 keeps its lowest-scored unit.
    chosen = minimize.choose_group(spec, scores, allowed, masks, 7)
    assert np.flatnonzero(chosen).tolist() == [0, 1, 2, 3, 7, 8]
    masks["conv_1"] = masks["conv_1"].at[0].set(False)
    chosen = minimize.choose_group(spec, scores, allowed.at[5].set(False), masks, 10)
    assert np.flatnonzero(chosen).tolist() == [0, 1, 2, 3, 6, 7, 8]  # conv_1 keeps unit 9
    # Ties go to the lower index.
    chosen = minimize.choose_group(spec, jnp.zeros(10), allowed, masks, 2)
    assert np.flatnonzero(chosen).tolist() == [0, 1]


def test_adaptive_groups_roll_back_whole_and_halve_then_double(setup):
    c, engine, state, d, ev, baseline = setup
    c = c.copy_and_resolve_references()
    c.minimize.update(group="adaptive", group_size=4, strategy="sequential")
    round_fn = _SingleRound(c, engine)
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    counts = []
    for _ in range(3):  # nothing can clear 10x: 4, 2, 1 units, each rolled back
        new, rec = round_fn(ms, 10.0, d, ev)
        counts.append(int(rec.count))
        _assert_trees_equal(new.run.params, state.params)
        _assert_trees_equal(new.run.masks, state.masks)
        _assert_trees_equal(new.run.opt_state, state.opt_state)
        ms = new
    assert counts == [4, 2, 1] and int(ms.group) == 1
    # Sequential never revisits: 0-3, then 4-5, then 6; only the single unit is marked.
    assert np.flatnonzero(ms.failed).tolist() == [6]
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    new, rec = round_fn(ms, 0.0, d, ev)  # accepted: 4 off, next group 8
    assert int(rec.count) == 4 and bool(rec.accepted) and int(new.group) == 8
    assert int(masks_lib.count_alive(new.run.masks)) == 11 - 4
    new, rec = round_fn(new, 0.0, d, ev)  # 8 asked; each layer keeps one: 4 + ... capped
    assert int(rec.count) == 4 and int(masks_lib.count_alive(new.run.masks)) == 3


def test_a_distorted_round_moves_live_kernels_only_and_rolls_back_exactly(setup):
    c, engine, state, d, ev, baseline = setup
    c = c.copy_and_resolve_references()
    c.minimize.update(distort=1.0, strategy="sequential")
    round_fn = _SingleRound(c, engine)
    ms = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    new, rec = round_fn(ms, 10.0, d, ev)  # rolled back: exactly as before
    assert not bool(rec.accepted)
    _assert_trees_equal(new.run.params, state.params)
    new, rec = round_fn(ms, 0.0, d, ev)  # kept: unit conv_0/0 off and untouched
    kernel = new.run.params["conv_0"]["kernel"]
    np.testing.assert_array_equal(kernel[..., 0], state.params["conv_0"]["kernel"][..., 0])
    plain = minimize.init_state(engine.trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    c.minimize.distort = 0.0
    undistorted, _ = _SingleRound(c, engine)(plain, 0.0, d, ev)
    np.testing.assert_array_equal(undistorted.run.masks["conv_0"], new.run.masks["conv_0"])
    assert not np.allclose(kernel[..., 1:], undistorted.run.params["conv_0"]["kernel"][..., 1:])


def _dense(kernel, bias):
    return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


def test_distortion_adds_scaled_uniform_noise_to_kernels_only():
    params = {"dense_0": _dense([[1.0, -1.0], [1.0, -1.0]], [5.0, 5.0])}  # var(kernel) = 1
    key = jax.random.PRNGKey(0)
    assert minimize.distort(params, key, 0.0) is params
    same = minimize.distort(params, key, 2.0)  # 1 - var = 0: nothing moves
    np.testing.assert_array_equal(same["dense_0"]["kernel"], params["dense_0"]["kernel"])
    params = {"dense_0": _dense([[0.0, 0.0], [0.0, 0.0]], [5.0, 5.0])}  # var 0: noise * scale
    out = minimize.distort(params, key, 0.5)
    kernel = np.asarray(out["dense_0"]["kernel"])
    assert np.all(np.abs(kernel) <= 0.5) and np.all(kernel != 0)
    np.testing.assert_array_equal(out["dense_0"]["bias"], [5.0, 5.0])


def test_a_plan_is_static_and_the_single_run_reads_only_config_minimize():
    c = tiny_config()
    c.minimize.update(strategy="random", depth="fewest", grow=True)
    plan = Plan.single(c.minimize)
    assert plan == Plan(("random",), ("fewest",), True)
    assert hash(plan) == hash(Plan(["random"], ["fewest"], 1))  # tuples, hashable
    wider = plan.replace(strategies=("cosine", "random"))
    assert wider.strategies == ("cosine", "random") and wider.layer_rules == ("fewest",)
