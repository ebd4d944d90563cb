"""Compare segmentation networks trained through the same bundle, with seed-aware statistics.

Usage::

    litenext-compare --dataset_dir D --models litenext,cmunext_xxs,mini_net,lv_unet,monai_unet \
        --recipe own|common --seeds 3 (--epochs 20 | --time_budget_min 10) --output OUT \
        [--image_size 256] [--in_channels N] [--batch_size N] [--reference litenext] \
        [--variant litenext_noserp=litenext:serp=False] [--set litenext.learning_rate=0.002]

Without ``--dataset_dir`` the built-in synthetic nuclei data is generated into ``OUT/data``.
Writes ``OUT/per_image.csv``, ``OUT/comparison.csv``, ``OUT/comparison.md``, ``OUT/boxplot_<metric>.png``
and one MLflow parent run (``OUT/mlruns.db``) with a nested run per model × seed. The exit status
is non-zero when any model failed; the others are still compared. See ``docs/comparisons.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from litenext_monai.experiments.compare import MODELS, RECIPES, ModelSpec, compare, parse_value, parse_variant


def _variants(items: list[str]) -> list[ModelSpec]:
    registry = dict(MODELS)
    variants = []
    for item in items:
        try:
            spec = parse_variant(item, registry)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        registry[spec.name] = spec
        variants.append(spec)
    return variants


def _extra(items: list[str], names: set[str]) -> dict[str, dict[str, Any]]:
    extra: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model, dot, key = target.partition(".")
        if not sep or not dot or model not in names:
            raise SystemExit(f"--set {item!r}: expected MODEL.KEY=VALUE with MODEL in {sorted(names)}")
        extra.setdefault(model, {})[key] = parse_value(value)
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, default=None, help="folder with datalist.json")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {sorted(MODELS)}")
    parser.add_argument("--recipe", choices=RECIPES, default="own",
                        help="own: each paper's recipe; common: one recipe for every model (only the "
                             "architecture differs)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=BASE:key=value,...",
                        help="an ablation: BASE with bundle overrides (values parsed as JSON), e.g. "
                             "litenext_bce=litenext:serp=False,loss#supervised=bce; added to the models")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=20, help="epochs per run (ignored with --time_budget_min)"
    )
    parser.add_argument(
        "--time_budget_min",
        type=float,
        default=None,
        help="training minutes per run: each model is calibrated and given the epochs that fit",
    )
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the recipe's")
    parser.add_argument(
        "--in_channels", type=int, default=None, help="default: from the first training image"
    )
    parser.add_argument("--modality", default="rgb", help="intensity normalisation, as in the bundle")
    parser.add_argument(
        "--reference",
        default=None,
        help="model of the paired statistics (default: litenext when compared, else the first)",
    )
    parser.add_argument("--n_boot", type=int, default=10000, help="bootstrap replicates of the CIs")
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
    variants = _variants(args.variant)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    extra = _extra(args.set, set(MODELS) | {v.name for v in variants})
    dataset_dir = args.dataset_dir
    if dataset_dir is None:
        from litenext_monai.data import generate_synthetic_dataset

        dataset_dir = generate_synthetic_dataset(
            args.output / "data", "nuclei", image_size=args.image_size
        ).parent
    try:
        failed = compare(
            dataset_dir, models, args.seeds, args.epochs, args.image_size, args.output,
            batch_size=args.batch_size, in_channels=args.in_channels, modality=args.modality, extra=extra,
            tracking_uri=args.tracking_uri, fresh_processes=args.fresh_processes, recipe=args.recipe,
            variants=variants, time_budget_min=args.time_budget_min, reference=args.reference,
            n_boot=args.n_boot,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"litenext-compare: {err}", file=sys.stderr)
        return 2
    print((args.output / "comparison.md").read_text(encoding="utf-8"))
    if failed:
        print(f"{failed} model(s) failed; see comparison.md and the run logs under {args.output / 'runs'}",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
