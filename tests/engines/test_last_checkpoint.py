"""LastCheckpointHandler: atomic save every epoch, resume through MONAI's CheckpointLoader (weights only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from litenext_monai.engines import LastCheckpointHandler


def _engine(net: torch.nn.Module, optimizer: torch.optim.Optimizer, max_epochs: int = 3) -> Engine:
    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = (net(batch) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    engine.state.max_epochs = max_epochs
    return engine


def _setup(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    return net, torch.optim.Adam(net.parameters(), lr=0.1)


DATA = [torch.full((2, 3), float(i)) for i in range(3)]


def test_resume_continues_from_the_saved_epoch_with_the_saved_weights(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    # Uninterrupted reference: 3 epochs.
    ref_net, ref_opt = _setup(0)
    _engine(ref_net, ref_opt).run(DATA, max_epochs=3)
    # Interrupted: 2 epochs saved, then a fresh process (other seed) resumes to 3.
    net, opt = _setup(0)
    first = _engine(net, opt)
    LastCheckpointHandler(path, {"network": net, "optimizer": opt}).attach(first)
    first.run(DATA, max_epochs=2)
    assert torch.load(path, weights_only=True)["trainer"]["iteration"] == 2 * len(DATA)
    net2, opt2 = _setup(1)
    second = _engine(net2, opt2)
    LastCheckpointHandler(path, {"network": net2, "optimizer": opt2}, resume=True).attach(second)
    epochs = []
    second.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.append(e.state.epoch))
    second.run(DATA, max_epochs=3)
    assert epochs == [3]  # epochs 1-2 restored, only the third ran
    for a, b in zip(ref_net.parameters(), net2.parameters()):
        torch.testing.assert_close(a, b)


def test_missing_file_trains_from_scratch(tmp_path: Path) -> None:
    net, opt = _setup(0)
    engine = _engine(net, opt)
    LastCheckpointHandler(tmp_path / "none.pt", {"network": net}, resume=True).attach(engine)
    epochs = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.append(e.state.epoch))
    engine.run(DATA, max_epochs=2)
    assert epochs == [1, 2]


class _Payload:
    """Any object that is not tensors/containers: a weights-only load must refuse to unpickle it."""

    def __reduce__(self):  # pragma: no cover - never called back by a weights-only load
        return (print, ("unpickled!",))


@pytest.mark.parametrize("problem", ["pickled_object", "missing_key", "epoch_beyond_max", "wrong_shape"])
def test_bad_checkpoints_are_clear_errors_naming_the_file(tmp_path: Path, problem: str) -> None:
    path = tmp_path / f"{problem}.pt"
    net, opt = _setup(0)
    state = {
        "network": net.state_dict(),
        "optimizer": opt.state_dict(),
        "trainer": {"epoch": 1, "max_epochs": 3, "epoch_length": 3, "iteration": 3},
    }
    if problem == "pickled_object":
        state["extra"] = _Payload()
    elif problem == "missing_key":
        del state["optimizer"]
    elif problem == "epoch_beyond_max":
        state["trainer"].update(epoch=5, iteration=15, max_epochs=5)
    else:
        state["network"]["weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    engine = _engine(net, opt)
    LastCheckpointHandler(path, {"network": net, "optimizer": opt}, resume=True).attach(engine)
    with pytest.raises(ValueError, match=f"{problem}.pt: cannot resume"):
        engine.run(DATA, max_epochs=3)
