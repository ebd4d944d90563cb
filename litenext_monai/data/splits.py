"""Deterministic train/validation/test splits, k-fold cross-validation and the split hash.

Splits are drawn at the level of *groups* (patients): every case of a patient lands in the same
split, so no patient is seen in training and evaluated in test. Shuffling uses Python's
:class:`random.Random`, whose sequence for a given seed is stable across Python and NumPy
versions, so a seed reproduces the same split everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "SPLIT_KEYS",
    "DEFAULT_RATIOS",
    "ratio_split",
    "official_split",
    "kfold_split",
    "canonical_split",
    "split_hash",
    "datalist_split_hash",
    "verify_split_hash",
]

SPLIT_KEYS = ("training", "validation", "test")
DEFAULT_RATIOS = (0.7, 0.1, 0.2)


def _groups(case_ids: Sequence[str], groups: Mapping[str, str] | None) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for case in case_ids:
        key = groups.get(case, case) if groups else case
        members.setdefault(str(key), []).append(case)
    return members


def _shuffled(keys: Sequence[str], seed: int) -> list[str]:
    keys = sorted(keys)
    random.Random(seed).shuffle(keys)
    return keys


def _share(n: int, fraction: float) -> int:
    """Groups for a non-training split: rounded half up, at least one when the fraction is
    positive and there are enough groups, so tiny datasets still get a validation and test set."""
    if fraction <= 0:
        return 0
    return max(1, int(math.floor(n * fraction + 0.5))) if n >= 3 else int(math.floor(n * fraction + 0.5))


def _counts(n: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers, got {tuple(ratios)}")
    total = float(sum(ratios))
    n_val = _share(n, ratios[1] / total)
    n_test = min(_share(n, ratios[2] / total), n - n_val)
    return n - n_val - n_test, n_val, n_test


def ratio_split(
    case_ids: Sequence[str],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split cases by ratio (``training``, ``validation``, ``test``), whole groups at a time.

    Args:
        case_ids: all case identifiers.
        ratios: fractions of *groups* for training, validation and test (normalised to sum 1).
        seed: shuffling seed.
        groups: case → patient; cases without an entry form their own group.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` with sorted case ids.
    """
    members = _groups(case_ids, groups)
    order = _shuffled(list(members), seed)
    n_train, n_val, _ = _counts(len(order), ratios)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return {
        key: sorted(c for g in part for c in members[g]) for key, part in zip(SPLIT_KEYS, parts, strict=True)
    }


def official_split(
    subsets: Mapping[str, str],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Keep a published train/test split and draw validation from the published training part.

    Args:
        subsets: case → ``"train"`` or ``"test"`` as published.
        ratios: only ``ratios[1] / (ratios[0] + ratios[1])`` is used: the share of training groups
            moved to validation.
        seed: shuffling seed.
        groups: case → patient.
    """
    bad = sorted({v for v in subsets.values() if v not in ("train", "test")})
    if bad:
        raise ValueError(f"official subsets must be 'train' or 'test', got {bad}")
    train = [c for c, s in subsets.items() if s == "train"]
    test = sorted(c for c, s in subsets.items() if s == "test")
    members = _groups(train, groups)
    order = _shuffled(list(members), seed)
    n_val = _share(len(order), ratios[1] / max(ratios[0] + ratios[1], 1e-12))
    val = sorted(c for g in order[:n_val] for c in members[g])
    training = sorted(c for g in order[n_val:] for c in members[g])
    return {"training": training, "validation": val, "test": test}


def kfold_split(
    case_ids: Sequence[str],
    n_folds: int,
    fold: int,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    test_ids: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Fold ``fold`` of a group-wise k-fold cross-validation.

    The cases in ``test_ids`` are held out as the test set of every fold; the rest is cut into
    ``n_folds`` groups-disjoint folds, fold ``fold`` is validation and the others training.
    """
    if n_folds < 2 or not 0 <= fold < n_folds:
        raise ValueError(f"need n_folds >= 2 and 0 <= fold < n_folds, got n_folds={n_folds}, fold={fold}")
    held_out = set(test_ids)
    members = _groups([c for c in case_ids if c not in held_out], groups)
    order = _shuffled(list(members), seed)
    if len(order) < n_folds:
        raise ValueError(f"{len(order)} groups cannot fill {n_folds} folds")
    val_groups = order[fold::n_folds]
    val = sorted(c for g in val_groups for c in members[g])
    training = sorted(c for g in order if g not in set(val_groups) for c in members[g])
    return {"training": training, "validation": val, "test": sorted(held_out)}


def canonical_split(datalist: Mapping[str, object]) -> str:
    """The canonical text of a datalist's split: sorted ``[case_id, image, label]`` per split key."""
    canon = {}
    for key in SPLIT_KEYS:
        entries = datalist.get(key, []) or []
        canon[key] = sorted(
            [str(e.get("case_id", "")), str(e.get("image", "")), str(e.get("label", ""))]  # type: ignore[union-attr]
            for e in entries  # type: ignore[union-attr]
        )
    return json.dumps(canon, sort_keys=True, separators=(",", ":"))


def split_hash(datalist: str | os.PathLike | Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical split of a MONAI datalist (a path to its JSON, or the dict).

    The hash ignores ordering and every field except ``case_id``, ``image`` and ``label``, so it
    changes exactly when a case moves between splits or a file is renamed. Training logs it.
    """
    if not isinstance(datalist, Mapping):
        datalist = json.loads(Path(datalist).read_text(encoding="utf-8"))
    return hashlib.sha256(canonical_split(datalist).encode("utf-8")).hexdigest()


def verify_split_hash(datalist_path: str | os.PathLike) -> bool:
    """Whether the ``split_hash`` stored in a datalist JSON matches its content."""
    data = json.loads(Path(datalist_path).read_text(encoding="utf-8"))
    return data.get("split_hash") == split_hash(data)


def datalist_split_hash(datalist: str | os.PathLike) -> str:
    """Return the datalist's stored ``split_hash``, or :func:`litenext_monai.data.split_hash` of it.

    Raises:
        ValueError: the file cannot be read or is not a JSON object.
    """
    path = Path(datalist)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the datalist ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with split lists")
    return str(data.get("split_hash") or split_hash(data))
