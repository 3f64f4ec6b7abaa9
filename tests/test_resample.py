import numpy as np
import pytest

from napari_denodet.core.points import points_table
from napari_denodet.core.resample import bin_image, bin_points, unbin_points


def test_binning_averages_blocks_and_crops_the_remainder():
    img = np.arange(7 * 9, dtype=np.uint16).reshape(7, 9)
    out = bin_image(img, 2)
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[0, 0] == pytest.approx(img[:2, :2].mean())
    assert out[2, 3] == pytest.approx(img[4:6, 6:8].mean())
    stack = np.stack([img, img * 2])
    assert bin_image(stack, 3).shape == (2, 2, 3)
    assert bin_image(img, 1) is img


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_a_spot_found_in_the_binned_image_maps_back_to_its_full_resolution_centre(factor):
    # A block-aligned bright square: its centre in binned pixels maps back exactly.
    size = 8 * factor
    img = np.zeros((size, size))
    img[2 * factor:4 * factor, 4 * factor:6 * factor] = 1.0
    binned = bin_image(img, factor)
    ys, xs = np.nonzero(binned)
    table = points_table([ys.mean()], [xs.mean()])
    full = unbin_points(table, factor)
    yy, xx = np.nonzero(img)
    assert full.y[0] == pytest.approx(yy.mean())
    assert full.x[0] == pytest.approx(xx.mean())


def test_binning_refuses_a_factor_larger_than_the_image():
    with pytest.raises(ValueError, match="cannot bin"):
        bin_image(np.zeros((3, 3)), 4)


def test_bin_points_inverts_unbin_points():
    table = points_table([0.0, 10.25, 63.5], [1.0, 2.5, 30.0], score=[0.1, 0.5, 0.9])
    for factor in (1, 2, 8):
        back = bin_points(unbin_points(table, factor), factor)
        np.testing.assert_allclose(back[["y", "x"]], table[["y", "x"]])
    # Binned pixel 0 of a 4x bin is centred on full-resolution pixel 1.5.
    assert bin_points(points_table([1.5], [1.5]), 4)[["y", "x"]].iloc[0].tolist() == [0, 0]
