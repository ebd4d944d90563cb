"""Convert a published dataset release into the standard layout the LiteNeXt bundles read.

Usage::

    litenext-prepare --list
    litenext-prepare NAME RAW_DIR OUT_DIR [--seed 0] [--ratios 0.7 0.1 0.2]
        [--split default|random|official] [--folds K --fold I] [--axis 2] [--multiclass] [--strict]
    litenext-prepare NAME RAW_DIR --validate-only [--strict]
    litenext-prepare --check OUT_DIR [--strict]

Exit status: 0 on success, 1 when validation fails (errors, or warnings with ``--strict``),
2 on bad arguments or a missing release.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from litenext_monai.data import ValidationError, list_layouts, prepare_dataset, validate_prepared

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="dataset layout (see --list)")
    parser.add_argument("raw_dir", nargs="?", help="the release as published (never modified)")
    parser.add_argument("out_dir", nargs="?", help="destination of the standard layout")
    parser.add_argument("--list", action="store_true", help="print the known dataset names and exit")
    parser.add_argument("--check", metavar="OUT_DIR", help="validate an already prepared folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument(
        "--ratios", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), help="split ratios"
    )
    parser.add_argument(
        "--split", choices=["default", "random", "official"], default="default", help="split policy"
    )
    parser.add_argument("--folds", type=int, help="k-fold cross-validation with this many folds")
    parser.add_argument("--fold", type=int, default=0, help="validation fold for --folds (default 0)")
    parser.add_argument(
        "--axis", type=int, default=2, help="slicing axis for NIfTI volumes ('folders' layout)"
    )
    parser.add_argument(
        "--multiclass",
        action="store_true",
        help="read several classes into one label map (sunnybrook_*: LV cavity = 1, myocardium = 2)",
    )
    parser.add_argument("--validate-only", action="store_true", help="check the release, write nothing")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, title in list_layouts():
            print(f"{name:16s} {title}")
        return 0
    try:
        if args.check:
            report = validate_prepared(args.check, strict=args.strict)
            print(report.format(strict=args.strict))
            return 0 if report.ok(args.strict) else 1
        if not args.name or not args.raw_dir or not (args.out_dir or args.validate_only):
            parser.error("NAME RAW_DIR OUT_DIR are required (OUT_DIR may be left out with --validate-only)")
        options: dict[str, object] = {"axis": args.axis} if args.name == "folders" else {}
        if args.multiclass:
            options["multiclass"] = True
        result = prepare_dataset(
            args.name,
            args.raw_dir,
            args.out_dir,
            seed=args.seed,
            ratios=args.ratios,
            split=args.split,
            n_folds=args.folds,
            fold=args.fold,
            strict=args.strict,
            validate_only=args.validate_only,
            **options,
        )
    except ValidationError as err:
        print(err, file=sys.stderr)
        return 1
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.report.format(strict=args.strict))
    sizes = ", ".join(f"{k}: {len(v)}" for k, v in result.splits.items())
    if result.datalist_path is not None:
        print(f"wrote {result.datalist_path} ({sizes})")
    else:
        print(f"validation only ({sizes})")
    return 0 if result.report.ok(args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
