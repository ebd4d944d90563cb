"""Flip test-time augmentation as a MONAI :class:`~monai.inferers.Inferer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["FLIP_DIMS", "FlipTTAInferer"]

#: The four flips, as dimensions of a ``B×C×H×W`` tensor: identity, horizontal (W), vertical (H), both.
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


class FlipTTAInferer(Inferer):
    """Average the logits of the identity, horizontal, vertical and both flips of the input.

    For each flip ``f`` in :data:`FLIP_DIMS` the wrapped inferer runs on ``f(x)`` and its output is
    flipped back with the same ``f`` (a flip is its own inverse, so the inversion is exact); the
    four outputs are averaged. The average is taken over *logits*, before any sigmoid/softmax, so
    the result feeds :func:`~litenext_monai.inferers.logits_to_mask` like a plain forward pass.

    Args:
        inferer: the inferer run on each flipped input (default ``SimpleInferer()``); a
            ``SlidingWindowInferer`` gives patch-wise TTA.

    Note:
        Inputs are ``B×C×H×W``; the output must have the input's ``H×W`` (true for the
        segmentation networks here, and for ``SlidingWindowInferer``).
    """

    def __init__(self, inferer: Inferer | None = None) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Run the network on the four flips of ``inputs`` and return the mean of the unflipped logits.

        Args:
            inputs: ``B×C×H×W`` batch.
            network: the model (or any callable returning a tensor ``B×K×H×W``).
            args, kwargs: passed on to the wrapped inferer.

        Returns:
            ``B×K×H×W`` mean logits.

        Raises:
            ValueError: ``inputs`` not 4-D, or a network output that is not a tensor with the
                input's ``H×W``.
        """
        if inputs.ndim != 4:
            raise ValueError(f"FlipTTAInferer expects inputs B×C×H×W, got shape {tuple(inputs.shape)}.")
        total: torch.Tensor | None = None
        for dims in FLIP_DIMS:
            flipped = torch.flip(inputs, dims) if dims else inputs
            output = self.inferer(flipped, network, *args, **kwargs)
            if (
                not isinstance(output, torch.Tensor)
                or output.ndim != 4
                or output.shape[2:] != inputs.shape[2:]
            ):
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(
                    f"FlipTTAInferer needs a B×K×H×W output with the input's H×W {tuple(inputs.shape[2:])}, "
                    f"got {shape}."
                )
            output = torch.flip(output, dims) if dims else output
            total = output if total is None else total + output
        assert total is not None
        return total / len(FLIP_DIMS)
