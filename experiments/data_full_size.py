"""The thesis's data at full size: build time, cache size, load time and memory of 34000 crops.

Thesis 001 trained on 20000 and evaluated on about 14000 256x256 grayscale crops of VOC2012
photographs. This script makes a synthetic folder of that many VOC-sized JPEGs (500x375 and
375x500, smooth colour fields with noise, quality 90), then, each in a fresh process so that
one stage's memory does not count in the next:

  1. builds the Sobel dataset with the folder source (every image, eval_fraction 14000/34000),
     which writes the compact cache one image at a time;
  2. loads it from the cache (memory maps), reads every page, and puts both splits on the
     default JAX device the way a run does (`train.make_train_data`, `train.make_eval_data`).

It records wall times, the cache's size on disk and the peak resident memory of each process,
and writes them as JSON:

    python experiments/data_full_size.py --folder=DIR/JPEGImages --cache=DIR/cache \\
        --out=experiments/results/data_full_size.json

``--images`` sets the folder's size (default 34000); an existing folder of that many JPEGs is
reused. The folder and the cache are left for you to delete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

THESIS_TRAIN, THESIS_EVAL = 20000, 14000


def generate(folder: Path, count: int) -> float:
    """Writes `count` synthetic VOC-sized JPEGs into `folder`; returns the seconds it took."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) == count:
        return 0.0
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(count):
        width, height = (500, 375) if i % 4 else (375, 500)
        field = rng.integers(0, 256, (6, 8, 3), np.uint8)
        base = Image.fromarray(field).resize((width, height), Image.BICUBIC)
        noisy = np.asarray(base, np.int16) + rng.integers(-20, 21, (height, width, 1), np.int16)
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        image.save(folder / f"2026_{i:06d}.jpg", quality=90)
    return time.perf_counter() - start


def _config(folder: str, cache: str, images: int):
    from jaxshrink import data

    cfg = data.default_config("sobel")
    cfg.source, cfg.folder, cfg.cache_dir = "folder", folder, cache
    cfg.eval_fraction = THESIS_EVAL / (THESIS_TRAIN + THESIS_EVAL)
    return cfg


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def stage_build(folder: str, cache: str, images: int) -> dict:
    from jaxshrink import data

    start = time.perf_counter()
    dataset = data.load_dataset(_config(folder, cache, images))
    seconds = time.perf_counter() - start
    entry = Path(dataset.info["cache_file"])
    return {
        "build_s": seconds,
        "from_cache": dataset.info["from_cache"],
        "train_crops": len(dataset.train),
        "eval_crops": len(dataset.eval),
        "stored": dataset.info["stored"],
        "cache_bytes": sum(p.stat().st_size for p in entry.iterdir()),
        "build_peak_rss_gib": _peak_rss_gib(),
    }


def stage_load(folder: str, cache: str, images: int) -> dict:
    import jax
    import numpy as np

    from jaxshrink import data
    from jaxshrink.core import train

    start = time.perf_counter()
    dataset = data.load_dataset(_config(folder, cache, images))
    open_s = time.perf_counter() - start
    assert dataset.info["from_cache"], "the build stage should have cached it"
    after_open = _peak_rss_gib()
    start = time.perf_counter()
    total = 0.0
    for split in (dataset.train, dataset.eval):
        for array in (split.inputs, split.targets):
            for i in range(0, len(array), 1000):  # Every page, 1000 crops at a time.
                total += float(np.sum(array[i : i + 1000], dtype=np.float64))
    read_s = time.perf_counter() - start
    after_read = _peak_rss_gib()
    start = time.perf_counter()
    train_data = train.make_train_data(dataset.train)
    eval_data = train.make_eval_data(dataset.eval, 50)
    jax.block_until_ready((train_data, eval_data))
    device_s = time.perf_counter() - start
    device_bytes = sum(a.nbytes for a in jax.tree.leaves((train_data, eval_data)))
    return {
        "open_s": open_s,
        "read_every_page_s": read_s,
        "to_device_s": device_s,
        "device_bytes": int(device_bytes),
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
        "peak_rss_gib_after_open": after_open,
        "peak_rss_gib_after_reading_every_page": after_read,
        "peak_rss_gib_after_device_put": _peak_rss_gib(),
        "checksum": total,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="where the synthetic JPEGs go")
    parser.add_argument("--cache", required=True, help="the cache folder (outside --folder)")
    parser.add_argument("--images", type=int, default=THESIS_TRAIN + THESIS_EVAL)
    parser.add_argument("--out", default="", help="JSON file for the figures")
    parser.add_argument("--stage", choices=("build", "load"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # A child process: one stage, its figures as JSON on the last line.
        stage = {"build": stage_build, "load": stage_load}[args.stage]
        print(json.dumps(stage(args.folder, args.cache, args.images)))
        return

    generate_s = generate(Path(args.folder), args.images)
    jpeg_bytes = sum(p.stat().st_size for p in Path(args.folder).glob("*.jpg"))
    figures = {}
    for name in ("build", "load"):
        command = [sys.executable, __file__, f"--stage={name}"]
        command += [f"--folder={args.folder}", f"--cache={args.cache}", f"--images={args.images}"]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, figures[name], flush=True)
    crops = figures["build"]["train_crops"] + figures["build"]["eval_crops"]
    result = {
        "what": "thesis 001 section 2.2 at full size: synthetic VOC-sized JPEG folder, Sobel",
        "date": datetime.date.today().isoformat(),
        "command": "python experiments/data_full_size.py --folder=DIR --cache=DIR --out=FILE",
        "cpu": f"{_cpu_name()}, {os.cpu_count()} cores",
        "platform": platform.platform(),
        "images": args.images,
        "jpeg_bytes": jpeg_bytes,
        "generate_s": generate_s,
        "float32_bytes_would_be": crops * 256 * 256 * 4 * 2,
        **figures,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
