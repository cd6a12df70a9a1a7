"""Smaller for deployment: quantized and factorized forms, ONNX files, measured latency.

After a run has minimized its network, `run(job, trained, final, out_dir)` builds four
forms of it and measures what each buys:

* ``full``: the trained network before minimization (every unit);
* ``minimized``: the compact network without the disabled units (`export.compact`);
* ``quantized``: the minimized network with its kernels on an n-bit grid
  (`jaxshrink.deploy.quantize`). Every width in `deploy.bits` is scored and sized; the
  variant uses `deploy.quant_bits`, or with 0 the smallest width the threshold rule
  keeps (widths are tried from the most bits down, each compared with the last kept
  score, as the unit search compares rounds: the network scales itself in bit width);
* ``int8`` (``deploy.onnxruntime_int8``, ONNX only): onnxruntime's own static int8
  quantization of the minimized ONNX file (weights and activations, calibrated on
  eval inputs), the form in which onnxruntime can run integer kernels;
* ``factorized``: the minimized network with conv and dense kernels replaced by
  low-rank pairs (`jaxshrink.deploy.lowrank`: k x 1 then 1 x k convolutions, O P for dense
  layers), the rank of each layer chosen by the same rule, optionally fine-tuned for
  `deploy.finetune_steps` Adam steps.

Scores are the task's evaluation score on the eval split, computed by one compiled
function per network shape: the bit and rank searches change values only, so they
never recompile. Each form is exported with jax2onnx, checked against JAX with
onnxruntime (outputs within 1e-5) and timed with onnxruntime on the CPU and with XLA on
the default backend, at each of `deploy.batch_sizes`, on inputs of
`deploy.input_shape` (a fully convolutional network exported from small crops runs on
256x256 images). Where a form has fewer FLOPs than the full network and is not faster,
a note says so: FLOPs are not latency.

What quantization does and does not buy here: the ONNX file stores the codes as int8
(uint8 when asymmetric) with a Cast and Mul after them, so it is about 4x smaller, and
onnxruntime dequantizes once when it loads the file; the arithmetic stays float32, so
the latency is the minimized network's. Packed n-bit sizes (the `bytes` column) are
what a packed format would store.

Outputs in `out_dir`: ``<form>.onnx``, ``deploy.json`` (every figure, with the device,
date and versions) and ``deploy.md`` (the tables).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxshrink import data as data_lib
from jaxshrink.core import files, groups, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import DeployForm, DeployReport, Latency
from jaxshrink.deploy import export, latency, lowrank
from jaxshrink.deploy import onnx as onnx_export
from jaxshrink.deploy import quantize as quantize_lib

# A form "did not get faster" when its latency is above this fraction of the full one's.
NOT_FASTER = 0.9


@dataclasses.dataclass
class Form:
    """One deployable network: its inference call, its variables and its counts.

    `call(variables, x)` is pure and the same object for every network of one shape
    (the scorer compiles once per call): a chain's module at its kept widths with
    all-true masks, or a plain module's smaller program (`Model.small_program`).
    """

    name: str
    call: Callable  # (variables, x) -> outputs
    variables: dict  # {'params': ..., 'batch_stats': ...}
    params: int
    flops: int
    bytes: int
    fn: Callable | None = None  # x -> outputs, what ONNX gets (default: `apply`)
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> dict:
        """The variables other than the params (batch-norm statistics)."""
        return {k: v for k, v in self.variables.items() if k != "params"}

    def apply(self, x):
        return self.call(self.variables, x)

    def exported(self) -> Callable:
        """The function written to ONNX: its constants are the stored weights."""
        return self.fn or self.apply


def _ones(widths: Mapping[str, int]) -> dict:
    return {name: jnp.ones((int(w),), bool) for name, w in widths.items()}


def _state_bytes(state: Mapping) -> int:
    return 4 * spec_lib.count_params(state)


# ------------------------------------------------------------------------- scoring


def make_scorer(job) -> Callable[[Callable, dict], dict]:
    """`score(apply, variables)`: the task's eval metrics of ``apply(variables, x)``.

    `apply` must be the same object across calls for the compiled function to be
    reused; variables are traced, so new weights of the same shapes never recompile.
    """
    size = int(job.config.train.eval_batch_size)
    eval_data = train.make_eval_data(job.dataset.eval, size)
    task, transform = job.task, job.trainer.eval_transform

    @functools.partial(jax.jit, static_argnums=0)
    def evaluate(apply, variables, data):
        def one_batch(batch):
            x, y = (train.decode(a) for a in batch)
            return task.metrics(apply(variables, transform(x)), y)

        per_example = jax.lax.map(one_batch, (data.inputs, data.targets))
        w = data.weights
        means = {k: jnp.sum(v * w) / jnp.sum(w) for k, v in per_example.items()}
        return {**means, "score": task.score(means)}

    def score(apply, variables) -> dict:
        return {k: float(v) for k, v in evaluate(apply, variables, eval_data).items()}

    return score


def _module_apply(module, masks):
    def apply(variables, x):
        return module.apply(variables, x, masks, train=False)

    return apply


def _call(model) -> Callable:
    """The full network's inference ``call(variables, x)``."""
    if model.wrapped:
        return groups.forward(model.module, model.takes_train)
    return _module_apply(model.module, spec_lib.full(model.spec))


