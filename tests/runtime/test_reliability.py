"""Faults injected for real: SIGKILL and resume, damaged checkpoints, two writers,
config errors, NaNs in one run of a batch, determinism; property tests for helpers."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config, tiny_mnist
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.config import validate
from jaxshrink.core import errors, files, models, spec, train
from jaxshrink.core import masks as masks_lib
from jaxshrink.experiments import runner, sweep
from jaxshrink.runtime import stages
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.search import batching, minimize

# A tiny Canny run through the command line: train checkpoints every 10 steps,
# minimize checkpoints every round.
CLI = [
    sys.executable,
    "-u",
    "-m",
    "jaxshrink.main",
    f"--config={os.path.join(ROOT, 'configs', 'canny.py')}:quick",
    "--config.data.crop_size=16",
    "--config.data.train_size=12",
    "--config.data.eval_size=4",
    "--config.train.initial_steps=40",
    "--config.train.log_every=10",
    "--config.train.eval_every=10",
    "--config.minimize.round_steps=3",
    "--config.minimize.threshold=0.9",
    "--config.optim.learning_rate=0.01",
]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT)


def _cli(workdir, timeout=300):
    return subprocess.run(
        [*CLI, f"--workdir={workdir}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _comparable(workdir):
    r = json.loads((workdir / "results.json").read_text())
    return {k: r[k] for k in ("status", "kept", "rounds", "trained", "final", "params")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    proc = _cli(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _kill_when(workdir, marker):
    """Starts the CLI and SIGKILLs it as soon as a stdout line contains `marker`."""
    proc = subprocess.Popen(
        [*CLI, f"--workdir={workdir}"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]


# A SIGKILL inside minimization is tested through the command line with two
# processes (`test_distributed`) and in-process between rounds (`test_pipeline`);
# here, during the initial training of a single process.
@pytest.mark.e2e
@pytest.mark.parametrize("marker", ["train: step     20/40"], ids=["during-initial-training"])
def test_sigkill_then_same_command_resumes_to_identical_results(straight, tmp_path, marker):
    _kill_when(tmp_path, marker)
    assert not (tmp_path / "results.json").exists()
    # A save killed half-way leaves orbax's temporary folder; it must be ignored.
    stage = "train" if "train" in marker else "minimize"
    junk = tmp_path / "checkpoints" / stage / "999.orbax-checkpoint-tmp-1234"
    junk.mkdir(parents=True)
    (junk / "half_written").write_bytes(b"\0" * 10)
    proc = _cli(tmp_path)  # the lock file of the killed process does not block
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed" in proc.stdout
    assert _comparable(tmp_path) == _comparable(straight)


# The command line with orbax's save failing as a full disk does on the third
# checkpoint of minimization, after writing part of it.
_FULL_DISK = """
import errno, os, runpy
import orbax.checkpoint as ocp

real_save = ocp.CheckpointManager.save
calls = []

def save(self, step, *args, **kwargs):
    if str(self.directory).endswith("minimize"):
        calls.append(step)
        if len(calls) == 3:
            partial = os.path.join(str(self.directory), f"{step}.orbax-checkpoint-tmp-7")
            os.makedirs(os.path.join(partial, "state"))
            open(os.path.join(partial, "state", "half_written"), "wb").close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), partial)
    return real_save(self, step, *args, **kwargs)

ocp.CheckpointManager.save = save
runpy.run_module("jaxshrink.main", run_name="__main__")
"""


@pytest.mark.e2e
def test_a_full_disk_at_a_checkpoint_is_one_line_exit_2_and_the_rerun_resumes(
    straight, tmp_path
):
    full = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, *CLI[4:], f"--workdir={tmp_path}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    said = [x for x in full.stderr.splitlines() if x.startswith("jaxshrink:")]
    ckpt_dir = tmp_path / "checkpoints" / "minimize"
    kept = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    assert len(kept) == 2  # the two saves before the failed one
    assert len(said) == 1, full.stderr
    assert said[0].startswith(f"jaxshrink: error: cannot write {ckpt_dir}{os.sep}")
    assert f": no space left on device; checkpoint {kept[-1]} is kept." in said[0]
    assert "rerun the same command to resume" in said[0]
    assert not list(ckpt_dir.glob("*.orbax-checkpoint-tmp-*"))  # the partial save is gone
    assert not (tmp_path / "results.json").exists()

    again = _cli(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout
    assert _comparable(tmp_path) == _comparable(straight)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny Canny run: (config, workdir, results)."""
    c = tiny_config("canny")
    c.minimize.threshold = 0.9
    workdir = tmp_path_factory.mktemp("tiny_run")
    return c, workdir, runner.run(c, str(workdir))


