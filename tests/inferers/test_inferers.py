"""Inferers: flip TTA against hand-made flips, sliding window against MONAI, one post-processing rule."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer, sliding_window_inference
from monai.transforms import Activations, AsDiscrete

from litenext_monai.inferers import FlipTTAInferer, LogitsToMaskd, build_inferer, logits_to_mask


def _network(out_channels: int = 3) -> torch.nn.Module:
    """A small conv net that is NOT flip-equivariant (asymmetric kernels), so TTA changes its output."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, out_channels, 5, padding=2)
    ).eval()


def test_flip_tta_is_the_mean_of_the_four_unflipped_logits() -> None:
    net = _network()
    x = torch.randn(2, 2, 12, 17)
    with torch.no_grad():
        got = FlipTTAInferer()(x, net)
        by_hand = (
            net(x)
            + torch.flip(net(torch.flip(x, [3])), [3])
            + torch.flip(net(torch.flip(x, [2])), [2])
            + torch.flip(net(torch.flip(x, [2, 3])), [2, 3])
        ) / 4
        plain = net(x)
    torch.testing.assert_close(got, by_hand)
    assert not torch.allclose(got, plain, atol=1e-4)  # the flips really differ for this network


def test_flip_tta_rejects_outputs_of_another_size() -> None:
    with pytest.raises(ValueError, match="input's H×W"):
        FlipTTAInferer()(torch.zeros(1, 1, 8, 8), lambda t: t[..., :4, :4])
    with pytest.raises(ValueError, match="B×C×H×W"):
        FlipTTAInferer()(torch.zeros(1, 8, 8), lambda t: t)


def test_build_inferer_resize_and_patch() -> None:
    assert type(build_inferer({"input_mode": "resize"})) is SimpleInferer
    assert type(build_inferer({})) is SimpleInferer
    net = _network()
    x = torch.randn(1, 2, 50, 37)
    inferer = build_inferer({"input_mode": "patch", "image_size": 16, "sw_batch_size": 3, "sw_overlap": 0.5})
    assert isinstance(inferer, SlidingWindowInferer)
    with torch.no_grad():
        got = inferer(x, net)
        expected = sliding_window_inference(x, (16, 16), 3, net, overlap=0.5, mode="gaussian")
    torch.testing.assert_close(got, expected)
    assert got.shape == (1, 3, 50, 37)
    # default overlap is 0.25
    default = build_inferer({"input_mode": "patch", "image_size": [16, 24], "sw_batch_size": 2})
    with torch.no_grad():
        expected = sliding_window_inference(x, (16, 24), 2, net, overlap=0.25, mode="gaussian")
        torch.testing.assert_close(default(x, net), expected)


def test_build_inferer_with_tta_wraps_the_sliding_window() -> None:
    net = _network()
    x = torch.randn(1, 2, 40, 30)
    inferer = build_inferer({"input_mode": "patch", "image_size": 16, "tta": True, "sw_batch_size": 4})
    assert isinstance(inferer, FlipTTAInferer) and isinstance(inferer.inferer, SlidingWindowInferer)

    def window(t: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(t, (16, 16), 4, net, overlap=0.25, mode="gaussian")

    with torch.no_grad():
        by_hand = sum(torch.flip(window(torch.flip(x, d)), d) for d in ([], [3], [2], [2, 3])) / 4
        torch.testing.assert_close(inferer(x, net), by_hand)
    assert isinstance(build_inferer({"tta": True}).inferer, SimpleInferer)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"input_mode": "tiles"}, "input_mode"),
        ({"input_mode": "patch"}, "needs image_size"),
        ({"input_mode": "patch", "image_size": [16]}, "image_size"),
        ({"input_mode": "patch", "image_size": 16, "sw_overlap": 1.0}, "sw_overlap"),
        ({"input_mode": "patch", "image_size": 16, "sw_batch_size": 0}, "sw_batch_size"),
        ({"tta": "yes"}, "tta"),
    ],
)
def test_build_inferer_errors(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_inferer(settings)


def test_logits_to_mask_binary_matches_the_bundle_post_processing() -> None:
    # values around the threshold, including logits whose sigmoid rounds to exactly 0.5
    logits = torch.tensor([[[[-1e-9, 0.0, 1e-9, 3.0], [-3.0, 0.2, -0.2, 1e-3]]]])
    bundle = AsDiscrete(threshold=0.7)(Activations(sigmoid=True)(logits[0]))
    torch.testing.assert_close(logits_to_mask(logits, 1, 0.7)[0], bundle.as_tensor())
    got = logits_to_mask(logits, 1, 0.5)
    bundle = AsDiscrete(threshold=0.5)(Activations(sigmoid=True)(logits[0]))
    torch.testing.assert_close(got[0], bundle.as_tensor())
    assert got[0, 0, 0, 1] == 1.0  # sigmoid(0) = 0.5 >= 0.5


def test_logits_to_mask_argmax_for_several_classes() -> None:
    logits = torch.randn(2, 4, 5, 6)
    got = logits_to_mask(logits, num_classes=3)
    assert got.shape == (2, 1, 5, 6) and got.dtype == torch.float32
    expected = AsDiscrete(argmax=True)(logits[1])
    torch.testing.assert_close(got[1], expected.as_tensor())
    assert set(got.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match="needs 4 logit channel"):
        logits_to_mask(logits[:, :3], num_classes=3)
    with pytest.raises(ValueError, match="needs 1 logit channel"):
        logits_to_mask(logits, num_classes=1)


def test_logits_to_maskd_keeps_meta_data() -> None:
    pred = MetaTensor(torch.randn(3, 4, 4), meta={"filename_or_obj": "a.png"})
    out = LogitsToMaskd("pred", num_classes=2)({"pred": pred})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"
    torch.testing.assert_close(out.as_tensor(), torch.argmax(pred.as_tensor(), 0, keepdim=True).float())
