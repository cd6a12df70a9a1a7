"""The records a run leaves behind, typed: what `results.json`, `runs.csv` and
`deploy.json` hold.

Each record is a frozen dataclass made where its values are computed and read where
they are printed. `to_json()` gives the mapping exactly as the files hold it (the same
keys in the same order; tuples become lists, NaN stays NaN until `files.write_json`
writes it as null), and `from_json()` reads such a mapping back, from a file written
today or before these types existed:

* `RoundEntry`: one change a minimization round tested (an entry of ``rounds``);
* `ExportReport`: the compact network `deploy.export.export` wrote (``export``);
* `Evaluated`: steps trained and the eval metrics then (``trained``, ``final``);
* `RunResult`: the whole `results.json` of a single run (or of one that failed);
* `Latency`, `DeployForm`, `DeployReport`: the deploy stage's `deploy.json`, a form's
  latencies a field of their own instead of keys like ``onnxruntime_b1``;
* `SweepRow`: one line of a sweep's `runs.csv`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any


def _float(value) -> float:
    """A float read back from JSON, where NaN and infinities were written as null."""
    return float("nan") if value is None else float(value)


def _items(record) -> list[tuple[str, Any]]:
    """A dataclass's fields and values, in their order (not copied, unlike `asdict`)."""
    return [(f.name, getattr(record, f.name)) for f in dataclasses.fields(record)]


def _ratio(score: float, baseline: float) -> float:
    """score / baseline; NaN for a baseline of 0 (a network that never learned)."""
    return score / baseline if baseline else float("nan")


