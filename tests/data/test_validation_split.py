"""The validation split: held out of the training data, disjoint from both other splits,
and what every score of a run reads; the test set is scored before and after only."""

import numpy as np
import pytest
from conftest import load_config

from jaxshrink import data
from jaxshrink.core import errors
from jaxshrink.experiments import runner
from jaxshrink.report import summary


def _dataset(n_train=8, n_eval=3):
    def split(prefix, n, start):
        x = np.arange(start, start + n, dtype=np.float32)[:, None]
        return data.Split(x, x * 10, tuple(f"{prefix}[{i}]" for i in range(n)))

    info = {"dataset": "toy", "source": "toy", "train_examples": n_train}
    info.update(eval_examples=n_eval, description="toy rows")
    return data.Dataset(split("train", n_train, 0), split("eval", n_eval, 100), info)


def test_a_fraction_of_the_training_rows_becomes_the_split_every_score_reads():
    toy = _dataset()
    held = data.split_validation(toy, 0.25, seed=0)
    # 2 of the 8 training rows are held out; the 6 left keep their order.
    assert (len(held.train), len(held.eval), len(held.test)) == (6, 2, 3)
    rows = sorted(held.train.sources + held.eval.sources)
    assert rows == sorted(toy.train.sources)
    assert not set(held.train.sources) & set(held.eval.sources)
    assert list(held.train.inputs[:, 0]) == sorted(held.train.inputs[:, 0])
    np.testing.assert_array_equal(held.eval.targets, held.eval.inputs * 10)  # rows intact
    # The dataset's eval split is the test set, untouched.
    assert held.test is toy.eval
    assert not set(held.test.sources) & set(rows)
    assert held.info["eval_split"] == "validation" and held.info["test_examples"] == 3
    assert (held.info["train_examples"], held.info["eval_examples"]) == (6, 2)
    # The same seed draws the same rows; another seed other ones (for these 8 rows).
    assert data.split_validation(toy, 0.25, 0).eval.sources == held.eval.sources
    others = {data.split_validation(toy, 0.25, s).eval.sources for s in range(1, 6)}
    assert others - {held.eval.sources}


def test_a_fraction_that_leaves_a_split_empty_is_refused_in_one_line():
    with pytest.raises(errors.ConfigError, match="data.validation_fraction: 0.01 of 8"):
        data.split_validation(_dataset(), 0.01, 0)


def test_the_builtin_digits_split_as_thesis_004_did():
    cfg = data.default_config("mnist")
    cfg.validation_fraction = 0.25
    digits = data.load_dataset(cfg)
    assert (len(digits.train), len(digits.eval), len(digits.test)) == (3000, 1000, 1000)
    train, validation, test = (set(s.sources) for s in (digits.train, digits.eval, digits.test))
    assert not (train & validation or train & test or validation & test)
    # Without a fraction the eval split is scored throughout and there is no test set.
    cfg.validation_fraction = 0.0
    assert data.load_dataset(cfg).test is None


@pytest.mark.e2e
def test_the_threshold_rule_reads_the_validation_split_and_the_test_set_is_apart(tmp_path):
    c = load_config("summation", "quick")
    c.model.hidden = (16,)
    c.data.train_size, c.data.eval_size = 1000, 300
    c.data.validation_fraction = 0.2
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 200, 100, 100
    c.minimize.round_steps = 10
    c.minimize.threshold = 0.5
    c.minimize.max_rounds = 3
    c.output.num_examples = 20
    results = runner.run(c, str(tmp_path))
    assert results["data"]["eval_split"] == "validation"
    assert (results["data"]["train_examples"], results["data"]["eval_examples"]) == (800, 200)
    assert results["data"]["test_examples"] == 300
    trained, final = results["trained"], results["final"]
    # The first round is compared with the trained network's validation score.
    first = results["rounds"][0]
    assert first["reference"] == pytest.approx(trained["eval"]["score"], rel=1e-6)
    assert first["ratio"] == pytest.approx(first["score"] / first["reference"], rel=1e-6)
    # The test set's scores are recorded apart, and they are other numbers.
    for record in (trained, final):
        assert set(record["test"]) == set(record["eval"])
        assert record["test"]["mse"] != record["eval"]["mse"]
    text = summary.summary(results)
    assert "trained 200 steps: validation 1/MSE" in text and "test set (300 examples" in text
