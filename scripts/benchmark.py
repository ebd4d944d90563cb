"""CPU benchmark of LiteNeXt: size, MACs, inference latency and the cost of a SeRP training step.

Timings are medians over repeated runs in ONE process, interleaved across variants, and are
reported with ratios to the default model, because absolute times on shared machines drift
(spec §4). Protocol: batch 1, ``torch.set_num_threads(--threads)``, warm-up runs first.

    python scripts/benchmark.py [--size 256] [--threads 2] [--runs 20] [--warmup 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from litenext_monai.losses import LiteNeXtLoss
from litenext_monai.networks import (
    EMATargetEncoder,
    LiteNeXt,
    ProjectorS,
    ProjectorT,
    count_macs,
    count_parameters,
)

VARIANTS: dict[str, dict[str, int]] = {
    "LiteNeXt k=7 (paper)": {"kernel_size": 7},
    "LiteNeXt k=3 (code default)": {"kernel_size": 3},
    "LiteNeXt k=7, 1 channel": {"kernel_size": 7, "in_channels": 1},
}


def _median_seconds(step: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inference_step(net: LiteNeXt, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            net(x)

    return step


def _training_step(net: LiteNeXt, x: torch.Tensor, serp: bool) -> Callable[[], None]:
    """One optimiser step of Algorithm 2 (``serp=True``) or of plain MWL + Dice training."""
    y = (torch.rand(x.shape[0], 1, *x.shape[2:]) > 0.5).float()
    projector, target = ProjectorS(net.feature_channels), EMATargetEncoder(net.encoder)
    params = list(net.parameters()) + (list(projector.parameters()) if serp else [])
    optimizer = torch.optim.NAdam(params, lr=1e-4)
    loss_fn = LiteNeXtLoss(serp_weight=1.0 if serp else 0.0)

    def step() -> None:
        features = net.forward_features(x)
        kwargs = {}
        if serp:
            kwargs["online_embedding"] = projector(features[-1])
            kwargs["target_embedding"] = ProjectorT()(target(x)[-1])
        loss = loss_fn(net.forward_head(features), y, **kwargs)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if serp:
            target.update(net.encoder)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="input height and width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the median of round medians"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    steps: dict[str, Callable[[], None]] = {}
    print(
        f"LiteNeXt on CPU, batch 1, {args.size}×{args.size}, {args.threads} threads, torch {torch.__version__}\n"
    )
    print(f"{'model':<30}{'parameters':>12}{'MACs (G)':>10}")
    for name, kwargs in VARIANTS.items():
        net = LiteNeXt(**kwargs).eval()
        x = torch.rand(1, net.in_channels, args.size, args.size)
        macs = count_macs(net, tuple(x.shape)) / 1e9
        print(f"{name:<30}{count_parameters(net):>12,}{macs:>10.4f}")
        steps[f"inference: {name}"] = _inference_step(net, x)
    default = LiteNeXt().train()
    x = torch.rand(1, 3, args.size, args.size)
    steps["train step: MWL + Dice"] = _training_step(default, x, serp=False)
    steps["train step: SeRP + MWL + Dice"] = _training_step(LiteNeXt().train(), x, serp=True)

    for step in steps.values():
        for _ in range(args.warmup):
            step()
    medians: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            medians[name].append(_median_seconds(step, args.runs))
    result = {name: statistics.median(values) for name, values in medians.items()}

    print(f"\n{'timing (median of round medians)':<48}{'ms':>10}{'ratio':>8}")
    infer_ref = result[f"inference: {next(iter(VARIANTS))}"]
    train_ref = result["train step: MWL + Dice"]
    for name, seconds in result.items():
        ref = infer_ref if name.startswith("inference") else train_ref
        print(f"{name:<48}{seconds * 1e3:>10.1f}{seconds / ref:>8.2f}")
    print("\nRatios: inference relative to the paper model; training relative to MWL + Dice without SeRP.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
