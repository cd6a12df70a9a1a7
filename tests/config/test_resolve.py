"""Resolution: every marker of a config made concrete once, by the marker's owner; what a
workdir records and what a resume is compared with; the one config loader."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import ROOT, load_config, tiny_config, tiny_mnist

from jaxshrink import config as config_pkg
from jaxshrink import data
from jaxshrink.config import loader, resolve
from jaxshrink.core import convs, errors, models, tasks, train
from jaxshrink.experiments import runner
from jaxshrink.experiments import sweep as sweep_lib
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.search import batching, strategies


def _flat(config) -> dict:
    return workdir_lib._flatten(workdir_lib._normalized(config))


def test_an_empty_loss_is_the_tasks_default_loss():
    regression = resolve.resolve(load_config("summation", "quick"))
    assert regression.train.loss == "mse" == tasks.TASKS["regression"].losses[0]
    mnist = resolve.resolve(load_config("mnist", "quick"))
    assert mnist.train.loss == "cross_entropy"
    assert resolve.resolve(tiny_config("canny")).train.loss == "f1"  # set, kept


@pytest.mark.parametrize(
    "strategy, want",
    [
        # (group, group_threshold, max_rounds, max_failures): the thesis's rules (4.3).
        ("cosine", ("one", 0.0, 0, 2)),
        ("random", ("one", 0.0, 10, 0)),
    ],
)
def test_the_rule_markers_are_the_strategys_rules(strategy, want):
    c = tiny_config()
    c.minimize.strategy = strategy
    m = resolve.resolve(c).minimize
    assert (m.group, m.group_threshold, m.max_rounds, m.max_failures) == want
    # ... which is what the owners compute from the markers.
    assert (m.group, m.group_threshold) == strategies.group_rule(c.minimize)
    assert (m.max_rounds, m.max_failures) == strategies.stopping_rule(c.minimize)[:2]
    # And the run's spec is the same either way.
    assert (m.max_rounds, m.max_failures) == strategies.stopping_rule(m)[:2]


def test_rules_a_config_sets_are_kept_and_a_sweep_keeps_its_markers():
    quick = resolve.resolve(load_config("mnist", "quick"))
    assert (quick.minimize.max_rounds, quick.minimize.max_failures) == (10, 2)
    # A sweep's strategies run under their own rules: no one value records them.
    swept = resolve.resolve(sweep_lib.get_preset("canny", "quick"))
    m = swept.minimize
    assert (m.group, m.group_threshold, m.max_rounds, m.max_failures) == ("auto", None, -1, -1)


def test_batch_markers_are_what_batching_decides_for_the_backend():
    cpu = resolve.resolve(tiny_config()).batch
    assert (cpu.method, cpu.group_size, cpu.grad) == ("loop", 1, "vmap")
    gpu = resolve.resolve(tiny_config(), backend="gpu").batch
    assert (gpu.method, gpu.group_size, gpu.grad, gpu.steps) == ("vmap", 0, "sum", "compiled")
    assert (gpu.method, gpu.group_size, gpu.grad) == batching.resolve(tiny_config().batch, "gpu")
    c = tiny_config()
    c.batch.method, c.batch.group_size, c.batch.steps = "vmap", 2, "host"
    kept = resolve.resolve(c).batch
    assert (kept.method, kept.group_size, kept.grad, kept.steps) == ("vmap", 2, "vmap", "host")


def _job_steps(config) -> str:
    """Where `runtime.job.Job` loops the steps of `config` ('auto'): from its data."""
    split = data.load_dataset(config.data).train
    model = models.get_model(config.model, data.input_shape(config.data))
    trainer = train.make_trainer(config, model, tasks.get_task(config.task, config.train.loss))
    count = batching.xla_convolutions(trainer, train.make_train_data(split))
    return batching.resolve_steps(config.batch, xla_convs=bool(count))


@pytest.mark.parametrize("setting", ["direct", "xla"])
@pytest.mark.parametrize("make", [tiny_config, tiny_mnist], ids=["fcn", "mnist"])
def test_auto_steps_are_the_jobs_choice_from_the_real_data(make, setting, monkeypatch):
    monkeypatch.setattr(convs, "AUTO_ON_CPU", setting)
    resolved = resolve.resolve(make())
    assert resolved.batch.steps == _job_steps(make())
    # The FCN at batch 3 takes the direct form everywhere (no XLA convolution, so the
    # compiled loop); XLA's convolutions, and MNIST's batch of 8, are looped from the host.
    fcn_direct = make is tiny_config and setting == "direct"
    assert resolved.batch.steps == ("compiled" if fcn_direct else "host")


def test_auto_conv_is_the_form_it_takes_here(monkeypatch):
    assert resolve.resolve(tiny_config()).model.conv == "xla"  # the suite's setting
    monkeypatch.setattr(convs, "AUTO_ON_CPU", "direct")
    assert resolve.resolve(tiny_config()).model.conv == "direct" == convs.auto_form()
    assert resolve.resolve(tiny_config(), backend="gpu").model.conv == "xla"
    c = tiny_config()
    c.model.conv = "taps"
    assert resolve.resolve(c).model.conv == "taps"


def test_deploy_markers_are_the_minimize_threshold_and_the_models_shape():
    c = load_config("mnist", "quick")
    c.minimize.threshold = 0.9
    d = resolve.resolve(c).deploy
    assert d.threshold == 0.9 and tuple(d.input_shape) == (28, 28, 1)
    fcn = resolve.resolve(tiny_config()).deploy
    assert tuple(fcn.input_shape) == (256, 256, 1)  # set: the thesis's image size


def test_resolving_copies_is_idempotent_and_leaves_an_own_model_alone():
    c = load_config("summation", "quick")
    before = _flat(c)
    once = resolve.resolve(c)
    assert _flat(c) == before  # the user's config is not changed
    assert _flat(resolve.resolve(once)) == _flat(once)
    left = [f for f, m in resolve.MARKERS.items() if _flat(once)[f] == resolve._json(m)]
    assert not left
    model = models.get_model(c.model, (2,))
    own = resolve.resolve(c, model)
    assert own.model.conv == "auto"  # not read: the model is the researcher's
    assert tuple(own.deploy.input_shape) == (2,)


def test_prepare_validates_then_resolves():
    c = load_config("summation", "quick")
    assert config_pkg.prepare(c).train.loss == "mse" and c.train.loss == ""
    c.minimize.strategy = "greedy"
    with pytest.raises(errors.ConfigError, match="minimize.strategy: got 'greedy'"):
        config_pkg.prepare(c)


def test_config_json_records_the_resolved_values(tmp_path):
    c = tiny_config("sobel")
    c.train.loss = ""
    c.minimize.enabled = False
    c.train.initial_steps = 20
    results = runner.run(c, str(tmp_path))
    with open(os.path.join(tmp_path, workdir_lib.CONFIG_NAME)) as f:
        saved = json.load(f)
    assert saved["train"]["loss"] == "mse" and saved["model"]["conv"] == "xla"
    assert saved["minimize"]["max_failures"] == 2 and saved["deploy"]["threshold"] == 0.95
    assert saved["batch"]["method"] == "loop" and saved["batch"]["steps"] in ("host", "compiled")
    assert results["config"]["train"]["loss"] == "mse"
    again = runner.run(c, str(tmp_path))  # the same config resumes
    assert again["trained"]["steps"] == 20


def test_a_resume_under_another_auto_conv_is_refused_in_one_line(tmp_path, monkeypatch):
    c = tiny_config()
    monkeypatch.setattr(convs, "AUTO_ON_CPU", "direct")
    with workdir_lib.claim(str(tmp_path), resolve.resolve(c)):
        (tmp_path / "checkpoints").mkdir()  # progress: a resume must keep the config
    with workdir_lib.claim(str(tmp_path), resolve.resolve(c)):  # the same setting resumes
        pass
    monkeypatch.setattr(convs, "AUTO_ON_CPU", "xla")
    with pytest.raises(errors.ConfigError) as e:
        with workdir_lib.claim(str(tmp_path), resolve.resolve(c)):
            pass
    message = str(e.value)
    assert "\n" not in message and "config changed" in message
    assert "model.conv: 'direct' -> 'xla'" in message


def test_a_workdir_that_recorded_markers_resumes_and_keeps_comparing(tmp_path):
    c = load_config("summation", "quick")
    with workdir_lib.claim(str(tmp_path), c):  # as before resolution: markers recorded
        (tmp_path / "checkpoints").mkdir()  # progress: a resume must keep the config
    with workdir_lib.claim(str(tmp_path), resolve.resolve(c)):  # '' is 'mse', -1 is 2, ...
        pass
    c.train.loss = "mae"  # not what '' meant
    with pytest.raises(errors.ConfigError, match="train.loss: 'mse' -> 'mae'"):
        with workdir_lib.claim(str(tmp_path), resolve.resolve(c)):
            pass


def test_the_loader_loads_a_config_file_with_presets():
    c = loader.load(os.path.join(ROOT, "configs", "mnist.py") + ":t003,quick")
    # t003's network at an eighth of the widths, RMSProp at quick's learning rate.
    assert tuple(c.model.layers) == ("conv:4:5", "maxpool:2", "conv:8:5", "maxpool:2",
                                     "conv:16:7:valid", "dense:10")  # fmt: skip
    assert (c.optim.name, c.optim.learning_rate, c.model.init_std) == ("rmsprop", 1e-3, 0.1)
    assert c.train.initial_steps == 600 and c.minimize.max_rounds == 10
    assert np.isclose(c.optim.eps, 1e-10)
    assert load_config("mnist", "t003,quick").to_dict() == c.to_dict()


def test_a_bad_preset_or_file_is_a_one_line_config_error():
    path = os.path.join(ROOT, "configs", "mnist.py")
    with pytest.raises(errors.ConfigError) as e:
        loader.load(path + ":t003,fast")
    assert "\n" not in str(e.value)
    assert str(e.value) == (
        "config argument: unknown preset 'fast'; allowed: ['decomposeme', 'quick', 't003']"
    )
    with pytest.raises(errors.ConfigError, match="no config file"):
        loader.load(os.path.join(ROOT, "configs", "none.py:quick"))


def test_the_cpu_is_the_suites_backend():
    # The expectations above are the CPU's (loop, vmap gradient, one device).
    assert jax.default_backend() == "cpu"