# -------------------------------------------------------------------------- forms


def full_form(model, trained) -> Form:
    variables = {"params": trained.params, **trained.model_state}
    call = _call(model)
    if model.wrapped:
        # The module's own program replayed with every channel (the small program of
        # full masks), as the minimized form is: the same kind of program, timed and
        # exported alike, and no exporter patches of Flax layers in the way.
        call, variables = model.small_program(variables, spec_lib.full(model.spec))
    return Form(
        "full",
        call,
        dict(variables),
        params=spec_lib.count_params(trained.params),
        flops=spec_lib.count_flops(model.spec),
        bytes=4 * spec_lib.count_params(trained.params) + _state_bytes(trained.model_state),
    )


def minimized_form(model, final) -> tuple[Form, spec_lib.ModelSpec]:
    """The compact network, and the spec whose kernel paths its variables have.

    A chain is built at the kept widths (`Model.at_widths`; its spec is that
    network's). A plain module's compact network is its smaller program, whose
    variables keep the paths of the full one (`Model.small_program`).
    """
    widths = model.spec.widths(final.masks)
    info = {"widths": [int(widths[n]) for n in model.spec.names]}
    flops = spec_lib.count_flops(model.spec, final.masks)
    if model.wrapped:
        variables = {"params": final.params, **final.model_state}
        call, small = model.small_program(variables, final.masks)
        small = jax.tree.map(jnp.asarray, dict(small))
        params = spec_lib.count_params(small["params"])
        state_bytes = _state_bytes({k: v for k, v in small.items() if k != "params"})
        form = Form("minimized", call, small, params, flops, 4 * params + state_bytes, info=info)
        return form, model.spec
    small = model.at_widths(widths)
    params = jax.tree.map(jnp.asarray, export.compact(model.spec, final.params, final.masks))
    state = jax.tree.map(
        jnp.asarray, export.compact_state(model.spec, final.model_state, final.masks)
    )
    form = Form(
        "minimized",
        _module_apply(small.module, _ones(widths)),
        {"params": params, **state},
        params=spec_lib.count_params(params),
        flops=flops,
        bytes=4 * spec_lib.count_params(params) + _state_bytes(state),
        info=info,
    )
    return form, small.spec


def _stored_kernels(codes: Mapping) -> dict:
    """Per layer: (codes in the narrowest integer dtype, zero point, scale) as numpy."""
    out = {}
    for name, qt in codes.items():
        q = np.asarray(qt.q)
        dtype = np.int8 if q.min() >= -128 and q.max() <= 127 else np.uint8
        out[name] = (
            q.astype(dtype),
            np.asarray(qt.zero_point, np.float32),
            np.asarray(qt.scale, np.float32),
        )
    return out


def quantized_form(minimized: Form, small_spec, scheme) -> Form:
    """`minimized` with its kernels on the grid of `scheme`; its ONNX function computes
    each kernel from integer codes, so the file stores them as integers."""
    params = minimized.variables["params"]
    qparams = quantize_lib.quantize_params(small_spec, params, scheme)
    stored = _stored_kernels(quantize_lib.codes(small_spec, params, scheme))
    paths = dict(small_spec.kernel_leaves())
    state = minimized.state

    def fn(x):
        p = params
        for name, (q, zero, scale) in stored.items():
            kernel = jnp.asarray(q).astype(jnp.float32)
            if np.any(zero):
                kernel = kernel - zero
            p = spec_lib.set_path(p, paths[name].path, kernel * scale)
        return minimized.call({"params": p, **state}, x)

    return Form(
        "quantized",
        minimized.call,
        {"params": qparams, **state},
        params=minimized.params,
        flops=minimized.flops,
        bytes=quantize_lib.stored_bytes(small_spec, params, scheme) + _state_bytes(state),
        fn=fn,
        info={
            "bits": scheme.bits,
            "symmetric": scheme.symmetric,
            "per_channel": scheme.per_channel,
        },
    )


