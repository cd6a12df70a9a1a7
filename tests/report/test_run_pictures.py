"""A run's pictures: a task names its picture, and the network after a few steps is the
one training passed through, kept for a resumed run too."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config, tiny_mnist

from jaxshrink import data
from jaxshrink.config import loader
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import models, tasks, train
from jaxshrink.experiments import runner
from jaxshrink.report import pictures, run_pictures
from jaxshrink.runtime import stages
from jaxshrink.runtime.job import Job
from jaxshrink.runtime.progress import Logger


def test_every_task_names_a_registered_picture():
    for task in tasks.TASKS.values():
        assert callable(pictures.task_picture(task.picture)), task.name
    with pytest.raises(KeyError, match="task picture: got 'nope'; allowed: "):
        pictures.task_picture("nope")


def test_training_imports_no_drawing():
    code = (
        "import sys; import jaxshrink.core.tasks, jaxshrink.core.train, jaxshrink.data; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_early_step_only_for_the_pictures_that_need_it():
    config = tiny_config("sobel")
    fcn = models.get_model(config.model, (16, 16, 1)).spec
    assert run_pictures.early_step(config, fcn) == 40  # the whole training, if shorter
    config.train.initial_steps = 1000
    assert run_pictures.early_step(config, fcn) == run_pictures.EARLY_STEPS
    mnist = loader.load(os.path.join(ROOT, "configs", "mnist.py") + ":quick")
    cnn = models.get_model(mnist.model, data.input_shape(mnist.data)).spec
    assert run_pictures.early_step(mnist, cnn) is None  # no filter outputs drawn


def _same(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)
    )


@pytest.fixture(scope="module")
def config():
    return tiny_config("sobel")  # 40 steps in chunks of 20


@pytest.fixture(scope="module")
def plain(config, tmp_path_factory):
    """The run trained without keeping anything, and the same run's first 30 steps."""
    job = Job(config, str(tmp_path_factory.mktemp("plain")), Logger())
    trained = stages.train_stage(job, [int(config.seed)])
    m = masks_lib.start_masks(job.model.spec, tuple(config.train.start_widths))
    start = job.place(train.create_train_states([int(config.seed)], job.model, job.trainer.tx, m))
    steps = job.place(jnp.full((1,), 30, jnp.int32))
    early = jax.tree.map(lambda a: a[0], job.train_fn(start, job.train_data, steps)[0])
    return trained, job.curve, early


@pytest.mark.parametrize("keep_step", [30, 20])  # inside a chunk, at a chunk's end
def test_the_kept_network_is_the_runs_own_and_survives_a_resume(
    config, plain, tmp_path, keep_step
):
    trained, curve, early = plain
    job = Job(config, str(tmp_path), Logger())
    got = stages.train_stage(job, [int(config.seed)], keep_step=keep_step)
    # Keeping it changes nothing: the same trajectory, the same logged losses.
    assert _same(got, trained) and job.curve == curve
    snap = job.early
    assert isinstance(snap, train.Snapshot) and snap.step == keep_step
    if keep_step == 30:
        assert _same((snap.params, snap.model_state), (early.params, early.model_state))
        assert _same(snap.masks, early.masks)
    # A process that resumes past that step reads it back from the workdir.
    again = Job(config, str(tmp_path), Logger())
    stages.train_stage(again, [int(config.seed)], keep_step=keep_step)
    assert again.early.step == keep_step and _same(again.early, snap)
    # A workdir trained before snapshots were kept: none, the picture goes without.
    os.remove(os.path.join(str(tmp_path), "checkpoints", "train_early.msgpack"))
    old = Job(config, str(tmp_path), Logger())
    stages.train_stage(old, [int(config.seed)], keep_step=keep_step)
    assert old.early is None


@pytest.mark.e2e
def test_a_classifier_draws_thesis_004s_pictures(tmp_path):
    c = tiny_mnist()  # a validation split of a quarter of the training digits
    results = runner.run(c, str(tmp_path))
    for name in ("confusion_matrix.png", "accuracy.png", "first_layer_filters.png",
                 "first_layer_filters_minimized.png"):  # fmt: skip
        assert name in results["pictures"] and (tmp_path / name).stat().st_size > 1000
    curve = results["curve"]
    # The training accuracy is scored where the validation accuracy is.
    assert len(curve["train_score"]) == len(curve["eval_step"]) == len(curve["eval_score"])
    assert all(0.0 <= a <= 1.0 for a in curve["train_score"])
