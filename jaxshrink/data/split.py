"""The containers every dataset returns: `Split` (one split's arrays) and `Dataset` (two splits).

They live apart from the package's ``__init__`` so that the dataset modules, which the
``__init__`` imports to fill its registry, can import them without a cycle.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no single truth.
class Split:
    """Inputs and targets of one split, one example per leading index.

    Attributes:
      inputs: (N, ...) float32 network inputs, e.g. (N, H, W, 1) grayscale images.
      targets: (N, ...) what the network should output: (N, H, W, 1) edge maps, (N,) int32 class
        labels or (N, 1) float32 sums.
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
      eval: the held-out split it is scored on.
      info: JSON-able facts about the data. Every dataset fills at least ``dataset`` (its
        registry name), ``source``, ``train_examples``, ``eval_examples`` and ``description``
        (one sentence: what the data is and where it came from); `make_info` builds these.
    """

    train: Split
    eval: Split
    info: dict = dataclasses.field(default_factory=dict)


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
