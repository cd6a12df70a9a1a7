"""A network defined only here, in the researcher's code, shrinks through the public API."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.core import errors, models, spec
from jaxshrink.deploy import export
from jaxshrink.experiments import runner


class TinyDigits(nn.Module):
    """Not a package model: a conv, a pooling, a flatten and two dense layers."""

    widths: dict | None = None

    @nn.compact
    def __call__(self, x, masks, train=False):
        w = {"features": 6, "hidden": 12, **(self.widths or {})}
        x = nn.relu(nn.Conv(w["features"], (3, 3), name="features")(x)) * masks["features"]
        x = nn.max_pool(x, (4, 4), strides=(4, 4))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(w["hidden"], name="hidden")(x)) * masks["hidden"]
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(10, name="logits")(x) * masks["logits"]


def tiny_digits() -> models.Model:
    return models.Model.create(
        lambda widths: TinyDigits(widths=widths),
        input_shape=(28, 28, 1),
        layers=("features", "hidden", "logits"),
    )


def test_the_spec_reads_the_flatten():
    model = tiny_digits()
    features, hidden, logits = model.spec.layers
    assert (features.kind, hidden.kind, logits.kind) == ("conv", "dense", "dense")
    assert hidden.in_features == 7 * 7 * 6 and features.positions == 28 * 28
    assert [layer.candidate for layer in model.spec.layers] == [True, True, False]
    masks = spec.full(model.spec)
    masks["features"] = masks["features"].at[2].set(False)
    keep = spec.input_keep(model.spec, masks)[("params", ("hidden", "kernel"), -2)]
    assert np.flatnonzero(~np.asarray(keep)).tolist() == list(range(2, 294, 6))


def _config():
    """The README's way: the common sections only, no network of the package's."""
    c = config_lib.common_config("classification", "mnist")
    c.data.train_size, c.data.eval_size = 300, 100
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 60, 30, 30
    c.train.batch_size = 16
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 5, 3, 0.5
    assert "name" not in c.model  # no family configured; its common fields stay unread
    return c


@pytest.mark.e2e
def test_own_model_shrinks_end_to_end(tmp_path):
    model = tiny_digits()
    results = runner.run(_config(), str(tmp_path), model=model)
    assert results["status"] == "ok"
    assert results["layers"] == ["features", "hidden", "logits"]
    assert results["removed_units"] >= 1
    assert results["widths"]["before"] == [6, 12, 10]
    assert sum(results["widths"]["after"]) == 28 - results["removed_units"]
    small = export.load(str(tmp_path / "export"))
    widths = dict(zip(results["layers"], results["widths"]["after"]))
    compact = model.at_widths(widths)
    x = jnp.zeros((2, 28, 28, 1)) + 0.5
    y = compact.apply(small, spec.full(compact.spec), x)
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
    for name in ("confusion_matrix.png", "timeline.png", "kept.png", "first_layer_filters.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.e2e
def test_a_model_for_other_inputs_is_refused(tmp_path):
    other = models.sequential_model(["dense:4", "dense:10"], (5,))
    with pytest.raises(errors.ConfigError, match="^model: "):
        runner.run(_config(), str(tmp_path), model=other)
    assert not (tmp_path / "checkpoints").exists()


def test_own_model_gradients_vanish_for_a_disabled_unit():
    model = tiny_digits()
    params = model.init(jax.random.PRNGKey(0))
    masks = spec.full(model.spec)
    masks["hidden"] = masks["hidden"].at[4].set(False)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))

    def loss(p):
        return jnp.sum(model.apply(p, masks, x) ** 2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["hidden"]["kernel"][:, 4]).max()) == 0.0
    assert float(grads["hidden"]["bias"][4]) == 0.0
    assert float(jnp.abs(grads["logits"]["kernel"][4]).max()) == 0.0
    live = np.abs(np.asarray(grads["hidden"]["kernel"])).max(axis=0)
    assert live[4] == 0.0 and np.count_nonzero(live) >= 1  # the others learn


def test_the_chain_check_accepts_it_and_changes_nothing(monkeypatch):
    # `Model.create` reads the traced dataflow against the chain (`spec.check_chain`);
    # a chain passes, and its spec is the one the sizes alone describe.
    checked = tiny_digits().spec
    monkeypatch.setattr(spec, "check_chain", lambda *args, **kwargs: None)
    assert tiny_digits().spec == checked