@pytest.mark.e2e
def test_damaged_checkpoint_falls_back_to_the_previous_one(tiny_run, tmp_path):
    c, done, want = tiny_run
    shutil.copytree(done, tmp_path, dirs_exist_ok=True)
    ckpt_dir = tmp_path / "checkpoints" / "minimize"
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    for path in (ckpt_dir / str(steps[-1])).rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")  # every file of the newest checkpoint
    (tmp_path / "results.json").unlink()
    with pytest.warns(UserWarning, match=f"checkpoint {steps[-1]} .* is damaged"):
        got = runner.run(c, str(tmp_path))
    assert (ckpt_dir / f"damaged-{steps[-1]}").is_dir()  # kept for inspection
    for key in ("kept", "rounds", "final"):
        assert got[key] == want[key]


@pytest.mark.e2e
def test_a_second_process_on_a_live_workdir_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-c",
            "import sys, time; from jaxshrink.runtime import workdir; from jaxshrink import config;"
            "c = config.schema.get_preset('canny', 'quick');"
            "ctx = workdir.claim(sys.argv[1], c); ctx.__enter__(); print('held', flush=True);"
            "time.sleep(120)",
            str(tmp_path),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _cli(tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.startswith("jaxshrink: error: workdir")
        assert f"in use by pid {holder.pid}" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead; its lock file stays but no longer blocks.
    assert (tmp_path / ".lock").exists()
    with workdir_lib.claim(str(tmp_path), config_lib.get_preset("canny", "quick")):
        pass


@pytest.mark.e2e
@pytest.mark.parametrize(
    "override, field",
    [
        ("--config.minimize.strategy=greedy", "minimize.strategy"),
        ("--config.model.kernel_size=4", "model.kernel_size"),
        ("--config.data.crop_size=5000", "crop"),
    ],
)
def test_config_errors_exit_2_with_one_line(tmp_path, override, field):
    proc = subprocess.run(
        [*CLI, override, f"--workdir={tmp_path}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxshrink: error:") and field in lines[0]
    assert not (tmp_path / "checkpoints").exists()  # nothing was computed


@pytest.mark.e2e
def test_an_unknown_preset_is_one_line_naming_it(tmp_path):
    cli = [arg.replace(":quick", ":quik") if arg.startswith("--config=") else arg for arg in CLI]
    proc = subprocess.run(
        [*cli, f"--workdir={tmp_path}"], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "jaxshrink: error: config argument: unknown preset 'quik'; allowed: ['quick']"
    ], lines
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("minimize.strategy", "greedy", "sequential"),
        ("minimize.mode", "off", "disabled_frozen"),
        ("minimize.threshold", -0.1, "[0, 1]"),
        ("minimize.threshold", 1.01, "[0, 1]"),
        ("model.kernel_size", 4, "odd"),
        ("model.num_filters", 0, ">= 1"),
        ("data.source", "web", "folder"),
        ("train.loss", "hinge", "mse"),
        ("batch.method", "pmap", "vmap"),
        ("optim.learning_rate", float("nan"), "finite"),
    ],
)
def test_validate_names_the_field_and_the_allowed_values(field, value, allowed):
    c = tiny_config("canny")
    section, name = field.split(".")
    c[section][name] = value
    with pytest.raises(errors.ConfigError) as info:
        validate.validate(c)
    message = str(info.value)
    assert message.startswith(field) and allowed in message and "\n" not in message


def test_a_config_changed_on_resume_is_refused(tmp_path):
    c = tiny_config("canny")
    with workdir_lib.claim(str(tmp_path), c):
        (tmp_path / "checkpoints").mkdir()  # progress: a resume must keep the config
    changed = c.copy_and_resolve_references()
    changed.minimize.threshold = 0.5
    changed.batch.devices = 1  # how it executes may change
    changed.batch.method, changed.batch.steps = "vmap", "host"
    with pytest.raises(errors.ConfigError, match=r"minimize.threshold: 0.95 -> 0.5"):
        with workdir_lib.claim(str(tmp_path), changed):
            pass
    changed.minimize.threshold = 0.95
    with workdir_lib.claim(str(tmp_path), changed):
        pass


