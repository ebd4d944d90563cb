"""LV-UNet deep training: the per-epoch cosine schedule of the fusible blocks' LeakyReLU slope.

At the start of 0-based epoch ``e`` of ``E`` the slope is ``a(e) = 1 − cos(π·e / (2E))`` (LV-UNet
paper; baselines spec §3.5): 0 (ReLU) first, rising slowly and then faster. The authors' loop stops
at ``a(E−1) < 1`` and fuses anyway, which makes the deployed network differ from the trained one;
this handler therefore sets ``a = 1`` when training completes, so that
:meth:`~litenext_monai.networks.LVUNet.reparameterize` is exact.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from monai.utils import min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["DeepTrainingSlopeHandler", "deep_training_slope", "unwrap_slope_network"]

#: Wrapper attributes followed to reach the network: DDP/DataParallel ``.module``, trainer wrappers ``.network``.
_WRAPPER_ATTRIBUTES = ("module", "network")


def deep_training_slope(epoch: int, epochs: int) -> float:
    """The LeakyReLU slope ``a(e) = 1 − cos(π·e / (2E))`` for 0-based ``epoch`` of ``epochs``; 1 from ``E`` on."""
    if epochs < 1:
        raise ValueError(f"the number of deep-training epochs must be >= 1, got {epochs}.")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    if epoch >= epochs:
        return 1.0
    return 1.0 - math.cos(math.pi * epoch / (2 * epochs))


def unwrap_slope_network(network: Any) -> Any:
    """Follow ``.module`` / ``.network`` until an object with ``set_act_slope`` is found.

    Raises:
        TypeError: no such object in the chain.
    """
    current = network
    for _ in range(16):
        if callable(getattr(current, "set_act_slope", None)):
            return current
        inner = next((getattr(current, a) for a in _WRAPPER_ATTRIBUTES if hasattr(current, a)), None)
        if inner is None or inner is current:
            break
        current = inner
    raise TypeError(
        f"{type(network).__name__} has no set_act_slope() (nor does any .module/.network it wraps); "
        "DeepTrainingSlopeHandler needs a network with deep training, e.g. LVUNet."
    )


class DeepTrainingSlopeHandler:
    """Ignite handler applying LV-UNet's deep-training slope schedule to a network.

    On every ``EPOCH_STARTED`` it sets ``a(e)`` (see :func:`deep_training_slope`, ``e`` = the
    0-based epoch); on ``COMPLETED`` it sets ``a = 1`` so that fusing afterwards is exact. The network
    may be wrapped (``DistributedDataParallel.module``, or any wrapper exposing ``.network``); it is
    unwrapped on every event, so wrapping after the handler was built is fine.

    Args:
        network: the network (or a wrapper of it) with ``set_act_slope(a)``.
        max_epochs: ``E``, the number of deep-training epochs; default: the engine's ``max_epochs``
            (the authors' setting). Epochs from ``E`` on run at ``a = 1``.
        name: logger name (MONAI handler convention); default: this module's logger.

    Examples::

        >>> DeepTrainingSlopeHandler(net).attach(trainer)
    """

    def __init__(self, network: Any, max_epochs: int | None = None, name: str | None = None) -> None:
        if max_epochs is not None and max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        unwrap_slope_network(network)
        self.network = network
        self.max_epochs = max_epochs
        self.logger = logging.getLogger(name or __name__)

    def attach(self, engine: Engine) -> None:
        """Register the epoch-start and completion events on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def slope_for(self, engine: Engine) -> float:
        """The slope for the engine's current epoch."""
        epochs = self.max_epochs if self.max_epochs is not None else engine.state.max_epochs
        return deep_training_slope(engine.state.epoch - 1, epochs)

    def epoch_started(self, engine: Engine) -> None:
        slope = self.slope_for(engine)
        unwrap_slope_network(self.network).set_act_slope(slope)
        self.logger.debug("epoch %d: deep-training slope a = %.6f", engine.state.epoch, slope)

    def completed(self, engine: Engine) -> None:
        unwrap_slope_network(self.network).set_act_slope(1.0)
        self.logger.info("deep training finished: slope set to 1, the network can be reparameterized.")
