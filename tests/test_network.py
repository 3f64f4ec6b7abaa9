from __future__ import annotations

import json

import pytest
import torch

from napari_denodet.core import network
from napari_denodet.core.network import Denodet, NetworkConfig, count_conv_macs, count_parameters

DEFAULT_PARAMETERS = 68_154
NORMS = ["batch", "instance"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _calibrated(net: Denodet, seed: int = 0) -> Denodet:
    # Fresh batch norm has running statistics (0, 1), an identity map that lets
    # activations grow layer by layer; a few training-mode passes give realistic ones.
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the passes
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, net.config.in_channels, 32, 32))
    return net.eval()


@pytest.fixture(scope="module", params=NORMS)
def model(request, one_torch_thread) -> Denodet:
    torch.manual_seed(0)
    return _calibrated(Denodet(NetworkConfig(norm=request.param)))


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 37, 50), (2, 1, 64, 64), (1, 1, 5, 7), (1, 1, 1, 1), (1, 1, 3, 200), (3, 1, 8, 12)],
)
def test_outputs_match_input_size(model, shape):
    with torch.no_grad():
        denoised, logits = model(torch.randn(shape))
    expected = (shape[0], 1, *shape[2:])
    assert denoised.shape == expected
    assert logits.shape == expected
    assert denoised.dtype == logits.dtype == torch.float32
    assert torch.isfinite(denoised).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("batch", [1, 2])
def test_odd_size_trains_in_train_mode(norm, batch):
    # Both norms refuse single-pixel maps of a single frame in training; the padding
    # must prevent them.
    net = Denodet(NetworkConfig(norm=norm)).train()
    denoised, logits = net(torch.randn(batch, 1, 5, 7))
    (denoised.sum() + logits.sum()).backward()


def test_norm_layer_follows_config():
    def norm_layers(net):
        return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]

    batch = norm_layers(Denodet())
    instance = norm_layers(Denodet(NetworkConfig(norm="instance")))
    assert batch and all(type(m) is torch.nn.BatchNorm2d for m in batch)
    assert len(instance) == len(batch)
    assert all(type(m) is torch.nn.InstanceNorm2d and m.affine for m in instance)


def test_batch_norm_output_is_local_and_instance_norm_is_not():
    # Why batch norm is the default: in eval mode a pixel's output depends only on its
    # receptive field, so tiles of a large frame agree with the whole frame.
    x = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(6))
    far = x.clone()
    far[..., 96:, 96:] += 5.0
    changed = {}
    for norm in NORMS:
        torch.manual_seed(0)
        net = _calibrated(Denodet(NetworkConfig(norm=norm)))
        with torch.no_grad():
            near = [out[..., :32, :32] for out in net(x)]
            moved = [out[..., :32, :32] for out in net(far)]
        changed[norm] = max((a - b).abs().max().item() for a, b in zip(near, moved, strict=True))
    assert changed["batch"] == 0.0
    assert changed["instance"] > 1e-3


def test_multichannel_input():
    net = Denodet(NetworkConfig(widths=(4, 8, 16), in_channels=2)).eval()
    with torch.no_grad():
        denoised, logits = net(torch.randn(1, 2, 20, 24))
    assert denoised.shape == logits.shape == (1, 1, 20, 24)
    with pytest.raises(ValueError, match="expected"):
        net(torch.randn(1, 1, 20, 24))


def test_parameter_count_is_the_documented_one(model):
    n = count_parameters(model)
    assert n == DEFAULT_PARAMETERS
    assert f"{n:,} trainable parameters" in network.__doc__


def test_conv_cost_is_the_documented_one(model):
    macs = count_conv_macs(model, 512, 512)
    assert round(macs / 1e9, 1) == 5.0
    assert "5.0 G multiply-adds" in network.__doc__


@pytest.mark.parametrize("norm", NORMS)
def test_smaller_widths_give_fewer_parameters(norm):
    config = NetworkConfig(widths=(4, 8, 16), norm=norm)
    assert count_parameters(Denodet(config)) < DEFAULT_PARAMETERS


def _grads_after(net: Denodet, output_index: int) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(1)
    net.zero_grad(set_to_none=True)
    outputs = net(torch.randn(2, 1, 24, 20))
    # Random weights so that no gradient vanishes by symmetry (e.g. through a norm).
    weights = torch.randn_like(outputs[output_index])
    (outputs[output_index] * weights).sum().backward()
    return {name: p.grad for name, p in net.named_parameters()}


def _reached(grads, prefix: str) -> bool:
    selected = [g for name, g in grads.items() if name.startswith(prefix)]
    assert selected, prefix
    return all(g is not None and g.abs().sum() > 0 for g in selected)


def _untouched(grads, prefix: str) -> bool:
    return all(g is None for name, g in grads.items() if name.startswith(prefix))


