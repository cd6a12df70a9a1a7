"""The thesis's edge FCN trained in plain PyTorch: the peer `jaxshrink.bench.speed` compares with.

    python experiments/peers/torch_fcn_bench.py SIZE SEEDS STEPS

The same training as `python -m jaxshrink.bench`: convolutions 1 -> 5 -> 5 -> 1 of 5x5
('same' padding, ReLU after each, also the last), weights and biases from a normal of
std 0.05 cut at 2 std, the soft F1 loss of thesis 001 (2.3.1) per image, Adam at
1e-3, batches of 3 uniform images with 10% edge pixels. SEEDS networks are trained
one after the other in a loop, each with its own optimizer, as a PyTorch user would.
After one untimed step per network it times STEPS steps of every network and prints
one JSON line with ``seed_steps_per_s``. It needs only torch and numpy
(``pip install torch numpy``; the CPU wheels are enough); run it with
`python -m jaxshrink.bench --peer="python experiments/peers/torch_fcn_bench.py {size}
{seeds} {steps}"` to see both rates and their ratio in one table.
"""

import json
import sys
import time

import torch
from torch import nn


def network() -> nn.Sequential:
    layers = []
    for cin, cout in ((1, 5), (5, 5), (5, 1)):
        conv = nn.Conv2d(cin, cout, 5, padding=2)
        for p in (conv.weight, conv.bias):
            nn.init.trunc_normal_(p, std=0.05, a=-0.1, b=0.1)
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers)


def soft_f1_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E / (2 TP + E) per image, E the summed absolute error, then the mean."""
    out, target = out.flatten(1), target.flatten(1)
    error = (out - target).abs().sum(1)
    return (error / (2 * (out * target).sum(1) + error)).mean()


def main(size: int, seeds: int, steps: int) -> dict:
    x = torch.rand(3, 1, size, size)
    y = (torch.rand(3, 1, size, size) < 0.1).float()
    runs = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = network()
        runs.append((net, torch.optim.Adam(net.parameters(), lr=1e-3)))

    def step(net, opt):
        loss = soft_f1_loss(net(x), y)
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
        "peer": "pytorch-loop",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": size,
        "seeds": seeds,
        "steps": steps,
        "seed_steps_per_s": seeds * steps / seconds,
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    size, seeds, steps = args + [256, 1, 20][len(args) :]
    print(json.dumps(main(size, seeds, steps)))
