"""Helpers shared by the network tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def saved_torchscript(net: torch.nn.Module, folder: Path) -> torch.jit.ScriptModule:
    """``net`` scripted, saved to ``folder/net.ts`` and loaded back (torch 2.13 warns that jit is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(folder / "net.ts"))
        return torch.jit.load(str(folder / "net.ts"))
