"""Shared fixtures: a tiny config and its data, a cache that never touches $HOME, and
the suite's compile-time settings."""

import os

# The suite compiles hundreds of tiny programs, where the direct convolution ('auto' on
# a CPU) costs 2-3x XLA's compile time and saves little run time: 'auto' is XLA's here
# and in the commands the tests start. Its tests (`test_convs.py`) and the end-to-end
# test of the README's run ask for it with the `direct_convs` fixture.
os.environ["JAXSHRINK_AUTO_CONV"] = "xla"

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxshrink.config import schema as config_lib  # noqa: E402
from jaxshrink.core import convs  # noqa: E402

convs.AUTO_ON_CPU = "xla"  # in case jaxshrink was imported before this file


@pytest.fixture
def direct_convs(monkeypatch):
    """'auto' as users get it on a CPU: the direct form for few-channel layers."""
    monkeypatch.setattr(convs, "AUTO_ON_CPU", "direct")


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache(tmp_path_factory):
    """Programs compiled by one test are read back by the next (and by the other
    xdist worker) instead of compiled again: many tests build the same tiny network."""
    folder = tmp_path_factory.getbasetemp().parent / "jax-compilation-cache"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test (module fixtures too) caches data under the session's temp folder."""
    old = os.environ.get("JAXSHRINK_CACHE")
    os.environ["JAXSHRINK_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield
    if old is None:
        del os.environ["JAXSHRINK_CACHE"]
    else:
        os.environ["JAXSHRINK_CACHE"] = old


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def tiny_config(task: str = "sobel"):
    """The thesis network on 16x16 crops with a few steps: seconds, not minutes."""
    c = config_lib.base_config(task)
    c.data.crop_size = 16
    c.data.train_size = 24
    c.data.eval_size = 6
    c.train.initial_steps = 40
    c.train.log_every = 20
    c.train.eval_every = 20
    c.train.eval_batch_size = 4
    c.optim.learning_rate = 1e-2
    c.minimize.round_steps = 5
    c.output.num_examples = 2
    return c


def die_after_saves(monkeypatch, stage: str, saves: int):
    """Makes the `saves`-th checkpoint save of `stage` raise KeyboardInterrupt right
    after it completes, as a kill between two checkpoints would; returns an undo."""
    from jaxshrink.runtime import checkpoint

    real_save = checkpoint.RunCheckpointer.save
    done = []

    def save_then_die(self, step, state, meta):
        real_save(self, step, state, meta)
        if meta["stage"] == stage:
            done.append(step)
            if len(done) == saves:
                raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.RunCheckpointer, "save", save_then_die)
    return lambda: monkeypatch.setattr(checkpoint.RunCheckpointer, "save", real_save)


def load_config(name: str, arg: str | None = None):
    """`configs/<name>.py` loaded as `--config=configs/<name>.py:<arg>` would
    (`jaxshrink.config.loader`, the one loader)."""
    from jaxshrink.config import loader

    return loader.load(f"{ROOT}/configs/{name}.py" + (f":{arg}" if arg else ""))


def tiny_mnist():
    """The quick MNIST classifier on a few hundred digits with a few steps."""
    c = load_config("mnist", "quick")
    c.data.train_size, c.data.eval_size = 200, 60
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 40, 20, 20
    c.train.batch_size = 8
    c.minimize.round_steps = 4
    c.minimize.max_rounds = 3
    c.minimize.threshold = 0.5
    c.output.num_examples = 3
    return c


# The files whose tests take longest (each over a minute on 2 cores), started first:
# xdist hands whole files (`--dist loadfile`) to whichever worker is free, in
# collection order (`--no-loadscope-reorder` in pyproject.toml), so a long file
# collected last would leave one worker alone at the end.
LONGEST_FIRST = (
    "test_distributed.py",
    "test_gpu_check.py",
    "test_wrap.py",
    "test_single.py",
    "test_notebooks.py",
    "test_reliability.py",
    "test_sweep.py",
    "test_resume.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is unchanged
