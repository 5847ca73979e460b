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
