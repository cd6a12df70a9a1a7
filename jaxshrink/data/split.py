"""The containers every dataset returns: `Split` (one split's arrays) and `Dataset` (two splits).

They live apart from the package's ``__init__`` so that the dataset modules, which the
``__init__`` imports to fill its registry, can import them without a cycle.

Compact storage: a split's arrays may be stored narrower than the float32 the network computes
in, so that a large dataset (the thesis's 34000 256x256 crops: 17.8 GB as float32) fits in
memory, on disk and on the device. The two encodings (`jaxshrink.core.compact`: uint8 k for
k / 255, looked up in `UINT8_VALUES`; float16 widened) are decoded by `decode` on the host and
by `jaxshrink.core.train` per batch inside the compiled step. Every other dtype (float32 images,
int32 labels) is used as it is.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxshrink.core import errors
from jaxshrink.core.compact import UINT8_VALUES


def decode(array: np.ndarray) -> np.ndarray:
    """Returns the float32 values a compact array stands for; other arrays as they are.

    uint8 k becomes ``UINT8_VALUES[k]`` (k / 255), float16 is widened; see the module docstring.
    Decode slices, not whole large splits: ``decode(split.inputs[:8])``.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return UINT8_VALUES[array]
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no single truth.
class Split:
    """Inputs and targets of one split, one example per leading index.

    Attributes:
      inputs: (N, ...) network inputs, e.g. (N, H, W, 1) grayscale images: float32, or compact
        (uint8 or float16, see the module docstring and `decode`); possibly a read-only memory
        map of a cache file.
      targets: (N, ...) what the network should output: (N, H, W, 1) edge maps (float32 or
        compact), (N,) int32 class labels or (N, 1) float32 sums.
      sources: per example, where it came from: a builtin image name, a file path relative to
        the folder, 'name/split[index]' for tfds, ...
    """

    inputs: np.ndarray
    targets: np.ndarray
    sources: tuple[str, ...]

    def __post_init__(self):
        # Only the example count is shared by every dataset; shapes and dtypes are each
        # dataset's own business (an image's target may be an image, a label or a number).
        if not len(self.inputs) == len(self.targets) == len(self.sources):
            raise ValueError(
                f"Split mismatch: inputs {np.shape(self.inputs)}, targets "
                f"{np.shape(self.targets)}, {len(self.sources)} sources."
            )

    def __len__(self) -> int:
        return len(self.inputs)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train and an eval split that share no example, and what they are.

    Attributes:
      train: the split the network learns from.
      eval: the held-out split it is scored on: every score a run computes while it
        trains and shrinks (the threshold rule's included).
      test: with a validation split (`data.validation_fraction` > 0, `split_validation`),
        the dataset's own held-out split, scored once before and once after the
        minimization and nowhere else; `eval` is then the validation part of the
        training data. None without one.
      info: JSON-able facts about the data. Every dataset fills at least ``dataset`` (its
        registry name), ``source``, ``train_examples``, ``eval_examples`` and ``description``
        (one sentence: what the data is and where it came from); `make_info` builds these.
    """

    train: Split
    eval: Split
    info: dict = dataclasses.field(default_factory=dict)
    test: Split | None = None


def split_validation(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """Takes `fraction` of the training examples, drawn with `seed`, as the split every
    score reads (`eval`); the dataset's eval split becomes `test`.

    Thesis 004 holds out 25% of MNIST's training data and 10% of CIFAR-10's (4.1, 4.2)
    and scores its test set once at the end; a threshold rule that reads the test set
    reports an optimistic score. The examples left for training keep their order.
    """
    n = len(dataset.train)
    size = int(round(fraction * n))
    if not 0 < size < n:
        raise errors.ConfigError(
            f"data.validation_fraction: {fraction} of {n} training examples leaves "
            f"{size} for validation and {n - size} for training; allowed: a fraction that "
            "leaves at least one example in each"
        )
    order = np.random.default_rng([seed, 4]).permutation(n)  # a stream of its own
    held, kept = np.sort(order[:size]), np.sort(order[size:])
    train = _take(dataset.train, kept)
    validation = _take(dataset.train, held)
    info = dict(dataset.info)
    info.update(
        train_examples=len(train),
        eval_examples=len(validation),
        test_examples=len(dataset.eval),
        validation_fraction=float(fraction),
        eval_split="validation",
        description=(
            f"{dataset.info['description']}; {len(validation)} of the {n} training examples "
            f"held out for validation (every score of the run), the {len(dataset.eval)} "
            "eval examples kept as the test set (scored before and after only)"
        ),
    )
    return Dataset(train, validation, info, test=dataset.eval)


def _take(split: Split, rows: np.ndarray) -> Split:
    return Split(
        np.asarray(split.inputs[rows]),
        np.asarray(split.targets[rows]),
        tuple(split.sources[i] for i in rows),
    )


def make_info(data_cfg, train: Split, eval_split: Split, description: str, **extra) -> dict:
    """Returns a `Dataset.info` with the keys every dataset fills, then `extra`.

    Args:
      data_cfg: the data config the splits were made from (its `dataset` and `source`).
      train, eval_split: the two splits, for their sizes.
      description: one sentence on what the data is and where it came from.
      **extra: further JSON-able facts of this dataset.
    """
    return {
        "dataset": str(data_cfg.dataset),
        "source": str(data_cfg.source),
        "train_examples": len(train),
        "eval_examples": len(eval_split),
        "description": description,
        **extra,
    }