@dataclasses.dataclass(frozen=True)
class RoundEntry:
    """One change a minimization round tested, and the verdict.

    ``kind`` is 'unit' (a unit or group disabled), 'layer' (a layer bypassed:
    ``candidate`` is the layer's name) or 'grow' (a unit enabled); ``count`` is how
    many units the change covered; ``ratio`` is ``score / reference``.
    """

    kind: str
    candidate: str
    candidate_index: int
    count: int
    score: float
    reference: float
    ratio: float
    accepted: bool
    train_loss: float
    finite: bool

    def to_json(self) -> dict[str, Any]:
        """The entry as `results.json` holds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RoundEntry:
        """Reads an entry of a `results.json` ``rounds`` list (or a sweep's round log)."""
        return cls(
            kind=d["kind"],
            candidate=d["candidate"],
            candidate_index=int(d["candidate_index"]),
            count=int(d["count"]),
            score=_float(d["score"]),
            reference=_float(d["reference"]),
            ratio=_float(d["ratio"]),
            accepted=bool(d["accepted"]),
            train_loss=_float(d["train_loss"]),
            finite=bool(d["finite"]),
        )


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """The compact network: its widths, depth and counts beside the full network's,
    the largest difference of their outputs and both inference times."""

    layers: tuple[str, ...]
    widths: tuple[int, ...]
    full_widths: tuple[int, ...]
    depth: int  # layers that compute (a bypassed layer is left out)
    full_depth: int
    params: int
    full_params: int
    flops: int
    full_flops: int
    max_abs_diff: float
    inference_seconds: float  # median seconds per batch of `timing_batch`
    full_inference_seconds: float
    timing_batch: tuple[int, ...]  # the shape of the timed batch

    def to_json(self) -> dict[str, Any]:
        """The report as `results.json` (``export``) and `model.json` hold it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in _items(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExportReport:
        """Reads the ``export`` record of a `results.json` (or a `model.json`)."""
        values = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        for name in ("layers", "widths", "full_widths", "timing_batch"):
            values[name] = tuple(values[name])
        for name in ("max_abs_diff", "inference_seconds", "full_inference_seconds"):
            values[name] = _float(values[name])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """A network after `steps` training steps and its mean eval metrics (``score``
    among them: the task's score, higher is better); with a validation split, `metrics`
    are the validation split's and `test` the test set's, scored only here."""

    steps: int
    metrics: Mapping[str, float]
    test: Mapping[str, float] | None = None

    @property
    def score(self) -> float:
        return self.metrics["score"]

    def to_json(self) -> dict[str, Any]:
        out = {"steps": self.steps, "eval": dict(self.metrics)}
        if self.test is not None:
            out["test"] = dict(self.test)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Evaluated:
        test = d.get("test")
        return cls(
            int(d["steps"]),
            {k: _float(v) for k, v in d["eval"].items()},
            None if test is None else {k: _float(v) for k, v in test.items()},
        )


@dataclasses.dataclass(frozen=True)
class Latency:
    """Median seconds of one call on a batch of `batch`, by `engine` ('onnxruntime' on
    the CPU with `threads` threads, or 'xla' on `device`)."""

    engine: str
    batch: int
    median_s: float
    repeats: int
    threads: int | None = None
    device: str | None = None

    @property
    def key(self) -> str:
        """How `deploy.json` names it in a form's row, e.g. 'onnxruntime_b1'."""
        return f"{self.engine}_b{self.batch}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"median_s": self.median_s, "repeats": self.repeats}
        if self.threads is not None:
            out["threads"] = self.threads
        if self.device is not None:
            out["device"] = self.device
        return out

    @classmethod
    def from_json(cls, key: str, d: Mapping[str, Any]) -> Latency:
        """Reads the value of row key `key` (``<engine>_b<batch>``)."""
        engine, batch = _LATENCY_KEY.fullmatch(key).groups()
        median_s, repeats = _float(d["median_s"]), int(d["repeats"])
        return cls(engine, int(batch), median_s, repeats, d.get("threads"), d.get("device"))


_LATENCY_KEY = re.compile(r"(onnxruntime|xla)_b(\d+)")


@dataclasses.dataclass(frozen=True)
class DeployForm:
    """One deployable form of a network (a row of the deploy stage's forms table).

    `metrics` are the task's eval metrics and ``score``, in the scorer's order; `info`
    what only some forms have (``widths``, ``bits``, ``ranks``, ``finetune_steps``);
    `onnx` the ONNX file's record (None without ONNX).
    """

    form: str
    metrics: Mapping[str, float]
    params: int
    flops: int
    bytes: int
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    onnx: Mapping[str, Any] | None = None
    latencies: tuple[Latency, ...] = ()

    @property
    def score(self) -> float:
        return self.metrics["score"]

    def latency(self, engine: str, batch: int) -> Latency | None:
        """The latency measured by `engine` at `batch` (None if not measured)."""
        return next((t for t in self.latencies if (t.engine, t.batch) == (engine, batch)), None)

    def to_json(self) -> dict[str, Any]:
        """The row as `deploy.json` holds it: latencies as ``<engine>_b<batch>`` keys."""
        out = {"form": self.form, **self.metrics}
        out.update(params=self.params, flops=self.flops, bytes=self.bytes, **self.info)
        if self.onnx is not None:
            out["onnx"] = dict(self.onnx)
        out.update({t.key: t.to_json() for t in self.latencies})
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeployForm:
        """Reads a row of `deploy.json` ``forms``, which `to_json` wrote in its order:
        the metrics come between ``form`` and ``params``, the info after ``bytes``."""
        keys = list(d)
        counts = keys.index("params"), keys.index("bytes")
        metrics = {k: _float(d[k]) for k in keys[1 : counts[0]]}
        rest = keys[counts[1] + 1 :]
        latencies = tuple(Latency.from_json(k, d[k]) for k in rest if _LATENCY_KEY.fullmatch(k))
        info = {k: d[k] for k in rest if k != "onnx" and not _LATENCY_KEY.fullmatch(k)}
        counted = {k: d[k] for k in ("form", "params", "flops", "bytes")}
        return cls(**counted, metrics=metrics, info=info, onnx=d.get("onnx"), latencies=latencies)


@dataclasses.dataclass(frozen=True)
class DeployReport:
    """What the deploy stage measured (`deploy.json`): every form, the bit-width and
    rank searches' rows, notes where FLOPs fell and latency did not, and where and
    when it was measured."""

    forms: tuple[DeployForm, ...]
    bits: Sequence[Mapping[str, Any]]  # bits, score, bytes, ratio, searched, accepted
    ranks: Sequence[Mapping[str, Any]]  # layer, rank, score, ratio, accepted (, chosen)
    notes: tuple[str, ...]
    score_name: str
    flops_unit: str
    latency_input_shape: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    device: str
    backend: str
    cpu: str
    cpu_count: int | None
    date: str
    command: str
    versions: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        """The record as `deploy.json` (and ``deploy`` in `results.json`) holds it."""
        out = dict(_items(self))
        out["forms"] = [f.to_json() for f in self.forms]
        out["bits"], out["ranks"] = [dict(r) for r in self.bits], [dict(r) for r in self.ranks]
        for name in ("notes", "latency_input_shape", "batch_sizes"):
            out[name] = list(out[name])
        out["versions"] = dict(self.versions)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeployReport:
        values = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        values["forms"] = tuple(DeployForm.from_json(r) for r in d["forms"])
        for name in ("notes", "latency_input_shape", "batch_sizes"):
            values[name] = tuple(values[name])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The `results.json` of a single run.

    A run that failed (``status`` 'failed: <why>') has only `config`, `workdir`,
    `device` and `trained`; every other field is set when ``status`` is 'ok'.
    """

    status: str
    config: Mapping[str, Any]  # the run's config, `ConfigDict.to_dict()`
    workdir: str
    device: str
    trained: Evaluated
    data: Mapping[str, Any] | None = None  # the dataset's `info`
    score_name: str = ""  # the task's score label, e.g. 'F1'
    final: Evaluated | None = None
    reference_ratio: float | None = None  # final / trained score; None for a trained 0
    layers: tuple[str, ...] = ()
    kept: tuple[tuple[bool, ...], ...] = ()  # per layer, per unit
    removed_units: int = 0
    flops_unit: str = ""
    rounds: tuple[RoundEntry, ...] = ()
    export: ExportReport | None = None
    curve: Mapping[str, list] | None = None  # step, loss, eval_step, eval_score
    pictures: tuple[str, ...] = ()
    deploy: DeployReport | None = None
    # Whether its numbers are the same bits on every layout (`runtime.determinism`).
    reproducibility: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def accepted(self) -> int:
        """How many rounds kept their change."""
        return sum(r.accepted for r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        """The record as `results.json` holds it."""
        head = {"status": self.status, "config": self.config, "workdir": self.workdir}
        head["device"] = self.device
        if self.reproducibility is not None:
            head["reproducibility"] = dict(self.reproducibility)
        if not self.ok:
            return {**head, "trained": self.trained.to_json()}
        e = self.export
        out = {
            **head,
            "data": self.data,
            "score": {"name": self.score_name, "key": "score"},
            "trained": self.trained.to_json(),
            "final": self.final.to_json(),
            "reference_ratio": self.reference_ratio,
            "layers": list(self.layers),
            "kept": [list(row) for row in self.kept],
            "widths": {"before": list(e.full_widths), "after": list(e.widths)},
            "removed_units": self.removed_units,
            "params": {"before": e.full_params, "after": e.params},
            "flops": {"before": e.full_flops, "after": e.flops, "unit": self.flops_unit},
            "rounds": [r.to_json() for r in self.rounds],
            "export": e.to_json(),
            "curve": self.curve,
            "pictures": list(self.pictures),
        }
        if self.deploy is not None:
            out["deploy"] = self.deploy.to_json()
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunResult:
        """Reads a `results.json` (``widths``, ``params`` and ``flops`` are read from
        its ``export``, which holds the same numbers)."""
        head = dict(status=d["status"], config=d["config"], workdir=d["workdir"])
        head.update(device=d["device"], trained=Evaluated.from_json(d["trained"]))
        head.update(reproducibility=d.get("reproducibility"))
        if d["status"] != "ok":
            return cls(**head)
        ratio = d["reference_ratio"]
        return cls(
            **head,
            data=d["data"],
            score_name=d["score"]["name"],
            final=Evaluated.from_json(d["final"]),
            reference_ratio=None if ratio is None else float(ratio),
            layers=tuple(d["layers"]),
            kept=tuple(tuple(bool(k) for k in row) for row in d["kept"]),
            removed_units=int(d["removed_units"]),
            flops_unit=d["flops"]["unit"],
            rounds=tuple(RoundEntry.from_json(r) for r in d["rounds"]),
            export=ExportReport.from_json(d["export"]),
            curve=d["curve"],
            pictures=tuple(d.get("pictures", ())),
            deploy=DeployReport.from_json(d["deploy"]) if d.get("deploy") else None,
        )


@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One run of a sweep, a line of `runs.csv`: its network's seed, the strategy and
    threshold it minimized with, the scores before and after, what it removed."""

    status: str  # 'ok' or 'failed: <why>'
    seed: int
    strategy: str
    threshold: float
    baseline: float  # the trained network's eval score
    final: float
    disabled: int  # units removed
    flops_removed: float  # fraction of the full network's FLOPs
    rounds: int
    accepted: int
    steps: int  # minimization training steps
    kept: str  # per layer '#' (kept) or '.', layers apart by spaces

    @property
    def score_ratio(self) -> float:
        return _ratio(self.final, self.baseline)

    @property
    def relative_drop(self) -> float:
        return 1.0 - self.score_ratio

    def to_json(self) -> dict[str, Any]:
        """The row as `runs.csv` and `results.json` (``runs``) hold it."""
        items = _items(self)  # the ratios follow `final`, the sixth column
        ratios = [("relative_drop", self.relative_drop), ("score_ratio", self.score_ratio)]
        return dict(items[:6] + ratios + items[6:])

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SweepRow:
        """Reads a row of `results.json` ``runs`` or of `files.read_csv('runs.csv')`
        (the derived columns, and ``seconds`` where present, are left out)."""
        values = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        for name in ("threshold", "baseline", "final", "flops_removed"):
            values[name] = _float(values[name])
        values["kept"] = str(values["kept"])
        return cls(**values)
