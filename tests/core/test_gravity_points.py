import numpy as np
import pytest

from napari_gravity.core import gravity_points, n_gravity_points
from napari_gravity.core.gravity_points import base_configuration, points_per_axis

# SPEC §1 / paper 000 tables: (image shape, step) -> N_GP
PAPER_COUNTS = [
    ((3328, 2560), 6, 299_520),
    ((3328, 2560), 10, 133_120),
    ((3328, 2560), 15, 74_880),
    ((3328, 2560), 30, 33_280),
    ((1216, 1408), 5, 81_928),
    ((1216, 1408), 6, 60_192),
    ((1216, 1408), 10, 26_752),
    ((1216, 1408), 15, 15_048),
    ((1216, 1408), 30, 6_688),
]


@pytest.mark.parametrize(("shape", "step", "expected"), PAPER_COUNTS)
def test_paper_counts(shape, step, expected):
    gp = gravity_points(shape, step)
    assert gp.shape == (expected, 2)
    assert n_gravity_points(shape, step) == expected
    assert gravity_points(shape, step, layout="uniform").shape == (expected, 2)


def test_paper_counts_are_ten_figures():
    # the table has ten cells, one of them "—" (mammogram step 5); we check that one too
    assert n_gravity_points((3328, 2560), 5) == 49 * 104 * 80
    assert len(PAPER_COUNTS) + 1 == 10


def test_paper_layout_window_and_order():
    gp = gravity_points((64, 96), 10)
    # 2 x 3 feature cells, 4 x 4 points per cell
    assert gp.shape == (6 * 16, 2)
    first = gp[:16]
    np.testing.assert_array_equal(first[:4], [[0, 0], [0, 10], [0, 20], [0, 30]])
    np.testing.assert_array_equal(first[4], [10, 0])
    np.testing.assert_array_equal(first[-1], [30, 30])
    # second cell is the next one along x (row-major over cells), shifted by K = 32
    np.testing.assert_array_equal(gp[16:32], first + np.array([0, 32]))
    # fourth cell starts the second row of cells
    np.testing.assert_array_equal(gp[48:64], first + np.array([32, 0]))
    # the paper lattice is not uniform across window borders: 30 -> 32
    xs = np.unique(gp[:, 1])
    assert list(xs[:6]) == [0, 10, 20, 30, 32, 42]


def test_not_multiple_of_stride_uses_ceil():
    gp = gravity_points((33, 65), 10)
    assert gp.shape == (2 * 3 * 16, 2)
    assert gp[:, 0].max() == 32 + 30 and gp[:, 1].max() == 64 + 30


def test_uniform_layout_is_centred_and_evenly_spaced():
    gp = gravity_points((64, 64), 10, layout="uniform")
    xs = np.unique(gp[:, 1])
    assert len(xs) == 8
    np.testing.assert_allclose(np.diff(xs), 8.0)
    np.testing.assert_allclose(xs[0], 3.5)
    # centred: symmetric in the image
    np.testing.assert_allclose(xs + xs[::-1], 63.0)


@pytest.mark.parametrize(
    ("stride", "step", "per_axis"),
    [(32, 30, 2), (16, 4, 4), (16, 14, 2), (8, 4, 2), (8, 6, 2), (8, 3, 3)],
)
def test_other_strides(stride, step, per_axis):
    assert points_per_axis(step, stride) == per_axis
    gp = gravity_points((40, 24), step, stride=stride)
    cells = -(-40 // stride) * -(-24 // stride)
    assert gp.shape == (cells * per_axis**2, 2)
    assert base_configuration(step, stride=stride).max() <= stride - 2


@pytest.mark.parametrize("step", [0, -1, 31, 40])
def test_invalid_step(step):
    with pytest.raises(ValueError, match="step"):
        gravity_points((64, 64), step)


def test_invalid_layout():
    with pytest.raises(ValueError, match="layout"):
        gravity_points((64, 64), 10, layout="hex")