def factorized_form(
    model, minimized: Form, small_spec, ranks: Mapping[str, int], input_shape
) -> Form:
    """The minimized network with the layers in `ranks` built as low-rank pairs (a
    chain's: its `Model.factorized` builder)."""
    # Per layer of the full network: a bypassed layer has width 0 and is not in `small`.
    widths = dict(zip(model.spec.names, minimized.info["widths"]))
    module = model.factorized(widths, dict(ranks))
    params = lowrank.factorize_params(small_spec, minimized.variables["params"], ranks)
    state = minimized.state
    masks = _ones(widths)
    return Form(
        "factorized",
        _module_apply(module, masks),
        {"params": jax.tree.map(jnp.asarray, params), **state},
        params=spec_lib.count_params(params),
        flops=lowrank.count_flops(module, input_shape, masks),
        bytes=4 * spec_lib.count_params(params) + _state_bytes(state),
        info={"ranks": {k: int(v) for k, v in ranks.items()}},
    )


def finetune(form: Form, job, steps: int, seed: int) -> Form:
    """`steps` Adam steps (the run's learning rate and batch size) on `form`'s params.

    Inputs are the train split seen as at evaluation (no augmentation) and batch norm
    uses its running statistics, so only the weights move.
    """
    data = train.make_train_data(job.dataset.train)
    batch = int(job.config.train.batch_size)
    tx = optax.adam(float(job.config.optim.learning_rate))
    state = form.state
    task, transform = job.task, job.trainer.eval_transform

    def loss_of(params, x, y):
        return task.loss(form.call({"params": params, **state}, x), y)

    @jax.jit
    def run(params, key):
        def step(carry, k):
            params, opt = carry
            idx = jax.random.randint(k, (batch,), 0, data.inputs.shape[0])
            x = transform(train.decode(data.inputs[idx]))
            grads = jax.grad(loss_of)(params, x, train.decode(data.targets[idx]))
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        keys = jax.random.split(key, steps)
        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params

    params = run(form.variables["params"], jax.random.PRNGKey(seed))
    info = {**form.info, "finetune_steps": int(steps)}
    return dataclasses.replace(form, variables={"params": params, **state}, info=info)


# ------------------------------------------------------------------------ searches


def _search_setup(job, minimized: Form, score) -> tuple[float, Callable, float]:
    """What both searches start from: the threshold, the minimized network's apply
    (one compiled scorer for every trial) and its score, the first reference."""
    d, m = job.config.deploy, job.config.minimize
    threshold = float(d.threshold if d.threshold is not None else m.threshold)
    return threshold, minimized.call, score(minimized.call, minimized.variables)["score"]


def search_bits(job, minimized: Form, small_spec, score) -> tuple[list[dict], int | None]:
    """Scores and sizes of every width in `deploy.bits`, and the width the rule keeps.

    A row's `ratio` is its score over the minimized network's; the rule itself
    compares each width with the last kept one (`minimize.reference`)."""
    d = job.config.deploy
    threshold, apply, reference = _search_setup(job, minimized, score)
    params, state = minimized.variables["params"], minimized.state
    table = {}
    for bits in d.bits:
        scheme = quantize_lib.Scheme(int(bits), bool(d.symmetric), bool(d.per_channel))
        qparams = quantize_lib.quantize_params(small_spec, params, scheme)
        table[int(bits)] = {
            "bits": int(bits),
            "score": score(apply, {"params": qparams, **state})["score"],
            "bytes": quantize_lib.stored_bytes(small_spec, params, scheme) + _state_bytes(state),
        }
    order = sorted(table, reverse=True)
    chosen, trials = quantize_lib.search_bits(
        lambda b: table[b]["score"], order, reference, threshold, job.config.minimize.reference
    )
    kept = {t["bits"]: t for t in trials}
    rows = []
    for bits in order:
        row = dict(table[bits], ratio=table[bits]["score"] / reference if reference else None)
        row["searched"] = bits in kept
        row["accepted"] = bool(kept.get(bits, {}).get("accepted", False))
        rows.append(row)
    if int(d.quant_bits):
        chosen = int(d.quant_bits)
    return rows, chosen


