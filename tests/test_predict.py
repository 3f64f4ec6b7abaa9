from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from napari_denodet.core.errors import InputError
from napari_denodet.core.network import Denodet, NetworkConfig
from napari_denodet.core.predict import (
    DetectionResult,
    DetectProgress,
    available_devices,
    choose_device,
    choose_precision,
    detect,
    prepare_network,
    run,
)


def _calibrated(config: NetworkConfig | None = None, seed: int = 0) -> Denodet:
    # Random weights, and batch-norm statistics from a few training-mode passes so that
    # activations keep a sensible scale (the fresh (0, 1) statistics let them grow).
    torch.manual_seed(seed)
    net = Denodet(config or NetworkConfig())
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0.0, 0.2)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, net.config.in_channels, 32, 32))
    return net.eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def network(one_torch_thread) -> Denodet:
    return _calibrated()


class Echo(nn.Module):
    """Denoised = the normalised input; logits = the normalised input minus ``offset``."""

    calls: list[int] = []  # class-level: shared with the copy that prepare_network makes

    def __init__(self, offset: float = 10.0) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x):
        Echo.calls.append(x.shape[0])
        return x.clone(), x - self.offset


class FixedHeatmap(nn.Module):
    """Returns the same heatmap logits for every frame; denoised = normalised input."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return x.clone(), self.logits.expand(x.shape[0], 1, *self.logits.shape)


class LogitsAsDenoised(nn.Module):
    """Exposes a network's heatmap logits through the denoised output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        _, logits = self.net(x)
        return logits, logits


