"""Atomic writers: round trips, created folders, and failures that leave no trace."""

import errno
import json
import math
import os
import stat

import numpy as np
import pytest

from jaxshrink.core import errors, files


def _names(folder):
    return sorted(os.listdir(folder))


def test_write_json_round_trip_and_format(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    obj = {"x": 1, "y": [1.5, "s", None, True], "z": {"k": 0.1}}
    assert files.write_json(path, obj) == str(path)
    text = path.read_text()
    assert text == json.dumps(obj, indent=2) + "\n"
    assert json.loads(text) == obj
    assert _names(path.parent) == ["out.json"]


def test_write_json_numpy_and_non_finite(tmp_path):
    path = tmp_path / "out.json"
    files.write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": math.nan, "d": (1,)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1]}


def test_write_text_replaces_and_keeps_normal_mode(tmp_path):
    path = tmp_path / "new" / "t.txt"
    files.write_text(path, "old")
    files.write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_csv_round_trip(tmp_path):
    rows = [
        {"seed": 0, "strategy": "cosine", "threshold": 0.85, "f": 1 / 3, "ok": True, "n": None},
        {"seed": -2, "strategy": "random", "threshold": 1.0, "f": 1e-20, "ok": False, "n": 7},
        {"seed": 3, "strategy": "1.5x", "threshold": 0.9, "f": math.inf, "ok": True, "n": 1},
    ]
    path = tmp_path / "sub" / "runs.csv"
    files.write_csv(path, rows)
    assert path.read_text().splitlines()[0] == "seed,strategy,threshold,f,ok,n"
    back = files.read_csv(path)
    assert back == rows
    assert type(back[1]["threshold"]) is float and type(back[0]["seed"]) is int


def test_csv_numpy_values_nan_and_fieldnames(tmp_path):
    path = tmp_path / "r.csv"
    files.write_csv(
        path, [{"b": np.float64(0.1), "a": np.int64(4)}, {"a": 5}], fieldnames=["a", "b", "c"]
    )
    back = files.read_csv(path)
    assert back == [{"a": 4, "b": 0.1, "c": None}, {"a": 5, "b": None, "c": None}]
    files.write_csv(path, [{"x": math.nan}])
    assert math.isnan(files.read_csv(path)[0]["x"])


def test_csv_strings_that_are_not_numbers_stay_strings(tmp_path):
    path = tmp_path / "r.csv"
    files.write_csv(path, [{"a": "1_000", "b": " 2", "c": "true", "d": "1e5x"}])
    assert files.read_csv(path) == [{"a": "1_000", "b": " 2", "c": "true", "d": "1e5x"}]


def test_csv_empty(tmp_path):
    path = tmp_path / "e.csv"
    files.write_csv(path, [])
    assert path.read_text() == "" and files.read_csv(path) == []
    files.write_csv(path, [], fieldnames=["a", "b"])
    assert path.read_text() == "a,b\n" and files.read_csv(path) == []


def test_atomic_path_keeps_suffix_and_replaces(tmp_path):
    path = tmp_path / "deep" / "fig.png"
    with files.atomic_path(path) as tmp:
        assert os.path.dirname(tmp) == str(path.parent)
        assert os.path.basename(tmp).startswith(".tmp-") and tmp.endswith(".png")
        assert not path.exists()
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new"
    assert _names(path.parent) == ["fig.png"]


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "data.json"
    files.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), files.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write('{"v": 2')  # half written, then the writer dies
        raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"v": 1}
    assert _names(tmp_path) == ["data.json"]


def test_failed_csv_write_leaves_old_file(tmp_path):
    path = tmp_path / "runs.csv"
    files.write_csv(path, [{"a": 1}])
    with pytest.raises(ValueError):
        files.write_csv(path, [{"a": 2}, {"a": 3, "unexpected": 4}])
    assert files.read_csv(path) == [{"a": 1}]
    assert _names(tmp_path) == ["runs.csv"]


@pytest.mark.parametrize(
    "code, cause",
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "read-only file system"),
        (errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_a_disk_that_refuses_the_write_is_one_user_error_and_the_old_file_stays(
    tmp_path, monkeypatch, code, cause
):
    path = tmp_path / "results.json"
    files.write_json(path, {"a": 1})

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), src)

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(errors.WriteFailed) as raised:
        files.write_json(path, {"a": 2})
    assert str(raised.value).startswith(f"cannot write {path}: {cause}; results.json as it")
    assert "\n" not in str(raised.value)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left


def test_other_write_errors_keep_their_own_type(tmp_path, monkeypatch):
    def missing(src, dst):
        raise FileNotFoundError(errno.ENOENT, "gone", src)

    monkeypatch.setattr(files.os, "replace", missing)
    with pytest.raises(FileNotFoundError):
        files.write_text(tmp_path / "a.txt", "x")


def test_disk_failure_reads_wrapped_and_worded_causes():
    assert errors.disk_failure(OSError(errno.ENOSPC, "x")) == "no space left on device"
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as outer:
        assert errors.disk_failure(outer) == "disk quota exceeded"
    # tensorstore reports the cause in its message only
    worded = ValueError("Error writing file: [OS error 30: Read-only file system]")
    assert errors.disk_failure(worded) == "read-only file system"
    assert errors.disk_failure(OSError(errno.ENOENT, "No such file")) is None
    assert errors.disk_failure(KeyError("x")) is None
