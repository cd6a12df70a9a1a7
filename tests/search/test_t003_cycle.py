"""Thesis 003's pruning cycle (2.8.1): count every unit's activations over the training
data, prune every unit counted at most t times, keep the change (no accept test)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from jaxshrink import data
from jaxshrink.config import validate
from jaxshrink.core import train
from jaxshrink.search import batching, minimize

TRAIN_X = np.array([[0.9, 0.5], [0.3, 0.2], [0.1, 0.7], [0.5, 0.5]], np.float32)
EVAL_X = np.array([[0.2, 0.3], [0.6, 0.1], [0.4, 0.4], [0.7, 0.2]], np.float32)  # x1 <= 0.8
# Six hidden units on inputs in [0, 1]^2: 0, 3 and 5 never fire (5's pre-activation is
# exactly 0, which a ReLU does not pass); 2 fires only where x1 > 0.8, which one
# training example has and no eval example.
KERNEL = np.array([[-1, 1, 1, -1, 0, 0], [-1, 1, 0, -1, 1, 0]], np.float32)
BIAS = np.array([-0.1, 0, -0.8, -0.5, 0, 0], np.float32)


def _split(x):
    return data.Split(x, x.sum(axis=1, keepdims=True), tuple(str(i) for i in range(len(x))))


def _config(score_split):
    c = load_config("summation", "quick,t003")  # the cycle with 003's Momentum
    c.model.hidden = (6,)
    c.data.train_size, c.data.eval_size = 4, 4
    c.train.batch_size = 2
    c.minimize.score_split = score_split
    c.minimize.round_steps = 1
    c.optim.learning_rate = 1e-6
    validate.validate(c)
    return c


def _pruned(score_split):
    c = _config(score_split)
    trainer = train.from_config(c, (2,))
    engine = batching.make_engine(trainer, c.batch)
    state = train.create_train_state(jax.random.PRNGKey(0), trainer.model, trainer.tx)
    params = dict(state.params)
    params["dense_0"] = {"kernel": jnp.asarray(KERNEL), "bias": jnp.asarray(BIAS)}
    state = state.replace(params=params, opt_state=trainer.tx.init(params))
    d = train.make_train_data(_split(TRAIN_X))
    ev = train.make_eval_data(_split(EVAL_X), 4)
    baseline = trainer.evaluate(state.params, state.model_state, state.masks, ev)["score"]
    ms = minimize.init_state(trainer.model.spec, state, baseline, jax.random.PRNGKey(1))
    one = jax.tree.map(lambda a: jnp.asarray(a)[None], ms)
    spec = jax.tree.map(lambda a: jnp.asarray(a)[None], minimize.run_spec(c.minimize))
    new, record = jax.jit(minimize.make_round(c, engine))(one, spec, d, ev)
    assert bool(record.accepted[0])  # threshold 0: every cycle's pruning is kept
    return np.flatnonzero(~np.asarray(new.run.masks["dense_0"][0])).tolist()


def test_the_cycle_prunes_exactly_the_units_counted_at_most_t_times_on_the_training_data():
    assert _pruned("train") == [0, 3, 5]
    # On the first eval batch unit 2 never fires either: the counts read other data.
    assert _pruned("eval") == [0, 2, 3, 5]


def test_thesis_003s_presets_are_the_cycle_as_it_ran():
    c = load_config("summation", "t003")
    m = c.minimize
    assert (m.strategy, m.group, m.group_threshold, m.threshold) == (
        "activation_count", "threshold", 0.0, 0.0
    )
    assert (m.score_split, m.score_examples, m.round_steps) == ("train", 100_000, 1000)
    assert (c.optim.name, c.optim.learning_rate, c.optim.momentum) == ("momentum", 0.01, 0.3)
    assert load_config("summation", "cycle").optim.name == "adam"
    assert load_config("summation", "t003,distorted,l1").minimize.distort == 1.0
    ae = load_config("autoencoder", "quick,t003")
    assert (ae.minimize.strategy, ae.minimize.score_examples) == ("activation_count", 0)
    assert load_config("autoencoder", "quick,t003,outliers").minimize.strategy == "outliers"


@pytest.mark.parametrize("field, value", [("score_split", "test"), ("score_examples", -1)])
def test_the_scoring_data_fields_are_checked(field, value):
    c = _config("train")
    c.minimize[field] = value
    with pytest.raises(ValueError, match=f"minimize.{field}"):
        validate.validate(c)
