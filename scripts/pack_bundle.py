"""Pack a repository bundle into a self-contained MONAI bundle folder (or zip).

Bundle configs take their transform pipelines from ``<bundle_root>/transforms/`` through
:func:`litenext_monai.transforms.load_pipeline`; in this repository those are links to the top-level
``transforms/`` folder. Packing copies the pipeline files themselves there (or those of
``--transforms-root``), so the packed bundle runs from any folder and needs nothing outside itself
except the installed ``litenext-monai`` package.

Trained weights (``models/*.pt``, ``*.ts``, ``*.onnx``, ``model.json``) and run outputs (``eval/``)
are left out unless ``--include-models`` is given.

Usage::

    python scripts/pack_bundle.py bundles/litenext_seg dist/litenext_seg [--zip] [--include-models]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

__all__ = ["pack_bundle", "main"]

SKIPPED_DIRS = {"eval", "__pycache__", ".pytest_cache", "data", "transforms"}
MODEL_SUFFIXES = {".pt", ".ts", ".onnx"}
MODEL_FILES = {"last_run_name.txt", "model.json"}


def _ignore(include_models: bool):
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in SKIPPED_DIRS}
        if not include_models and Path(folder).name == "models":
            skipped |= {n for n in names if Path(n).suffix in MODEL_SUFFIXES or n in MODEL_FILES}
        return skipped

    return ignore


def pack_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path,
    transforms_root: str | Path | None = None,
    include_models: bool = False,
    make_zip: bool = False,
) -> Path:
    """Copy ``bundle_dir`` to ``out_dir`` together with the pipeline files it loads.

    Args:
        bundle_dir: the repository bundle, e.g. ``bundles/litenext_seg``.
        out_dir: destination folder; must not exist yet.
        transforms_root: folder holding the pipeline files (default: the bundle's own ``transforms/``).
        include_models: also copy trained weights and their settings.
        make_zip: also write ``<out_dir>.zip``.

    Returns:
        The packed folder (or the zip when ``make_zip``).
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new destination")
    root = (
        Path(transforms_root)
        if transforms_root is not None
        else bundle_dir / "transforms"
    )
    pipelines = sorted(root.glob("*.json"))
    if not pipelines:
        raise FileNotFoundError(f"{root}: no pipeline files (*.json) to pack with the bundle")
    shutil.copytree(bundle_dir, out_dir, ignore=_ignore(include_models))
    (out_dir / "transforms").mkdir()
    for pipeline in pipelines:
        shutil.copy2(pipeline.resolve(), out_dir / "transforms" / pipeline.name)  # the file, not the link
    if make_zip:
        return Path(shutil.make_archive(str(out_dir), "zip", root_dir=out_dir.parent, base_dir=out_dir.name))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle_dir", help="repository bundle folder, e.g. bundles/litenext_seg")
    parser.add_argument("out_dir", help="destination folder (must not exist)")
    parser.add_argument(
        "--transforms-root", default=None, help="pipeline folder (default: the bundle's transforms/)"
    )
    parser.add_argument("--include-models", action="store_true", help="also copy models/*.pt|ts|onnx")
    parser.add_argument("--zip", action="store_true", help="also write <out_dir>.zip")
    args = parser.parse_args(argv)
    result = pack_bundle(args.bundle_dir, args.out_dir, args.transforms_root, args.include_models, args.zip)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
