"""Pictures a person can open: input / target / output triptychs (thesis 3.2).

Images are shown on the target's scale, [0, 1] clipped, in gray, so a resemblance
between target and output is a real one, not an artefact of rescaling each picture.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_triptychs(path: str, images, targets, outputs, title: str = "") -> str:
    """Writes a grid with one row per example: input, target, network output.

    Args:
      path: the PNG file to write (its folder is created).
      images, targets, outputs: (N, H, W, 1) arrays with values in [0, 1].
      title: figure title, e.g. the F1 score.

    Returns:
      `path`.
    """
    images, targets, outputs = (np.asarray(a)[..., 0] for a in (images, targets, outputs))
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for row in range(n):
        for col, (name, pic) in enumerate(
            (("input", images), ("target", targets), ("output", outputs))
        ):
            ax = axes[row, col]
            ax.imshow(np.clip(pic[row], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
