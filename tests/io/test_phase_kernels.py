"""The phase-to-radians numba kernels against the plain numpy arithmetic they replace."""

import numpy as np
import pytest

from microbleeds.io.phase_file import _finite_range, _radians, phase_to_radians, wrap_phase


def _reference(x, inter=0.0, slope=1.0, factor=1.0):
    return wrap_phase((np.asarray(x, np.float64) - inter) / slope * factor).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inter, slope, factor", [(0.0, 1.0, 1.0), (0.0, 1.0, np.pi / 4096),
                                                  (-2048.0, 0.00117, np.pi / 4096), (3.0, -2.5, 1.0)])
def test_scale_and_wrap_is_bit_identical_to_numpy(dtype, inter, slope, factor):
    rng = np.random.default_rng(7)
    x = rng.uniform(-5000, 5000, (13, 11, 7)).astype(dtype)
    x.flat[:6] = [np.pi, -np.pi, 0.0, -0.0, 4096.0, -4096.0]  # wrap boundaries
    np.testing.assert_array_equal(_radians(x, inter, slope, factor), _reference(x, inter, slope, factor))


def test_finite_range_ignores_nan_and_inf():
    x = np.array([np.nan, 2.0, -np.inf, -3.5, np.inf, 1.0], np.float32)
    assert _finite_range(x) == (-3.5, 2.0, 3)
    assert _finite_range(np.full(4, np.nan))[2] == 0


def test_non_contiguous_and_integer_input_match_reference():
    rng = np.random.default_rng(3)
    ints = rng.integers(-4096, 4096, (9, 8, 6), dtype=np.int16)
    out, _ = phase_to_radians(ints[:, ::2])
    np.testing.assert_array_equal(out, _reference(ints[:, ::2], factor=np.pi / 4096))


@pytest.mark.parametrize("order", ["C", "F"])
def test_out_of_range_nan_and_inf_are_wrapped_as_numpy(order):
    """The first pass marks values outside [0, 2 pi) after the shift (and NaN, infinities) for the
    second: C-ordered and Fortran-ordered (transposed, tiled) input, tiles with and without them."""
    rng = np.random.default_rng(11)
    x = rng.uniform(-np.pi, np.pi, (70, 40, 33)).astype(np.float32)
    x[3, :, 5] = rng.uniform(-50, 50, 40)
    x.flat[[7, 900, 5000, 20000]] = [np.nan, np.inf, -np.inf, 2 * np.pi]
    x = np.asarray(x, order=order)
    with np.errstate(invalid="ignore"):
        want = _reference(x)
    got = _radians(x)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
