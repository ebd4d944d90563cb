"""Training throughput of one process against N torchrun processes (gloo on CPU, NCCL on GPUs).

Both runs train LiteNeXt (SeRP + MWL + Dice) through the bundle on the same generated synthetic
data with the same global batch; the figure is images per second of the last epoch's training
(Ignite's epoch time, so start-up and validation are excluded). On a CPU each torch process gets
``threads // nproc`` intra-op threads so the processes do not oversubscribe the cores.

Usage::

    python scripts/benchmark_ddp.py [--nproc 2] [--epochs 2] [--image_size 128] [--num_train 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "litenext_seg"
EPOCH_TIME = re.compile(
    r"SegmentationTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)"
)


def last_epoch_seconds(log: str) -> float:
    """Seconds of the last training epoch in a bundle log."""
    times = [(int(e), int(h) * 3600 + int(m) * 60 + float(s)) for e, h, m, s in EPOCH_TIME.findall(log)]
    if not times:
        raise RuntimeError("no 'Epoch[..] Complete' line of the trainer in the log")
    return max(times)[1]


def _train(cmd_prefix: list[str], configs: list[Path], out: Path, batch: int, args, threads: int) -> float:
    cmd = [
        *cmd_prefix, "-m", "monai.bundle", "run", "--config_file", repr([str(c) for c in configs]),
        "--bundle_root", str(BUNDLE), "--dataset_dir", str(args.data), "--output_dir", f"$'{out}'",
        "--ckpt_dir", str(out / "models"), "--image_size", f"[{args.image_size},{args.image_size}]",
        "--in_channels", "1", "--batch_size", str(batch), "--num_workers", "0",
        "--max_epochs", str(args.epochs), "--progress_bar", "False",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return last_epoch_seconds(proc.stdout + proc.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--num_train", type=int, default=64)
    parser.add_argument("--global_batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.global_batch % args.nproc:
        parser.error("--global_batch must be divisible by --nproc")
    from litenext_monai.data import generate_synthetic_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args.data = generate_synthetic_dataset(
            root / "data", "nuclei", args.num_train, 8, 4, image_size=args.image_size, seed=0
        ).parent
        configs = [BUNDLE / "configs" / "train.json"]
        single = _train([sys.executable], configs, root / "one", args.global_batch, args, args.threads)
        multi = _train(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
             f"--nproc_per_node={args.nproc}"],
            [*configs, BUNDLE / "configs" / "multi_gpu_train.json"], root / "multi",
            args.global_batch // args.nproc, args, max(1, args.threads // args.nproc),
        )  # fmt: skip
    n = args.num_train
    print(f"training images/s, {args.image_size}², global batch {args.global_batch}, epoch {args.epochs}:")
    print(f"  1 process, {args.threads} threads: {n / single:.2f} img/s ({single:.1f} s/epoch)")
    print(f"  {args.nproc} processes, {max(1, args.threads // args.nproc)} thread(s) each: {n / multi:.2f} img/s "
          f"({multi:.1f} s/epoch)")  # fmt: skip
    print(f"  speed-up {single / multi:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
