"""Baseline recipe overlays: the Mini-Net early-stopping wiring on real Ignite engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "litenext_seg" / "configs"


def _mini_net_parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "mini_net.json")])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_mini_net_recipe_values():
    parser = _mini_net_parser()
    assert parser.get_parsed_content("max_epochs") == 100  # the paper's 100 epochs
    assert parser.get_parsed_content("lr_schedule#early_stopping_min_epochs") == 50
    assert parser.get_parsed_content("lr_schedule#early_stopping_patience") == 10
    short = _mini_net_parser(max_epochs=12, val_interval=3)
    assert short.get_parsed_content("lr_schedule#early_stopping_min_epochs") == 6
    assert short.get_parsed_content("lr_schedule#early_stopping_patience") == 4  # ceil(10 epochs / 3)


@pytest.mark.parametrize("max_epochs,expected_last_epoch", [(40, 30), (12, 12), (6, 6)])
def test_mini_net_early_stopping_waits_for_half_the_run_and_ten_epochs(max_epochs, expected_last_epoch):
    """A validation score that never improves: the run stops at min_epochs + 10, never earlier."""
    trainer = Engine(lambda engine, batch: None)
    evaluator = Engine(lambda engine, batch: None)
    validated_at: list[int] = []

    @evaluator.on(Events.EPOCH_COMPLETED)
    def constant_score(engine: Engine) -> None:
        engine.state.metrics["val_mean_dice"] = 0.5
        validated_at.append(trainer.state.epoch)

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:  # what the bundle's ValidationHandler does
        evaluator.run([0])

    parser = _mini_net_parser(max_epochs=max_epochs)
    parser["train#trainer"] = trainer
    parser["validate#evaluator"] = evaluator
    parser["run"] = parser["run"][:-1]  # wire everything, but run the toy trainer here
    parser.get_parsed_content("run")
    trainer.run([0], max_epochs=max_epochs)
    assert trainer.state.epoch == expected_last_epoch
    assert validated_at == list(range(1, expected_last_epoch + 1))
