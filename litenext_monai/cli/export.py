"""Export a trained model to TorchScript or ONNX, from a checkpoint file or an MLflow model URI.

Usage::

    litenext-export CHECKPOINT OUTPUT [--format torchscript|onnx] [--tracking-uri URI]
                             [--training-form] [--trace] [--batch-size 1] [--overwrite]

CHECKPOINT is a ``model.pt`` written by training (``model.json`` beside it) or an MLflow URI:
``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/RUN_ID/model``. OUTPUT ending in
``.ts``/``.pt`` is TorchScript (MONAI's format: ``monai.data.load_net_with_metadata`` reads its
metadata), ``.onnx`` is ONNX opset 17 with a free batch axis. The export is the deploy form of the
network unless ``--training-form`` is given; it is checked against PyTorch before it is put in place
and never replaces an existing file unless ``--overwrite`` is given.

Exit status: 0 on success, 1 when the export failed its check, 2 on bad arguments or an unusable
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from litenext_monai.model.export import EXPORT_FORMATS, export_checkpoint
from litenext_monai.tracking.uris import resolve_checkpoint

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        help="model.pt of a training, or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/model",
    )
    parser.add_argument("output", help="the export: .ts/.pt (TorchScript) or .onnx")
    parser.add_argument("--format", choices=sorted(EXPORT_FORMATS), help="default: from the output's suffix")
    parser.add_argument(
        "--tracking-uri", help="MLflow store of a model URI (MLFLOW_TRACKING_URI wins when set)"
    )
    parser.add_argument(
        "--training-form", action="store_true", help="export the training form, not the deploy form"
    )
    parser.add_argument("--trace", action="store_true", help="TorchScript by tracing instead of scripting")
    parser.add_argument("--batch-size", type=int, default=1, help="batch of the check example (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        if Path(args.output).exists() and not args.overwrite:
            raise FileExistsError(f"{args.output}: already exists; choose another name or allow overwriting")
        summary = export_checkpoint(
            resolve_checkpoint(args.checkpoint, args.tracking_uri),
            args.output,
            fmt=args.format,
            deploy=not args.training_form,
            batch_size=args.batch_size,
            trace=args.trace,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if "differs from PyTorch" in str(err) else 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
