"""Losses of LiteNeXt: Marginal Weight Loss, soft Dice, SeRP and their combination (Algorithm 2)."""

from __future__ import annotations
