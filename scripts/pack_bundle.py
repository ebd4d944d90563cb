"""Pack a repository bundle into a self-contained MONAI bundle folder (or zip).

Bundle configs in this repository take their transform pipelines from the top-level
``transforms/`` folder through MONAI ``%`` macros (``"%transforms/litenext_2d.json#load_image"``),
so each pipeline is defined once. MONAI resolves a macro path relative to the current working
directory, which is why the repository bundles are run from the repository root. Packing
replaces every such macro by the content it names, so the packed bundle runs from any folder
and needs nothing outside itself except the installed ``litenext-monai`` package.

Trained weights (``models/*.pt``, ``*.ts``, ``*.onnx``) and run outputs (``eval/``) are left out
unless ``--include-models`` is given.

Usage (from the repository root)::

    python scripts/pack_bundle.py bundles/litenext_seg dist/litenext_seg [--zip] [--include-models]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["inline_macros", "pack_bundle", "main"]

MACRO_PREFIX = "%transforms/"
SKIPPED_DIRS = {"eval", "__pycache__", ".pytest_cache"}
MODEL_SUFFIXES = {".pt", ".ts", ".onnx"}


def inline_macros(config: Any, transforms_root: Path) -> Any:
    """Return ``config`` with every ``"%transforms/<file>#<id>"`` string replaced by that content.

    Only macros into ``transforms/`` are inlined; macros inside the bundle (``"%train#x"``) are
    relative to the config itself and stay as they are.

    Raises:
        ValueError: a macro names a missing file or id.
    """
    if isinstance(config, dict):
        return {k: inline_macros(v, transforms_root) for k, v in config.items()}
    if isinstance(config, list):
        return [inline_macros(v, transforms_root) for v in config]
    if isinstance(config, str) and config.startswith(MACRO_PREFIX):
        file_part, _, item_id = config[len(MACRO_PREFIX) :].partition("#")
        path = transforms_root / file_part
        if not path.is_file():
            raise ValueError(f"{config}: no such pipeline file {path}")
        content = json.loads(path.read_text(encoding="utf-8"))
        for key in item_id.split("#") if item_id else []:
            if not isinstance(content, dict) or key not in content:
                raise ValueError(f"{config}: {path} has no item {item_id!r}")
            content = content[key]
        return inline_macros(copy.deepcopy(content), transforms_root)
    return config


def _ignore(include_models: bool):
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in SKIPPED_DIRS}
        if not include_models and Path(folder).name == "models":
            skipped |= {n for n in names if Path(n).suffix in MODEL_SUFFIXES or n == "last_run_name.txt"}
        return skipped

    return ignore


def pack_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path,
    transforms_root: str | Path | None = None,
    include_models: bool = False,
    make_zip: bool = False,
) -> Path:
    """Copy ``bundle_dir`` to ``out_dir`` with the ``transforms/`` macros inlined.

    Args:
        bundle_dir: the repository bundle, e.g. ``bundles/litenext_seg``.
        out_dir: destination folder; must not exist yet.
        transforms_root: folder holding the pipeline files (default: ``transforms/`` next to
            ``bundles/``).
        include_models: also copy trained weights.
        make_zip: also write ``<out_dir>.zip``.

    Returns:
        The packed folder (or the zip when ``make_zip``).
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new destination")
    root = Path(transforms_root) if transforms_root is not None else bundle_dir.resolve().parents[1] / "transforms"
    shutil.copytree(bundle_dir, out_dir, ignore=_ignore(include_models))
    for config_path in sorted((out_dir / "configs").glob("*.json")):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        packed = inline_macros(config, root)
        if packed != config:
            config_path.write_text(json.dumps(packed, indent=2) + "\n", encoding="utf-8")
    if make_zip:
        return Path(shutil.make_archive(str(out_dir), "zip", root_dir=out_dir.parent, base_dir=out_dir.name))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle_dir", help="repository bundle folder, e.g. bundles/litenext_seg")
    parser.add_argument("out_dir", help="destination folder (must not exist)")
    parser.add_argument("--transforms-root", default=None, help="pipeline folder (default: <repo>/transforms)")
    parser.add_argument("--include-models", action="store_true", help="also copy models/*.pt|ts|onnx")
    parser.add_argument("--zip", action="store_true", help="also write <out_dir>.zip")
    args = parser.parse_args(argv)
    result = pack_bundle(args.bundle_dir, args.out_dir, args.transforms_root, args.include_models, args.zip)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