def test_a_workdir_from_before_an_option_existed_resumes_with_it(tmp_path, capsys):
    c = tiny_config("canny")
    with workdir_lib.claim(str(tmp_path), c):
        (tmp_path / "checkpoints").mkdir()
    path = tmp_path / workdir_lib.CONFIG_NAME
    saved = json.loads(path.read_text())
    del saved["batch"]["steps"], saved["minimize"]["grow_margin"]  # "added since"
    saved["minimize"]["retired"] = 3  # "removed since"
    path.write_text(json.dumps(saved))
    with pytest.raises(errors.ConfigError, match=r"minimize.retired: 3 -> '<absent>'"):
        with workdir_lib.claim(str(tmp_path), c):
            pass
    del saved["minimize"]["retired"]
    path.write_text(json.dumps(saved))
    capsys.readouterr()
    with workdir_lib.claim(str(tmp_path), c):
        pass
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "jaxshrink: note:" in note
    assert "batch.steps='auto', minimize.grow_margin=0.01" in note
    # Recorded: the next resume is silent, and compares them like any other field.
    assert json.loads(path.read_text()) == json.loads(json.dumps(c.to_dict()))
    with workdir_lib.claim(str(tmp_path), c):
        pass
    assert capsys.readouterr().err == ""
    changed = c.copy_and_resolve_references()
    changed.minimize.grow_margin = 0.5
    with pytest.raises(errors.ConfigError, match=r"minimize.grow_margin: 0.01 -> 0.5"):
        with workdir_lib.claim(str(tmp_path), changed):
            pass


def test_a_workdir_without_progress_takes_the_corrected_config(tmp_path):
    c = tiny_config("canny")
    with workdir_lib.claim(str(tmp_path), c):
        pass  # refused before any work: only the lock and config.json are there
    corrected = c.copy_and_resolve_references()
    corrected.data.eval_size = 40
    with workdir_lib.claim(str(tmp_path), corrected):
        (tmp_path / "results.json").write_text("{}")
    saved = json.loads((tmp_path / workdir_lib.CONFIG_NAME).read_text())
    assert saved["data"]["eval_size"] == 40
    # Once the workdir holds progress, the config is the one it recorded.
    with pytest.raises(errors.ConfigError, match=r"data.eval_size: 40 -> 6"):
        with workdir_lib.claim(str(tmp_path), c):
            pass


@pytest.mark.e2e
def test_a_data_error_then_the_corrected_command_in_the_same_workdir_runs(tmp_path):
    c = tiny_config("sobel")
    c.data.eval_size = 0  # found only when the data loads
    with pytest.raises(errors.ConfigError, match="data.eval_size: got 0"):
        runner.run(c, str(tmp_path))
    c.data.eval_size = 6
    c.minimize.max_rounds = 1
    results = runner.run(c, str(tmp_path))
    assert results["status"] == "ok" and results["data"]["eval_examples"] == 6


@pytest.mark.e2e
def test_nan_in_one_seed_of_a_batch_fails_only_that_seed(tmp_path, monkeypatch):
    def small():
        c = tiny_config("canny")
        sweep.add_section(c)
        c.sweep.num_seeds, c.sweep.thresholds = 2, (0.9,)
        return c

    clean = runner.run(small(), str(tmp_path / "clean"))
    real = stages.train_stage

    def poisoned(job, seeds):
        trained = real(job, seeds)
        kernel = trained.params["conv_1"]["kernel"].at[1, 0, 0, 0, 0].set(jnp.nan)
        params = {**trained.params, "conv_1": {**trained.params["conv_1"], "kernel": kernel}}
        return trained.replace(params=params)  # seed 1's network is poisoned

    monkeypatch.setattr(stages, "train_stage", poisoned)
    got = runner.run(small(), str(tmp_path / "poisoned"))
    for a, b in zip(clean["runs"], got["runs"]):
        if b["seed"] == 0:
            assert a == b  # untouched by its neighbour's NaN
        else:
            assert b["status"].startswith("failed") and b["rounds"] == 0
    assert got["failed_runs"] == 3
    csv = files.read_csv(tmp_path / "poisoned" / "figure_4_2_summary.csv")
    assert all(row["n"] == 1 for row in csv)  # only seed 0 is in the figure


@pytest.mark.parametrize("make", [lambda: tiny_config("canny"), tiny_mnist], ids=["fcn", "cnn"])
def test_a_round_with_nan_rolls_back_exactly(make):
    c = make()
    dataset = data.load_dataset(c.data)
    trainer = train.from_config(c, data.input_shape(c.data))
    engine = batching.make_engine(trainer, c.batch)
    state = train.create_train_states([0], trainer.model, trainer.tx)
    ev = train.make_eval_data(dataset.eval, 4)
    baseline = jax.vmap(trainer.evaluate, in_axes=(0, 0, 0, None))(
        state.params, state.model_state, state.masks, ev
    )
    ms = stages.init_minimize(trainer.model.spec, state, baseline["score"], [0])
    bad = train.TrainData(  # float32 NaN inputs (the edge data is stored as uint8)
        jnp.full(dataset.train.inputs.shape, jnp.nan, jnp.float32),
        jnp.asarray(dataset.train.targets),
    )
    spec = batching.stack([minimize.run_spec(c.minimize, threshold=0.5)])
    new, rec = jax.jit(minimize.make_round(c, engine))(ms, spec, bad, ev)
    assert bool(rec.active[0]) and not bool(rec.finite[0]) and not bool(rec.accepted[0])
    for x, y in zip(jax.tree.leaves(new.run.params), jax.tree.leaves(ms.run.params)):
        np.testing.assert_array_equal(x, y)
    assert float(new.reference[0]) == float(ms.reference[0])