def search_ranks(job, minimized: Form, small_spec, score) -> tuple[dict[str, int], list[dict]]:
    """The rank per layer the threshold rule keeps, scored on reconstructed kernels
    (same shapes as the minimized network: one compilation for every trial)."""
    threshold, apply, reference = _search_setup(job, minimized, score)
    params, state = minimized.variables["params"], minimized.state
    layers = [
        (layer.name, lowrank.saving_rank(layer, spec_lib.get(params, layer.kernel).shape))
        for layer in lowrank.factorizable(small_spec)
    ]

    def score_of(ranks):
        approx = lowrank.approximate_params(small_spec, params, ranks)
        return score(apply, {"params": approx, **state})["score"]

    rule = job.config.minimize.reference
    return lowrank.search_ranks(score_of, layers, reference, threshold, rule)


# ------------------------------------------------------------- onnxruntime's int8


def score_outputs(job, predict: Callable[[np.ndarray], np.ndarray]) -> dict:
    """The task's eval metrics of a host-side `predict` (e.g. an onnxruntime session)."""
    split, size = job.dataset.eval, int(job.config.train.eval_batch_size)
    parts = []
    for i in range(0, len(split), size):
        x = job.trainer.eval_transform(jnp.asarray(data_lib.decode(split.inputs[i : i + size])))
        y = jnp.asarray(data_lib.decode(split.targets[i : i + size]))
        parts.append(job.task.metrics(jnp.asarray(predict(np.asarray(x))), y))
    means = {k: jnp.mean(jnp.concatenate([p[k] for p in parts])) for k in parts[0]}
    return {**{k: float(v) for k, v in means.items()}, "score": float(job.task.score(means))}


def onnxruntime_int8(job, minimized: Form, src: str, out_dir: str) -> DeployForm:
    """onnxruntime's own static int8 quantization of the minimized ONNX file.

    Weights int8 per channel and activations uint8, calibrated on eval inputs
    (`onnxruntime.quantization.quantize_static`, QDQ format): unlike the weight-only
    `quantized` form, onnxruntime can then run integer kernels. Scored on its own
    outputs, so its score includes the activations' rounding.
    """
    from onnxruntime import quantization as ort_q

    split = job.dataset.eval
    n = min(len(split), 32)
    calib = np.asarray(job.trainer.eval_transform(jnp.asarray(data_lib.decode(split.inputs[:n]))))
    name = onnx_export.session(src).get_inputs()[0].name

    class Reader(ort_q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: calib[i : i + 1]} for i in range(n)])

        def get_next(self):
            return next(self.batches, None)

    path = os.path.join(out_dir, "int8.onnx")
    with files.atomic_path(path) as tmp:
        ort_q.quantize_static(
            src,
            tmp,
            Reader(),
            quant_format=ort_q.QuantFormat.QDQ,
            per_channel=True,
            weight_type=ort_q.QuantType.QInt8,
            activation_type=ort_q.QuantType.QUInt8,
        )
    sess = onnx_export.session(path)
    return DeployForm(
        "int8",
        score_outputs(job, lambda x: onnx_export.run(sess, x)),
        params=minimized.params,
        flops=minimized.flops,
        bytes=os.path.getsize(path),
        onnx={"path": "int8.onnx", "bytes": os.path.getsize(path), "calibration": n},
    )


# ------------------------------------------------------------------------ measuring


def _inputs(d, latency_shape) -> dict[int, np.ndarray]:
    """The latency batches: uniform [0, 1) inputs, the same for every form."""
    rng = np.random.default_rng(0)
    return {
        int(b): rng.uniform(size=(int(b), *latency_shape)).astype(np.float32) for b in d.batch_sizes
    }


def _timing(d) -> dict:
    return dict(repeats=int(d.repeats), budget_s=float(d.budget_s))


def _ort_latencies(name: str, out_dir: str, d, latency_shape) -> tuple[Latency, ...]:
    path = os.path.join(out_dir, name)
    return tuple(
        Latency(
            "onnxruntime",
            b,
            **latency.onnxruntime_latency(path, x, threads=int(d.threads), **_timing(d)),
        )
        for b, x in _inputs(d, latency_shape).items()
    )


