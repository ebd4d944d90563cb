"""Segment 3D NIfTI volumes or DICOM series folders with a trained 2D LiteNeXt, slice by slice.

Usage::

    litenext-segment-volume CHECKPOINT INPUT OUTPUT.nii.gz [options]
    litenext-segment-volume CHECKPOINT INPUT [INPUT ...] OUTPUT_DIR [options]

    options: [--config TRAIN_JSON] [--in-channels N] [--image-size H W] [--modality mr]
             [--axis 2] [--threshold 0.5] [--window CENTRE WIDTH] [--percentiles LOW HIGH]
             [--batch-size 8] [--device cpu] [--base-channels 16] [--kernel-size 7]

INPUT is a 3D ``.nii``/``.nii.gz`` file or a folder holding one DICOM series. The last path is the
output: a ``.nii``/``.nii.gz`` file for a single input, otherwise a folder that receives
``<input name>_mask.nii.gz`` per input. Each mask is a ``uint8`` {0, 1} volume with its input's
shape and affine. ``--config`` takes the training settings (``in_channels``, ``image_size``,
``modality``, ``threshold``, ``network_def`` sizes) from the bundle's ``train.json``; a checkpoint
with ``model.json`` beside it (written by training) needs neither; flags given on the command line
override both.

Exit status: 0 when every input was segmented, 1 when at least one failed (each failure is
reported with its input and the others are still processed), 2 on bad arguments or an unusable
checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from litenext_monai.inference import load_inference_network, segment_volume
from litenext_monai.io import MODALITIES, is_nifti
from litenext_monai.model.card import DEFAULT_SETTINGS, read_inference_settings
from litenext_monai.networks.litenext import SIZE_DIVISOR
from litenext_monai.tracking.uris import resolve_checkpoint

__all__ = ["build_parser", "main", "output_name"]

MASK_SUFFIX = "_mask.nii.gz"

# When neither a flag, --config nor the model card gives a value: the model card's defaults, and
# LiteNeXt's own for its sizes (checkpoints without a model card are LiteNeXt).
_DEFAULTS = {
    **{k: DEFAULT_SETTINGS[k] for k in ("image_size", "modality", "threshold")},
    "base_channels": 16,
    "kernel_size": 7,
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        usage="%(prog)s CHECKPOINT INPUT [INPUT ...] OUTPUT [options]",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="models/model.pt of a trained bundle (a LiteNeXt state_dict)")
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="INPUT [INPUT ...] OUTPUT: volumes or series folders, then the output",
    )
    parser.add_argument("--config", type=Path, help="the bundle's train.json to take training settings from")
    parser.add_argument("--in-channels", type=int, help="image channels the network was trained with")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="training size (default 256 256)"
    )
    parser.add_argument(
        "--modality",
        choices=MODALITIES,
        help=f"intensity normalisation of training (default {DEFAULT_SETTINGS['modality']})",
    )
    parser.add_argument("--axis", type=int, choices=(0, 1, 2), default=2, help="slicing axis (default 2)")
    parser.add_argument("--threshold", type=float, help="foreground probability threshold (default 0.5)")
    parser.add_argument("--window", type=float, nargs=2, metavar=("CENTRE", "WIDTH"), help="CT window in HU")
    parser.add_argument(
        "--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"), help="MR/microscopy scaling"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="slices per forward pass (default 1, as the bundle)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    parser.add_argument("--base-channels", type=int, help="LiteNeXt base_channels (default 16)")
    parser.add_argument("--kernel-size", type=int, help="LiteNeXt kernel_size (default 7)")
    return parser


def output_name(source: Path) -> str:
    """Mask file name for ``source`` inside an output folder: ``<name>_mask.nii.gz``."""
    name = source.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name + MASK_SUFFIX


def _config_settings(path: Path) -> dict[str, object]:
    """The literal training settings of a bundle ``train.json`` (expressions and references skipped)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    network_def = config.get("network_def", {}) if isinstance(config.get("network_def"), dict) else {}
    found = {
        "in_channels": config.get("in_channels"),
        "image_size": config.get("image_size"),
        "modality": config.get("modality"),
        "threshold": config.get("threshold"),
        "base_channels": network_def.get("base_channels"),
        "kernel_size": network_def.get("kernel_size"),
    }
    # "@key" and "$expr" values only make sense inside the bundle parser.
    return {k: v for k, v in found.items() if v is not None and not (isinstance(v, str) and v[:1] in "@$")}


def _settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, object]:
    settings = dict(_DEFAULTS)
    if args.config is not None:
        try:
            settings.update(_config_settings(args.config))
        except (OSError, ValueError) as err:
            parser.error(f"{args.config}: cannot read the bundle config ({err})")
    try:  # a self-describing checkpoint (model.json beside model.pt) knows its own settings
        described = read_inference_settings(resolve_checkpoint(args.checkpoint))
    except FileNotFoundError:
        described = {}
    except ValueError as err:
        parser.error(str(err))
    settings.update(
        {k: described[k] for k in ("in_channels", "image_size", "modality", "threshold") if k in described}
    )
    for key in ("in_channels", "image_size", "modality", "threshold", "base_channels", "kernel_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings.get("in_channels") is None:
        parser.error(
            "--in-channels is required (or --config with the bundle's train.json, or a checkpoint with model.json)"
        )
    height, width = (int(s) for s in settings["image_size"])
    if height < SIZE_DIVISOR or width < SIZE_DIVISOR or height % SIZE_DIVISOR or width % SIZE_DIVISOR:
        parser.error(
            f"--image-size must be positive multiples of {SIZE_DIVISOR} for LiteNeXt, got {height} {width}"
        )
    return settings


def _jobs(inputs: list[Path], output: Path, parser: argparse.ArgumentParser) -> list[tuple[Path, Path]]:
    """Pair each input with its output file."""
    if len(inputs) == 1 and is_nifti(output):
        return [(inputs[0], output)]
    if output.exists() and not output.is_dir():
        parser.error(f"{output}: with several inputs the output must be a folder")
    jobs = [(source, output / output_name(source)) for source in inputs]
    seen: dict[Path, Path] = {}
    for source, target in jobs:
        if target in seen:
            parser.error(f"{seen[target]} and {source} would both be written to {target}; rename one")
        seen[target] = source
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        parser.error("give at least one INPUT and the OUTPUT")
    settings = _settings(args, parser)
    jobs = _jobs([Path(p) for p in args.paths[:-1]], Path(args.paths[-1]), parser)
    try:
        network = load_inference_network(
            args.checkpoint,
            in_channels=int(settings["in_channels"]),
            base_channels=int(settings["base_channels"]),
            kernel_size=int(settings["kernel_size"]),
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for source, target in jobs:
        try:
            segment_volume(
                network,
                source,
                target,
                axis=args.axis,
                image_size=tuple(settings["image_size"]),
                modality=str(settings["modality"]),
                threshold=float(settings["threshold"]),
                batch_size=args.batch_size,
                device=args.device,
                window=args.window,
                percentiles=args.percentiles,
            )
        except (OSError, RuntimeError, ValueError) as err:
            # One bad input must not stop the others; the message says which one failed.
            failed += 1
            message = str(err) if str(source) in str(err) else f"{source}: {err}"
            print(f"error: {message}", file=sys.stderr)
            continue
        print(f"{source} -> {target}")
    print(f"{len(jobs) - failed} of {len(jobs)} inputs segmented", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