@pytest.mark.e2e
def test_same_config_same_bits(tiny_run, tmp_path):
    c, done, a = tiny_run
    b = runner.run(c, str(tmp_path))
    for key in ("kept", "rounds", "trained", "final", "curve"):
        assert a[key] == b[key]
    za, zb = (np.load(d / "export" / "params.npz") for d in (done, tmp_path))
    for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key])


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    files.write_json(tmp_path / "results.json", {"old": True})

    def crash(*args, **kwargs):  # the new content is written but not yet renamed
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        files.write_json(tmp_path / "results.json", {"new": True})
    monkeypatch.undo()
    assert json.loads((tmp_path / "results.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# --------------------------------------------------------------- property-based tests

_unit_rows = st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=2, max_size=4)


def _spec_and_tree(rows):
    """A conv chain with one layer per row (units = the row's length) and its mask tree."""
    model = models.sequential_model([f"conv:{len(r)}:3" for r in rows], (4, 4, 2))
    return model.spec, {f"conv_{i}": jnp.asarray(r, bool) for i, r in enumerate(rows)}


@settings(max_examples=40, deadline=None)
@given(_unit_rows)
def test_mask_helpers_agree_with_plain_python(rows):
    model_spec, tree = _spec_and_tree(rows)
    assert masks_lib.to_rows(model_spec, tree) == rows
    assert int(masks_lib.count_alive(tree)) == sum(map(sum, rows))
    params = {
        name: {"kernel": jnp.zeros((3, 3, 2, len(r))), "bias": jnp.zeros(len(r))}
        for name, r in zip(tree, rows)
    }
    expanded = spec.expand(model_spec, tree, params)
    for name, r in zip(tree, rows):
        k = np.asarray(expanded[name]["kernel"])
        assert k.shape == (3, 3, 2, len(r))
        assert all(bool(np.all(k[..., u] == r[u])) for u in range(len(r)))
        assert np.asarray(expanded[name]["bias"]).tolist() == r


@settings(max_examples=40, deadline=None)
@given(_unit_rows)
def test_candidates_flatten_round_trip_and_eligibility(rows):
    model_spec, tree = _spec_and_tree(rows)
    flat = masks_lib.flatten(model_spec, tree)
    assert np.asarray(flat).tolist() == [u for r in rows[:-1] for u in r]  # output excluded
    back = masks_lib.unflatten(model_spec, flat, fill=True)
    assert masks_lib.to_rows(model_spec, back)[:-1] == rows[:-1]
    assert bool(np.all(back[f"conv_{len(rows) - 1}"]))
    ok = np.asarray(masks_lib.eligible(model_spec, tree))
    expected = [u and sum(r) > 1 for r in rows[:-1] for u in r]  # never a layer's last unit
    assert ok.tolist() == expected


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (2, 4, 4, 1), elements=st.floats(0, 10, width=32)))
def test_f1_loss_in_unit_interval_with_finite_gradient(out):
    from jaxshrink.core import metrics

    target = (np.arange(32).reshape(2, 4, 4, 1) % 3 == 0).astype(np.float32)
    loss, grad = jax.value_and_grad(metrics.f1_loss)(jnp.asarray(out), jnp.asarray(target))
    assert 0.0 <= float(loss) <= 1.0
    assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.e2e
def test_a_read_only_disk_at_the_results_keeps_the_last_results(tiny_run, tmp_path, monkeypatch):
    c, done, _ = tiny_run
    shutil.copytree(done, tmp_path, dirs_exist_ok=True)
    before = (tmp_path / "results.json").read_bytes()
    real_replace = os.replace

    def read_only(src, dst):
        if str(dst).endswith("results.json"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dst)
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", read_only)
    with pytest.raises(errors.WriteFailed, match="results.json: read-only file system"):
        runner.run(c, str(tmp_path))
    assert (tmp_path / "results.json").read_bytes() == before
    assert not list(tmp_path.glob(".tmp-*"))
