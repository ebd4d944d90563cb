#!/usr/bin/env python
"""Peak memory and time of one large image (default 4096×4096 RGB) through the Predictor.

Each mode runs in a fresh child process, so its peak resident set size (``ru_maxrss``) is its
own:

* ``patch``: ``input_mode="patch"``, a Gaussian sliding window of ``--image_size`` over the image
  at its full size (``--sw_batch_size`` windows per network call, ``--sw_overlap``);
* ``resize``: ``input_mode="resize"``, the image resized to ``--image_size``, one forward pass, the
  logits resized back to the full size.

The network is the bundle's default LiteNeXt (``base_channels=16``, ``kernel_size=7``) with random
weights (the cost does not depend on the weights) unless ``--checkpoint`` names a trained
``model.pt``. The image is a smooth random RGB image made in memory. Prints one JSON line per
mode: ``seconds`` (``Predictor.predict_images`` only), ``rss_before_mib`` (after the network and
image exist), ``peak_rss_mib`` (the process's peak) and ``peak_increase_mib`` (their difference:
what inference itself needed), plus ``cuda_peak_mib`` on a GPU.

Example (the documented numbers)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/benchmark_large_image.py --size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(args: argparse.Namespace) -> dict:
    """Segment one image in this process and return the measurements."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from litenext_monai.inference import Predictor, load_network_from_checkpoint
    from litenext_monai.networks import LiteNeXt

    torch.manual_seed(0)
    size = [args.image_size, args.image_size]
    settings = {
        "in_channels": 3,
        "image_size": size,
        "modality": "rgb",
        "threshold": 0.5,
        "input_mode": args.mode,
        "sw_overlap": args.sw_overlap,
        "sw_batch_size": args.sw_batch_size,
        "tta": args.tta,
    }
    if args.checkpoint:
        network, card = load_network_from_checkpoint(args.checkpoint)
        settings = {**card, **{k: settings[k] for k in ("input_mode", "sw_overlap", "sw_batch_size", "tta")}}
    else:
        network = LiteNeXt(spatial_dims=2, in_channels=3, out_channels=1, base_channels=16, kernel_size=7)
    predictor = Predictor(network, settings, device=args.device)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(args.size // 64 + 1, args.size // 64 + 1, 3), dtype=np.uint8)
    pixels = np.kron(coarse, np.ones((64, 64, 1), dtype=np.uint8))[: args.size, : args.size]
    image = predictor.from_array(pixels, {"spatial_shape": pixels.shape[:2]}, "benchmark.png")
    del pixels, coarse
    # warm-up on a small image (kernel selection, lazy initialisation), not counted
    predictor.predict_images([image[:, : args.image_size, : args.image_size]])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mib()
    start = time.perf_counter()
    (mask,) = predictor.predict_images([image])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    result = {
        "mode": args.mode,
        "size": args.size,
        "image_size": args.image_size,
        "sw_overlap": args.sw_overlap if args.mode == "patch" else None,
        "sw_batch_size": args.sw_batch_size if args.mode == "patch" else None,
        "tta": args.tta,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "mask_shape": list(mask.shape),
        "seconds": round(seconds, 2),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_increase_mib": round(peak - before, 1),
    }
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the square test image (px)")
    parser.add_argument("--image_size", type=int, default=256, help="network size = patch size (px)")
    parser.add_argument("--mode", choices=("both", "patch", "resize"), default="both")
    parser.add_argument("--sw_overlap", type=float, default=0.25)
    parser.add_argument("--sw_batch_size", type=int, default=4)
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 passes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="a trained model.pt (default: random weights)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args)), flush=True)
        return 0
    modes = ("patch", "resize") if args.mode == "both" else (args.mode,)
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", "--mode", mode, *_forwarded(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 0


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = [
        "--size", str(args.size), "--image_size", str(args.image_size), "--sw_overlap", str(args.sw_overlap),
        "--sw_batch_size", str(args.sw_batch_size), "--device", args.device,
    ]  # fmt: skip
    if args.tta:
        out.append("--tta")
    if args.checkpoint:
        out += ["--checkpoint", args.checkpoint]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