@pytest.mark.parametrize("norm", NORMS)
def test_heatmap_gradient_reaches_encoder_and_both_decoders(norm):
    grads = _grads_after(Denodet(NetworkConfig(norm=norm)).train(), output_index=1)
    for prefix in ("enc1.", "enc2.", "enc3.", "det2.", "det1.", "det_out.", "deno2.", "deno1."):
        assert _reached(grads, prefix), prefix
    # Only the denoised image's 1x1 head lies outside the heatmap's graph.
    assert _untouched(grads, "deno_out.")


@pytest.mark.parametrize("norm", NORMS)
def test_denoised_gradient_reaches_encoder_and_denoising_decoder_only(norm):
    grads = _grads_after(Denodet(NetworkConfig(norm=norm)).train(), output_index=0)
    for prefix in ("enc1.", "enc2.", "enc3.", "deno2.", "deno1.", "deno_out."):
        assert _reached(grads, prefix), prefix
    # Knowledge flows one way: from denoising to detection, never back.
    for prefix in ("det2.", "det1.", "det_out."):
        assert _untouched(grads, prefix), prefix


def test_detection_decoder_concatenates_denoising_features():
    w1, w2, w3 = NetworkConfig().widths
    net = Denodet()
    # Residual block input = upsampled features + encoder skip (+ denoising features).
    assert net.deno2.block.first[0].in_channels == w2 + w2
    assert net.deno1.block.first[0].in_channels == w1 + w1
    assert net.det2.block.first[0].in_channels == w2 + w2 + w2
    assert net.det1.block.first[0].in_channels == w1 + w1 + w1


@pytest.mark.parametrize("level", ["deno2", "deno1"])
def test_heatmap_depends_on_denoising_decoder_features(model, level):
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        denoised, logits = model(x)
        handle = getattr(model, level).register_forward_hook(lambda _m, _i, out: out + 1.0)
        try:
            denoised_hooked, logits_hooked = model(x)
        finally:
            handle.remove()
    assert not torch.allclose(logits, logits_hooked)
    assert not torch.allclose(denoised, denoised_hooked)


def test_denoised_image_does_not_depend_on_detection_decoder(model):
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        denoised, logits = model(x)
        handle = model.det1.register_forward_hook(lambda _m, _i, out: out + 1.0)
        try:
            denoised_hooked, logits_hooked = model(x)
        finally:
            handle.remove()
    assert torch.equal(denoised, denoised_hooked)
    assert not torch.allclose(logits, logits_hooked)


@pytest.mark.parametrize("norm", NORMS)
def test_config_round_trips_through_json(norm):
    config = NetworkConfig(widths=(4, 8, 16), in_channels=2, norm=norm)
    restored = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.norm == norm
    assert isinstance(restored.widths, tuple)
    # Same config, same architecture: the weights load into a rebuilt network.
    Denodet(restored).load_state_dict(Denodet(config).state_dict())


def test_config_defaults_and_rejections():
    assert NetworkConfig.from_dict({}) == NetworkConfig()
    assert NetworkConfig().norm == "batch"
    # A configuration saved before ``norm`` existed loads with the default.
    assert NetworkConfig.from_dict({"widths": [8, 16, 32], "in_channels": 1}).norm == "batch"
    with pytest.raises(ValueError, match="norm"):
        NetworkConfig(norm="group")
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig.from_dict({"widths": [8, 16, 32], "depth": 5})
    with pytest.raises(ValueError, match="widths"):
        NetworkConfig(widths=(8, 16))
    with pytest.raises(ValueError, match="in_channels"):
        NetworkConfig(in_channels=0)


def test_eval_mode_is_deterministic(model):
    x = torch.randn(2, 1, 40, 36, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_frames_in_a_batch_are_independent(model):
    # In eval mode neither norm mixes frames: batch norm uses its running statistics,
    # instance norm each frame's own.
    x = torch.randn(3, 1, 24, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:2])
    torch.testing.assert_close(batched[0][1:2], single[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[1][1:2], single[1], rtol=1e-4, atol=1e-5)


def test_cascaded_variant_detects_from_the_denoised_image_only():
    from napari_denodet.core.network import CascadedDenodet, build_network

    config = NetworkConfig(variant="cascaded")
    net = build_network(config).eval()
    assert isinstance(net, CascadedDenodet)
    assert NetworkConfig.from_dict(config.to_dict()) == config
    seen = []
    net.detector.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    x = torch.randn(1, 1, 30, 41)
    with torch.no_grad():
        denoised, logits = net(x)
    assert denoised.shape == logits.shape == (1, 1, 30, 41)
    # The detection network's only input is the denoising network's output.
    (detector_input,) = seen
    assert detector_input.shape[1] == 1
    torch.testing.assert_close(detector_input[..., :30, :41], denoised)