def _measure(
    form: Form, out_dir: str, d, check_x, model_shape, latency_shape
) -> tuple[dict | None, tuple[Latency, ...]]:
    """ONNX file, its check, and the latencies of one form: (ONNX record, latencies)."""
    onnx, latencies = None, ()
    spatial = tuple(latency_shape) != tuple(model_shape)
    if d.onnx:
        path = os.path.join(out_dir, f"{form.name}.onnx")
        onnx = onnx_export.to_onnx(
            form.exported(), model_shape, path, spatial=spatial, opset=int(d.opset)
        )
        onnx["max_abs_diff"] = onnx_export.check(path, form.exported(), check_x)
        latencies = _ort_latencies(onnx["path"], out_dir, d, latency_shape)
    for b, x in _inputs(d, latency_shape).items():
        latencies += (Latency("xla", b, **latency.xla_latency(form.exported(), x, **_timing(d))),)
    return onnx, latencies


def _notes(rows: list[DeployForm]) -> list[str]:
    """Where a form has fewer FLOPs than the full network and is not faster."""
    full = next(r for r in rows if r.form == "full")
    notes = []
    for row in rows:
        if row.form == "full":
            continue
        for t in row.latencies:
            ratio = t.median_s / full.latency(t.engine, t.batch).median_s
            if row.flops < full.flops and ratio > NOT_FASTER:
                notes.append(
                    f"{row.form}: FLOPs {row.flops / full.flops:.0%} of the full "
                    f"network's, but {t.key} latency {ratio:.0%} of its"
                )
    return notes


def run(job, trained, final, out_dir: str, log=print) -> DeployReport:
    """Builds, scores, exports and times the deployable forms of one run.

    Args:
      job: the run's `Job` (config, data, model, task, trainer).
      trained: the trained run before minimization (one run, no batch axis).
      final: the minimized run.
      out_dir: where the ONNX files, `deploy.json` and `deploy.md` go.
      log: progress lines.

    Returns:
      The `DeployReport` that `deploy.json` holds.
    """
    d = job.config.deploy
    if d.onnx:
        onnx_export.require()
    model = job.model
    model_shape = tuple(model.spec.input_shape)
    latency_shape = tuple(d.input_shape) or model_shape
    score = make_scorer(job)
    forms, bit_rows, rank_trials = _forms(job, trained, final, score, log)
    check_x = np.asarray(
        job.trainer.eval_transform(jnp.asarray(train.decode(job.dataset.eval.inputs[:8])))
    )
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for form in forms:
        log(f"deploy: {form.name}: scoring, ONNX export and latency")
        metrics = score(form.call, form.variables)
        onnx, latencies = _measure(form, out_dir, d, check_x, model_shape, latency_shape)
        counts = dict(params=form.params, flops=form.flops, bytes=form.bytes, info=dict(form.info))
        rows.append(DeployForm(form.name, metrics, **counts, onnx=onnx, latencies=latencies))
        if form.name == "minimized" and d.onnx and d.onnxruntime_int8:
            log("deploy: int8 (onnxruntime static quantization): scoring and latency")
            src = os.path.join(out_dir, "minimized.onnx")
            int8 = onnxruntime_int8(job, form, src, out_dir)
            ort = _ort_latencies(int8.onnx["path"], out_dir, d, latency_shape)
            rows.append(dataclasses.replace(int8, latencies=ort))
    record = _report(job, rows, bit_rows, rank_trials, model_shape, latency_shape)
    files.write_json(os.path.join(out_dir, "deploy.json"), record.to_json())
    files.write_text(os.path.join(out_dir, "deploy.md"), markdown(record))
    return record


