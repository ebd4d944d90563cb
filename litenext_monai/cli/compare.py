"""Compare segmentation networks trained through the same bundle, paper-style, with p-values.

Usage::

    litenext-compare --dataset_dir D --models litenext,cmunext_xxs,mini_net,lv_unet,monai_unet \
        --seeds 3 --epochs 20 --image_size 128 --output OUT [--batch_size 8] [--in_channels 1] \
        [--set litenext.learning_rate=0.002]

Without ``--dataset_dir`` the built-in synthetic nuclei data is generated into ``OUT/data``.
Writes ``OUT/per_image.csv``, ``OUT/comparison.csv``, ``OUT/comparison.md``, ``OUT/boxplot_<metric>.png``
and one MLflow parent run (``OUT/mlruns.db``) with a nested run per model × seed. The exit status
is non-zero when any model failed; the others are still compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from litenext_monai.experiments.compare import MODELS, compare


def _extra(items: list[str]) -> dict[str, dict[str, str]]:
    extra: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model, dot, key = target.partition(".")
        if not sep or not dot or model not in MODELS:
            raise SystemExit(f"--set {item!r}: expected MODEL.KEY=VALUE with MODEL in {sorted(MODELS)}")
        extra.setdefault(model, {})[key] = value
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, default=None, help="folder with datalist.json")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--in_channels", type=int, default=1)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--tracking_uri", default=None, help="MLflow store (default: sqlite in OUT)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL.KEY=VALUE",
        help="extra bundle override for one model, e.g. litenext.learning_rate=0.002",
    )
    parser.add_argument(
        "--fresh_processes",
        action="store_true",
        help="start each bundle run as a new Python process (default: fork it from one that imported MONAI once)",
    )
    args = parser.parse_args(argv)
    dataset_dir = args.dataset_dir
    if dataset_dir is None:
        from litenext_monai.data import generate_synthetic_dataset

        dataset_dir = generate_synthetic_dataset(
            args.output / "data", "nuclei", image_size=args.image_size
        ).parent
    failed = compare(
        dataset_dir, [m.strip() for m in args.models.split(",") if m.strip()], args.seeds, args.epochs,
        args.image_size, args.output, args.batch_size, args.in_channels, extra=_extra(args.set),
        tracking_uri=args.tracking_uri, fresh_processes=args.fresh_processes,
    )  # fmt: skip
    print((args.output / "comparison.md").read_text(encoding="utf-8"))
    if failed:
        print(f"{failed} model(s) failed; see comparison.md and the run logs under {args.output / 'runs'}",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
