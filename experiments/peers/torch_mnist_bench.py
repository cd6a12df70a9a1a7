"""Thesis 004's MNIST classifier trained in plain PyTorch: a peer for `jaxshrink.bench.speed`.

    python experiments/peers/torch_mnist_bench.py DIVISOR SEEDS STEPS BATCH

The network of `configs/mnist.py` with every hidden width divided by DIVISOR (1: the
thesis's 32-64-1024; 8: the `:quick` preset's 4-8-128): 5x5 convolutions ('same',
ReLU) each followed by 2x2 max pooling, a dense layer with ReLU, dropout 0.5, ten
outputs; cross-entropy, Adam at 1e-3 with L2 weight decay 1e-4, BATCH random 28x28
images with random labels. SEEDS networks train one after the other, each with its own
optimizer. After one untimed step per network it times STEPS steps of every network and
prints one JSON line with ``seed_steps_per_s``:

    python -m jaxshrink.bench --config=configs/mnist.py:quick --seeds=1 --methods=loop \\
        --peer="python experiments/peers/torch_mnist_bench.py 8 {seeds} {steps} 32"
"""

import json
import sys
import time

import torch
from torch import nn


def network(divisor: int) -> nn.Sequential:
    c1, c2, hidden = (max(4, w // divisor) for w in (32, 64, 1024))
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, 10),
    )


def main(divisor: int, seeds: int, steps: int, batch: int) -> dict:
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    runs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = network(divisor)
        runs.append((net, torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)))

    def step(net, opt):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for run in runs:  # warm-up
        step(*run)
    start = time.perf_counter()
    for _ in range(steps):
        for run in runs:
            step(*run)
    seconds = time.perf_counter() - start
    return {
        "peer": "pytorch-loop-mnist",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "divisor": divisor,
        "batch": batch,
        "seeds": seeds,
        "steps": steps,
        "seed_steps_per_s": seeds * steps / seconds,
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:5]]
    divisor, seeds, steps, batch = args + [1, 1, 20, 50][len(args) :]
    print(json.dumps(main(divisor, seeds, steps, batch)))