def _forms(job, trained, final, score, log) -> tuple[list, list, list]:
    """The forms to deploy: full, minimized, and the quantized and factorized forms whose
    searches found one that clears the rule; returns (forms, bit rows, rank trials)."""
    d, model = job.config.deploy, job.model
    forms = [full_form(model, trained)]
    minimized, small_spec = minimized_form(model, final)
    forms.append(minimized)

    log(f"deploy: scoring {len(d.bits)} bit widths")
    bit_rows, bits = search_bits(job, minimized, small_spec, score)
    if bits is not None:
        scheme = quantize_lib.Scheme(int(bits), bool(d.symmetric), bool(d.per_channel))
        forms.append(quantized_form(minimized, small_spec, scheme))
    rank_trials, ranks = [], {}
    if d.lowrank and model.factorized is None:
        log("deploy: the model has no `factorized` builder; low rank skipped")
    elif d.lowrank:
        ranks, rank_trials = search_ranks(job, minimized, small_spec, score)
        log(f"deploy: ranks kept {ranks or 'none (no layer clears the rule)'}")
        if ranks:
            form = factorized_form(
                model, minimized, small_spec, ranks, tuple(model.spec.input_shape)
            )
            if int(d.finetune_steps):
                form = finetune(form, job, int(d.finetune_steps), int(job.config.seed))
            forms.append(form)
    return forms, bit_rows, rank_trials


def _report(job, rows, bit_rows, rank_trials, model_shape, latency_shape) -> DeployReport:
    """The deploy stage's record: its forms and searches, and where and when it ran."""
    return DeployReport(
        forms=tuple(rows),
        bits=bit_rows,
        ranks=rank_trials,
        notes=tuple(_notes(rows)),
        score_name=job.task.score_label,
        flops_unit=f"forward FLOPs per example of shape {list(model_shape)}",
        latency_input_shape=tuple(latency_shape),
        batch_sizes=tuple(int(b) for b in job.config.deploy.batch_sizes),
        device=jax.devices()[0].device_kind,
        backend=jax.default_backend(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        date=datetime.date.today().isoformat(),
        command=_command(),
        versions=_versions(),
    )


def _versions() -> dict:
    out = {}
    for name in ("jax", "flax", *onnx_export.PACKAGES):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _command() -> str:
    """The command line that ran this, as typed (``python -m jaxshrink.main ...``)."""
    program, *args = sys.argv
    if program.endswith(os.path.join("jaxshrink", "main.py")):
        program = "python -m jaxshrink.main"
    return " ".join([os.path.basename(program) if os.sep in program else program, *args])


def _ms(value: Latency | None) -> str:
    return f"{value.median_s * 1e3:.2f}" if value is not None else "-"


def _forms_table(record: DeployReport) -> list[str]:
    """The forms' Markdown table: scores, counts and latencies (the columns are the
    first form's latencies; '-' where a form was not timed so)."""
    label = record.score_name
    timed = [(t.engine, t.batch) for t in record.forms[0].latencies]
    engines = {"onnxruntime": "ORT", "xla": "xla"}
    head = ["form", label, "params", "FLOPs", "bytes", "ONNX bytes"]
    head += [f"{engines[engine]} b{batch} ms" for engine, batch in timed]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in record.forms:
        onnx_bytes = (r.onnx or {}).get("bytes", "-")
        cells = [
            r.form,
            f"{r.score:.4g}",
            f"{r.params:,}",
            f"{r.flops:,}",
            f"{r.bytes:,}",
            f"{onnx_bytes:,}" if onnx_bytes != "-" else "-",
        ]
        cells += [_ms(r.latency(engine, batch)) for engine, batch in timed]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(record: DeployReport) -> str:
    """The tables of a `deploy.json` record."""
    label = record.score_name
    out = [
        f"Latency inputs {list(record.latency_input_shape)} ({record.device}, "
        f"{record.cpu_count} CPU cores, {record.date}); FLOPs: {record.flops_unit}.",
        "",
        *_forms_table(record),
        "",
        "| bits | " + label + " | ratio | bytes | kept by the rule |",
        "|---|---|---|---|---|",
    ]
    for r in record.bits:
        kept = "yes" if r["accepted"] else ("no" if r["searched"] else "not tried")
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        out.append(f"| {r['bits']} | {r['score']:.4g} | {ratio} | {r['bytes']:,} | {kept} |")
    if record.ranks:
        out += [
            "",
            "| layer | rank | " + label + " | ratio | clears the rule |",
            "|---|---|---|---|---|",
        ]
        for t in record.ranks:
            out.append(
                f"| {t['layer']} | {t['rank']} | {t['score']:.4g} | {t['ratio']:.3f} | "
                f"{'yes' if t['accepted'] else 'no'} |"
            )
    if record.notes:
        out += ["", "FLOPs fell, latency did not:", *[f"- {n}" for n in record.notes]]
    return "\n".join(out) + "\n"
