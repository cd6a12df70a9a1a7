"""The step benchmark runs any config on synthetic data and reports time and memory."""

import json

from conftest import load_config

from jaxshrink.bench import stepbench


def test_reports_time_and_memory_per_group_size(tmp_path):
    c = load_config("summation", "quick")
    c.model.hidden = (8,)
    c.data.train_size = 100
    c.train.batch_size = 4
    out = tmp_path / "s.json"
    report = stepbench.run(c, [1, 2], steps=1, repeats=1, out=str(out))
    assert json.loads(out.read_text())["rows"] == report["rows"]
    one, two = report["rows"]
    assert (one["runs"], two["runs"]) == (1, 2)
    assert one["params_per_run"] == two["params_per_run"] > 0
    assert one["step_seconds"] > 0 and two["step_seconds_per_run"] > 0
    if "peak_gib" in one:  # XLA's memory analysis: two runs hold twice the state
        assert two["argument_gib"] > 1.5 * one["argument_gib"] - 1e-3


def test_classifier_targets_are_labels():
    c = load_config("mnist", "quick")
    c.model.layers = ("conv:4:3", "maxpool:2", "dense:10")
    trainer = stepbench.train.from_config(c, (28, 28, 1))
    d = stepbench.synthetic_data(trainer, (28, 28, 1), 8)
    assert d.inputs.shape == (8, 28, 28, 1) and d.targets.dtype.name == "int32"
    assert int(d.targets.max()) < 10


def test_importing_it_defines_no_flag_beside_the_main_programs():
    # `jaxshrink.bench.speed` imports it; the command line's flags (`--config`, ...)
    # are defined only when it runs as a program.
    from absl import flags

    import jaxshrink.main  # noqa: F401 -- defines its own --config

    assert "runs" not in flags.FLAGS and "repeats" not in flags.FLAGS
    assert "cifar10.py:b" not in flags.FLAGS["config"].help  # main's, not stepbench's