class RecordingArray:
    """A lazily read (t, y, x) array-like that records which frames were requested."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.ndim = data.ndim
        self.dtype = data.dtype
        self.reads: list[range] = []

    def __getitem__(self, key):
        assert isinstance(key, slice), key
        self.reads.append(range(*key.indices(self.shape[0])))
        return self.data[key]


def _spot_stack(n_frames=6, shape=(40, 36), seed=0):
    # Noise (median 100, sigma 10) plus one bright pixel per frame at a known place.
    rng = np.random.default_rng(seed)
    stack = rng.normal(100.0, 10.0, (n_frames, *shape)).astype(np.float32)
    spots = [(5 + 4 * t, 30 - 3 * t) for t in range(n_frames)]
    for t, (y, x) in enumerate(spots):
        stack[t, y, x] += 500.0
    return stack, spots


def _matched(a, b, columns, tol):
    # Every point of each table has a partner in the other within ``tol`` (and same frame).
    pa, pb = a[columns].to_numpy(), b[columns].to_numpy()
    if len(pa) != len(pb):
        return False
    return all(
        np.all(cKDTree(q).query(p, distance_upper_bound=tol)[0] <= tol)
        for p, q in ((pa, pb), (pb, pa))
    )


def test_single_image_shapes_and_columns(network):
    image = np.random.default_rng(1).normal(50.0, 5.0, (37, 45))
    result = run(detect(image, network))
    assert isinstance(result, DetectionResult)
    assert result.denoised.shape == image.shape
    assert result.denoised.dtype == np.float32
    assert list(result.points.columns) == ["y", "x", "score", "intensity"]
    assert len(result.points) > 0
    assert len(result.scales) == 1
    assert result.first_frame == 0
    assert (result.points["score"] >= 0.05).all()
    assert result.points["y"].between(0, 36).all() and result.points["x"].between(0, 44).all()


def test_stack_shapes_and_columns(network):
    stack = np.random.default_rng(2).integers(90, 120, (3, 24, 28)).astype(np.uint16)
    result = run(detect(stack, network, batch_size=2))
    assert result.denoised.shape == stack.shape
    assert result.denoised.dtype == np.float32
    assert list(result.points.columns) == ["frame", "y", "x", "score", "intensity"]
    assert result.points["frame"].dtype == np.int64
    assert set(result.points["frame"]) <= {0, 1, 2}
    assert len(result.scales) == 3


def test_memmap_input_gives_the_in_memory_result(network, tmp_path):
    stack = np.random.default_rng(3).normal(100.0, 10.0, (5, 24, 20)).astype(np.float32)
    mm = np.memmap(tmp_path / "stack.raw", dtype=np.float32, mode="w+", shape=stack.shape)
    mm[:] = stack
    mm.flush()
    del mm
    lazy = np.memmap(tmp_path / "stack.raw", dtype=np.float32, mode="r", shape=stack.shape)
    from_disk = run(detect(lazy, network, batch_size=2))
    in_memory = run(detect(stack, network, batch_size=2))
    assert from_disk.denoised.shape == stack.shape
    assert not isinstance(from_disk.denoised, np.memmap)
    np.testing.assert_array_equal(from_disk.denoised, in_memory.denoised)
    assert from_disk.points.equals(in_memory.points)


def test_frames_are_read_one_batch_at_a_time():
    stack, _ = _spot_stack(n_frames=7)
    lazy = RecordingArray(stack)
    run(detect(lazy, Echo(), batch_size=3))
    assert lazy.reads == [range(0, 3), range(3, 6), range(6, 7)]


def test_frame_range_processes_only_those_frames():
    stack, spots = _spot_stack(n_frames=6)
    lazy = RecordingArray(stack)
    result = run(detect(lazy, Echo(), frames=(2, 5), batch_size=2, precision="float32"))
    assert {t for r in lazy.reads for t in r} == {2, 3, 4}
    assert result.first_frame == 2
    assert result.denoised.shape == (3, *stack.shape[1:])
    assert len(result.scales) == 3
    np.testing.assert_allclose(result.denoised, stack[2:5], rtol=1e-6, atol=1e-4)
    # One spot per frame, labelled with its absolute frame index.
    assert result.points["frame"].tolist() == [2, 3, 4]
    expected = np.array([spots[t] for t in (2, 3, 4)], dtype=float)
    np.testing.assert_allclose(result.points[["y", "x"]].to_numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_denoised_output_is_in_the_input_intensity_scale(invert, dtype):
    stack, spots = _spot_stack(n_frames=3)
    stack = stack.astype(dtype)
    result = run(detect(stack, Echo(), invert=invert, precision="float32"))
    # The echo network "denoises" to its normalised input, so the way back is exact.
    np.testing.assert_allclose(result.denoised, stack.astype(np.float32), rtol=1e-6, atol=1e-4)
    for frame, scale in zip(stack, result.scales, strict=True):
        assert scale.invert is invert
        # Integer frames are measured with a fixed dither of one ADU: within half an ADU.
        assert abs(scale.background - np.median(frame)) <= 0.5
    if not invert:
        # Intensity is the denoised value at the (rounded) point position.
        assert len(result.points) == 3
        frames = result.points["frame"].to_numpy()
        ys = result.points["y"].round().astype(int).to_numpy()
        xs = result.points["x"].round().astype(int).to_numpy()
        np.testing.assert_allclose(
            result.points["intensity"], result.denoised[frames, ys, xs], rtol=1e-6
        )


def _seam_tables(network, tile_size, overlap, image, precision="float32"):
    untiled = run(detect(image, network, tile_size=1024, precision=precision))
    tiled = run(detect(image, network, tile_size=tile_size, overlap=overlap,
                       precision=precision))
    return untiled, tiled


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("tile_size", [64, 32])
def test_tiled_and_untiled_runs_agree(network, tile_size, precision):
    image = np.random.default_rng(4).normal(0.0, 1.0, (2, 200, 150)).astype(np.float32)
    untiled, tiled = _seam_tables(network, tile_size, 48, image, precision)
    np.testing.assert_allclose(tiled.denoised, untiled.denoised, rtol=0, atol=1e-4)

    # The heatmap logits, seen through the denoised output (mapped back per frame).
    heat_untiled, heat_tiled = _seam_tables(LogitsAsDenoised(network), tile_size, 48, image,
                                            precision)
    for t, scale in enumerate(heat_untiled.scales):
        a = (heat_untiled.denoised[t] - scale.background) / scale.scale
        b = (heat_tiled.denoised[t] - scale.background) / scale.scale
        assert np.abs(a - b).max() < 1e-4

    points_u, points_t = untiled.points, tiled.points
    assert len(points_u) > 50
    # Some detections sit on the seam at y = 100 (both tilings have one there).
    assert (points_u["y"].sub(100).abs() < 3).sum() > 0
    assert _matched(points_u, points_t, ["frame", "y", "x"], tol=0.01)
    np.testing.assert_allclose(
        np.sort(points_t["score"].to_numpy()), np.sort(points_u["score"].to_numpy()), atol=1e-4
    )


def test_tiles_without_context_do_not_agree(network):
    # The agreement above is earned by the overlap: without it the seams show.
    image = np.random.default_rng(5).normal(0.0, 1.0, (120, 120)).astype(np.float32)
    untiled, tiled = _seam_tables(network, 32, 0, image)
    assert np.abs(tiled.denoised - untiled.denoised).max() > 1e-3


def _gaussian_logits(shape, centres, peak_logits, sigma=0.7):
    # Quadratic logits: their local softmax is a sampled Gaussian centred on each centre.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    logits = np.full(shape, -30.0)
    for (cy, cx), top in zip(centres, peak_logits, strict=True):
        bump = top - ((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
        logits = np.maximum(logits, bump)
    return logits


def test_sub_pixel_positions_and_scores_of_known_peaks():
    shape = (48, 64)
    centres = [(10.3, 12.6), (20.0, 40.45), (35.7, 20.2), (33.35, 50.8)]
    peak_logits = [3.0, 1.0, 0.0, 2.0]
    sigma = 0.7
    logits = _gaussian_logits(shape, centres, peak_logits, sigma)
    image = np.random.default_rng(6).normal(0.0, 1.0, shape)
    result = run(detect(image, FixedHeatmap(logits), floor=0.5, precision="float32"))
    points = result.points
    # The peak with logit 0 scores below 0.5 at its peak pixel; the others pass.
    expected = [(c, p) for c, p in zip(centres, peak_logits, strict=True) if p > 0]
    assert len(points) == len(expected)
    for (cy, cx), top in expected:
        row = points.iloc[int(np.argmin((points["y"] - cy) ** 2 + (points["x"] - cx) ** 2))]
        assert abs(row["y"] - cy) < 0.05 and abs(row["x"] - cx) < 0.05
        # The score is the probability at the peak *pixel*, not at the sub-pixel centre.
        d2 = (round(cy) - cy) ** 2 + (round(cx) - cx) ** 2
        expected_score = 1.0 / (1.0 + np.exp(-(top - d2 / (2 * sigma**2))))
        assert row["score"] == pytest.approx(expected_score, abs=1e-5)


@pytest.mark.parametrize(
    ("shape", "calls"),
    [((7, 40, 36), [7]), ((9, 512, 512), [4, 4, 1]), ((3, 600, 600), [2, 1]),
     ((2, 1024, 1000), [1, 1])],
)
def test_automatic_batches_on_cpu_hold_about_1024_by_1024_pixels(shape, calls):
    Echo.calls.clear()
    run(detect(np.zeros(shape, dtype=np.float32), Echo(), device="cpu"))
    assert Echo.calls == calls


def test_progress_after_every_batch():
    stack, _ = _spot_stack(n_frames=7)
    generator = detect(stack, Echo(), batch_size=3)
    progress = []
    while True:
        try:
            progress.append(next(generator))
        except StopIteration as stop:
            result = stop.value
            break
    assert all(isinstance(p, DetectProgress) and p.stage == "detect" for p in progress)
    assert [p.step for p in progress] == [1, 2, 3]
    assert {p.total for p in progress} == {3}
    assert [p.frames_done for p in progress] == [3, 6, 7]
    assert {p.frames_total for p in progress} == {7}
    assert result.denoised.shape == stack.shape


def test_progress_of_tiled_frames_counts_tile_batches():
    stack = np.random.default_rng(7).normal(0.0, 1.0, (2, 200, 150)).astype(np.float32)
    Echo.calls.clear()
    progress = list(_drain(detect(stack, Echo(), tile_size=32, overlap=48, batch_size=3)))
    # 4 x 2 tiles per frame, 3 per forward pass: 3 passes per frame.
    assert Echo.calls == [3, 3, 2] * 2
    assert [p.step for p in progress] == [1, 2, 3, 4, 5, 6]
    assert {p.total for p in progress} == {6}
    assert [p.frames_done for p in progress] == [0, 0, 1, 1, 1, 2]


def _drain(generator):
    result = yield from generator
    assert isinstance(result, DetectionResult)


def test_closing_the_generator_stops_the_work():
    stack, _ = _spot_stack(n_frames=8)
    lazy = RecordingArray(stack)
    Echo.calls.clear()
    generator = detect(lazy, Echo(), batch_size=2)
    first = next(generator)
    assert first.frames_done == 2
    generator.close()
    assert Echo.calls == [2]
    assert lazy.reads == [range(0, 2)]
    with pytest.raises(StopIteration):
        next(generator)


def test_the_callers_network_is_left_as_it_was(network):
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    try:
        run(detect(np.zeros((16, 16)), network))
        assert network.training
    finally:
        network.eval()
    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in network.modules())


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_prepared_network_matches_eager(norm):
    net = _calibrated(NetworkConfig(norm=norm), seed=8)
    x = torch.randn(3, 1, 64, 52, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        eager = net(x)
        prepared = prepare_network(net, torch.device("cpu"))(x)
    for a, b in zip(eager, prepared, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-3
    assert eager[1].std() > 0.1  # not a degenerate network


def test_precision_choice(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    from napari_denodet.core import device

    monkeypatch.setattr(device, "native_bfloat16", lambda: True)
    assert choose_precision("auto", cpu) == torch.bfloat16
    assert choose_precision("auto", gpu) == torch.float32  # GPUs keep float32
    monkeypatch.setattr(device, "native_bfloat16", lambda: False)
    assert choose_precision("auto", cpu) == torch.float32
    assert choose_precision("bfloat16", cpu) == torch.bfloat16  # asked for: emulated
    assert choose_precision("float32", cpu) == torch.float32
    with pytest.raises(InputError, match="precision must be one of"):
        choose_precision("float16", cpu)
    with pytest.raises(InputError, match="precision must be one of"):
        run(detect(np.zeros((16, 16)), Echo(), precision="half"))


def test_bfloat16_detections_match_float32():
    # A trained model on a simulated stack: bfloat16 arithmetic rounds the network's
    # activations, not its answers. Outputs come back float32 either way.
    from napari_denodet.core.metrics import score_detections
    from napari_denodet.core.models import load_model
    from napari_denodet.core.simulate import simulate_timelapse

    model = load_model("fluorescence")
    sim = simulate_timelapse("vesicle", snr=2, density="mid", frames=2, shape=(128, 128),
                             seed=11)
    found = {}
    for precision in ("float32", "bfloat16"):
        result = run(detect(sim.noisy, model.network, precision=precision, floor=0.05,
                            **model.localisation))
        assert result.denoised.dtype == np.float32
        found[precision] = result
    f32, bf16 = found["float32"], found["bfloat16"]
    noise = np.array([s.scale for s in f32.scales])[:, None, None]
    assert np.abs(bf16.denoised - f32.denoised).max() / noise.min() < 0.1
    assert np.abs(bf16.denoised - f32.denoised).max() > 0  # it did run in bfloat16
    keep = model.threshold
    a = f32.points[f32.points.score >= keep]
    b = bf16.points[bf16.points.score >= keep]
    assert len(a) > 20
    agreement = score_detections(b, a, gate=0.5)
    # bfloat16 moves centres by a few hundredths of a pixel (0.04-0.06 px measured).
    assert agreement.f1 > 0.97 and agreement.rmse < 0.08
    truth_f32 = score_detections(a, sim.truth).f1
    assert abs(score_detections(b, sim.truth).f1 - truth_f32) < 0.02


def test_device_choice():
    devices = available_devices()
    assert devices[0] == "cpu"
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if "cuda" in devices else "mps" if "mps" in devices else "cpu"
    assert choose_device("auto").type == expected
    with pytest.raises(InputError, match="unknown device"):
        choose_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is available here")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(InputError, match="not available"):
        choose_device("cuda")
    with pytest.raises(InputError, match="not available"):
        run(detect(np.zeros((8, 8)), Echo(), device="cuda"))


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((4, 2, 8, 8), {}, "expected a"),
        ((8,), {}, "expected a"),
        ((3, 8, 8), {"frames": (2, 5)}, "not within"),
        ((3, 8, 8), {"frames": (2, 2)}, "not within"),
        ((8, 8), {"frames": (0, 1)}, "stack"),
        ((3, 8, 8), {"batch_size": 0}, "batch_size"),
        ((3, 8, 8), {"overlap": -4}, "overlap"),
    ],
)
def test_unusable_input_is_a_clear_error(shape, kwargs, match):
    with pytest.raises(InputError, match=match):
        run(detect(np.zeros(shape), Echo(), **kwargs))


def test_a_frame_without_a_finite_pixel_is_a_clear_error():
    stack = np.zeros((3, 8, 8))
    stack[1] = np.nan
    with pytest.raises(InputError, match="frame 1 holds no finite pixel"):
        run(detect(stack, Echo()))


def test_non_finite_pixels_anywhere_are_background_and_counted():
    # 512 x 512 frames are normalised from a subsample of every 4th pixel: the NaN at
    # (1, 1) and the inf at (300, 7) are both off that sample.
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 10.0, (512, 512)).astype(np.float32)
    image[200:204, 300:304] += 200.0
    hostile = image.copy()
    hostile[1, 1], hostile[300, 7], hostile[5, 9] = np.nan, np.inf, -np.inf
    net = _calibrated()
    result = run(detect(hostile, net, precision="float32"))
    assert result.non_finite == 3
    assert np.isfinite(result.denoised).all()
    assert np.isfinite(result.points[["y", "x", "score", "intensity"]].to_numpy()).all()
    # The same as the frame with those pixels at the background level (its median).
    finite = np.isfinite(hostile)
    filled = np.where(finite, hostile, np.median(hostile[finite])).astype(np.float32)
    expected = run(detect(filled, net, precision="float32"))
    np.testing.assert_array_equal(result.denoised, expected.denoised)
    assert result.points.equals(expected.points)
    assert run(detect(image, net, precision="float32")).non_finite == 0


# ----------------------------------------------------------------- out: denoised on disk


@pytest.mark.parametrize("tile_size", [1024, 32])
def test_out_receives_the_denoised_frames_and_nothing_full_size_is_kept(network, tmp_path,
                                                                         tile_size):
    from napari_denodet.core.io import open_denoised_output, read_image

    stack = np.random.default_rng(6).normal(100.0, 10.0, (5, 40, 36)).astype(np.float32)
    in_memory = run(detect(stack, network, batch_size=2, tile_size=tile_size))
    with open_denoised_output(tmp_path / "den.tif", stack.shape) as out:
        streamed = run(detect(stack, network, batch_size=2, tile_size=tile_size, out=out))
    assert streamed.denoised is out
    np.testing.assert_array_equal(read_image(tmp_path / "den.tif"), in_memory.denoised)
    assert streamed.points.equals(in_memory.points)


def test_out_may_be_a_writable_memory_map_of_a_frame_range(network, tmp_path):
    stack = np.random.default_rng(7).normal(100.0, 10.0, (6, 24, 20)).astype(np.float32)
    out = np.lib.format.open_memmap(tmp_path / "den.npy", mode="w+", dtype=np.float32,
                                    shape=(3, 24, 20))
    result = run(detect(stack, network, frames=(2, 5), out=out))
    assert result.denoised is out
    np.testing.assert_array_equal(out, run(detect(stack, network, frames=(2, 5))).denoised)


def test_out_of_a_single_image(network, tmp_path):
    image = np.random.default_rng(8).normal(100.0, 10.0, (24, 20)).astype(np.float32)
    out = np.zeros((24, 20), np.float32)
    run(detect(image, network, out=out))
    np.testing.assert_array_equal(out, run(detect(image, network)).denoised)


def test_out_of_the_wrong_shape_is_a_clear_error(network):
    stack = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(InputError, match=r"out has shape \(3, 16, 15\)"):
        run(detect(stack, network, out=np.zeros((3, 16, 15), np.float32)))


def test_dask_input_is_read_batch_by_batch_and_gives_the_in_memory_result(network):
    import dask.array as da

    stack = np.random.default_rng(9).normal(100.0, 10.0, (5, 24, 20)).astype(np.float32)
    lazy = da.from_array(stack, chunks=(1, 24, 20))
    from_dask = run(detect(lazy, network, batch_size=2))
    in_memory = run(detect(stack, network, batch_size=2))
    np.testing.assert_array_equal(from_dask.denoised, in_memory.denoised)
    assert from_dask.points.equals(in_memory.points)


def test_keep_heap_takes_effect_once_on_glibc():
    from napari_denodet.core.predict import keep_heap

    first = keep_heap()
    assert keep_heap() == first  # a second call changes nothing
    if platform.libc_ver()[0] == "glibc":
        assert first, "glibc's mallopt should accept the settings"


class EqualPeaks(nn.Module):
    """Denoises nothing; its heatmap has equal peaks at fixed positions."""

    def __init__(self, positions) -> None:
        super().__init__()
        self.positions = positions

    def forward(self, x):
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                torch.arange(w, dtype=torch.float32), indexing="ij")
        heat = torch.zeros(h, w)
        for py, px in self.positions:
            heat = torch.maximum(heat, torch.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 2))
        logits = (6.0 * heat - 4.0).expand(x.shape[0], 1, h, w)
        return x, logits.contiguous()


def test_blob_score_breaks_tied_peaks_by_the_denoised_image():
    # Ten equal heatmap peaks: five on bright spots, five on faint ones.
    positions = [(20.0 + 25 * (i // 4), 20.0 + 25 * (i % 4)) for i in range(10)]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :112]
    image = rng.normal(0.0, 1.0, (96, 112))
    for i, (py, px) in enumerate(positions):
        image += (8.0 if i % 2 else 1.0) * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 8.0)
    network = EqualPeaks(positions)
    plain = run(detect(image, network, floor=0.5)).points
    assert len(plain) == 10 and np.ptp(plain["score"]) < 1e-6

    blob = {"weight": 0.1, "sigma": 2.0, "centre": 0.0, "scale": 1.0}
    scored = run(detect(image, network, floor=0.5, blob=blob)).points
    np.testing.assert_allclose(scored[["y", "x"]], plain[["y", "x"]])
    bright = np.array([min(range(10), key=lambda i: np.hypot(y - positions[i][0],
                                                             x - positions[i][1])) % 2 == 1
                       for y, x in scored[["y", "x"]].to_numpy()])
    assert scored["score"][bright].min() > scored["score"][~bright].max()
    assert np.all(np.abs(scored["score"] - plain["score"]) <= 0.1 + 1e-9)


def test_tiled_and_untiled_blob_scores_agree(network):
    # The blob filter reads the stitched denoised frame, seams included.
    image = np.random.default_rng(6).normal(0.0, 1.0, (200, 150)).astype(np.float32)
    blob = {"weight": 0.3, "sigma": 2.0, "centre": 0.0, "scale": 0.5}
    plain = run(detect(image, network)).points
    untiled = run(detect(image, network, blob=blob)).points
    tiled = run(detect(image, network, blob=blob, tile_size=64, overlap=48)).points
    assert len(untiled) > 50 and np.abs(untiled["score"] - plain["score"]).max() > 0.05
    assert _matched(untiled, tiled, ["y", "x"], tol=0.01)
    np.testing.assert_allclose(np.sort(tiled["score"]), np.sort(untiled["score"]), atol=1e-4)


@pytest.mark.parametrize("blob", [{"weight": 2.0}, {"sigma": 2.0}, {"weight": 0.1, "size": 3}])
def test_bad_blob_settings_are_an_input_error(network, blob):
    with pytest.raises(InputError, match="bad blob score settings"):
        run(detect(np.zeros((32, 32), np.float32), network, blob=blob))


@pytest.mark.parametrize("sigma", [1.2, 1.8, 3.2, 8.0])
def test_noise_scale_of_integer_frames_is_not_stuck_on_whole_adu(sigma):
    # A camera with a noise of one or two ADU: the plain MAD of whole numbers is 1 ADU
    # for any noise from about 1.1 to 2.2 ADU; the dithered estimate follows the noise.
    from napari_denodet.core.normalize import frame_scale

    rng = np.random.default_rng(0)
    frame = np.rint(100.3 + sigma * rng.standard_normal((256, 256))).astype(np.uint16)
    scale = frame_scale(frame)
    # Rounding adds 1/12 ADU^2 of its own: the noise of the whole numbers.
    recorded = np.sqrt(sigma**2 + 1 / 12)
    assert scale.scale == pytest.approx(recorded, rel=0.06)
    assert scale.background == pytest.approx(100.3, abs=0.1)
    # Float frames keep the plain median and MAD.
    floats = frame.astype(np.float32) + np.float32(0.25)
    assert frame_scale(floats).background == pytest.approx(np.median(floats))
