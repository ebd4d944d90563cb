"""Benchmark LiteNeXt against its peers on CPU (and GPU when present), in one process.

Latency at batch 1 and 8, peak activation memory, ONNX Runtime latency, folder-inference
images/s against pure-model images/s, and LiteNeXt's training step with and without SeRP; every figure with its ratio to MONAI UNet measured in the same interleaved run
(absolute times on shared machines drift). See ``litenext_monai.experiments.benchmark``.

    litenext-benchmark [--size 256] [--threads 2] [--rounds 3] [--runs 10] [--skip-training]
"""

from __future__ import annotations

import argparse
import sys

from litenext_monai.experiments.benchmark import run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="input height and width")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of round medians)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per model per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--folder-images", type=int, default=16, help="PNGs in the folder-inference test")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or process CPU time (robust to other processes' load with --threads 1)",
    )
    parser.add_argument("--skip-training", action="store_true", help="latency, memory and inference only")
    args = parser.parse_args(argv)
    report = run_benchmark(
        size=args.size,
        threads=args.threads,
        rounds=args.rounds,
        runs=args.runs,
        warmup=args.warmup,
        folder_images=args.folder_images,
        train_batch=args.train_batch,
        train_rounds=args.train_rounds,
        skip_training=args.skip_training,
        clock=args.clock,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
