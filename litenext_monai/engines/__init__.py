"""Ignite engines (MONAI workflows) for LiteNeXt training and evaluation."""

from __future__ import annotations

from litenext_monai.engines.serp_trainer import SeRPTrainer
