from __future__ import annotations

import itertools

import numpy as np
import pytest

from lazyflow_rbfs import geometry as g
from lazyflow_rbfs.errors import OutOfBoundsError


def brute_force_blocks(start, stop, block_shape):
    """Every grid block that intersects [start, stop), found by scanning the whole grid."""
    ranges = [range(0, e + b, b) for e, b in zip(stop, block_shape)]
    found = []
    for bs in itertools.product(*ranges):
        be = [s + b for s, b in zip(bs, block_shape)]
        if all(s0 < e1 and s1 < e0 for s0, e0, s1, e1 in zip(start, stop, bs, be)):
            found.append(bs)
    return found


@pytest.mark.parametrize(
    "shape,block_shape",
    [
        ((10,), (3,)),
        ((7, 9), (2, 4)),
        ((5, 6, 7), (2, 3, 7)),
        ((3, 4, 5, 6), (2, 2, 2, 4)),
        ((2, 3, 4, 5, 3), (1, 2, 3, 4, 3)),
    ],
)
def test_projections_reassemble_any_roi(shape, block_shape):
    rng = np.random.default_rng(len(shape))
    volume = rng.integers(0, 1000, size=shape)
    for _ in range(25):
        start = np.array([rng.integers(0, s) for s in shape])
        stop = np.array([rng.integers(a + 1, s + 1) for a, s in zip(start, shape)])
        out = np.full(tuple(stop - start), -1)
        starts = []
        for p in g.projections(start, stop, np.array(block_shape), np.array(shape)):
            block = volume[g.to_slices(p.block_start, p.block_stop)]
            out[p.out_slices] = block[p.block_slices]
            starts.append(p.block_start)
        np.testing.assert_array_equal(out, volume[g.to_slices(start, stop)])
        expected = brute_force_blocks(start.tolist(), stop.tolist(), block_shape)
        assert starts == expected
        assert list(g.iter_block_starts(start, stop, np.array(block_shape))) == expected
        assert g.count_blocks(start, stop, np.array(block_shape)) == len(expected)


def test_edge_block_is_clipped_to_shape():
    start, stop = g.block_bounds((8, 4), np.array([4, 4]), np.array([10, 6]))
    assert start.tolist() == [8, 4] and stop.tolist() == [10, 6]
    last = list(g.projections(np.array([0, 0]), np.array([10, 6]), np.array([4, 4]), np.array([10, 6])))[-1]
    assert last.block_start == (8, 4) and last.block_stop == (10, 6)
    assert last.block_slices == (slice(0, 2), slice(0, 2))


def test_iter_block_starts_streams_without_materialising():
    it = g.iter_block_starts(np.array([0, 0, 0]), np.array([10**6, 10**6, 10**6]), np.array([1, 1, 1]))
    assert next(it) == (0, 0, 0)
    assert next(it) == (0, 0, 1)
    assert g.count_blocks(np.array([0, 0, 0]), np.array([10**6, 10**6, 10**6]), np.array([1, 1, 1])) == 10**18


def test_block_starts_are_plain_ints():
    (first,) = list(g.iter_block_starts(np.array([5], dtype=np.int64), np.array([6]), np.array([4])))
    assert first == (4,) and type(first[0]) is int


@pytest.mark.parametrize(
    "roi",
    [
        ((-1, 0), (2, 2)),  # negative
        ((3, 0), (2, 2)),  # reversed
        ((1, 1), (1, 2)),  # zero volume
        ((0, 0), (11, 2)),  # beyond shape
        ((0,), (2,)),  # wrong number of axes
        ((0, 0, 0), (1, 1, 1)),
    ],
)
def test_check_roi_rejects(roi):
    with pytest.raises(OutOfBoundsError):
        g.check_roi(roi, (10, 10))


def test_check_roi_rejects_non_integers():
    with pytest.raises(TypeError):
        g.check_roi(((0.5, 0), (2, 2)), (10, 10))
    with pytest.raises(TypeError):
        g.check_roi("nonsense", (10, 10))


def test_check_roi_accepts_numpy_and_integral_floats():
    start, stop = g.check_roi((np.array([0, 1], dtype=np.uint16), [10.0, 2]), (10, 10))
    assert start.dtype == np.int64 and start.tolist() == [0, 1] and stop.tolist() == [10, 2]


def test_roi_string_is_identical_for_numpy_and_python_ints():
    expected = "([0, 256, 512], [32, 512, 600])"
    assert g.roi_string(np.array([0, 256, 512], dtype=np.int64), np.array([32, 512, 600])) == expected
    assert g.roi_string([np.uint32(0), 256, 512], (32, np.int16(512), 600)) == expected


def test_block_dir_names():
    assert g.block_dir_names("zyx", np.array([0, 256, 12800])) == ["z_00000000", "y_00000256", "x_00012800"]


@pytest.mark.parametrize(
    "key",
    [
        (slice(0, 3), slice(2, 5), slice(1, 7)),
        (1, slice(None), slice(2, 4)),
        (Ellipsis, 3),
        (-1,),
        (slice(-3, None), Ellipsis, slice(None, -2)),
        np.int64(2),
        (slice(0, 100), 0, -7),
        (Ellipsis,),
    ],
)
def test_index_to_roi_matches_numpy(key):
    volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    start, stop, squeezed = g.index_to_roi(key, volume.shape)
    got = volume[g.to_slices(start, stop)]
    got = got.reshape([n for i, n in enumerate(got.shape) if i not in squeezed])
    np.testing.assert_array_equal(got, volume[key])


@pytest.mark.parametrize(
    "key,error",
    [
        ((slice(0, 4, 2),), TypeError),
        (([0, 1],), TypeError),
        ((None,), TypeError),
        ((1.5,), TypeError),
        ((True,), TypeError),
        ((slice(0.5, 2),), TypeError),
        ((0, 0, 0, 0), IndexError),
        ((Ellipsis, Ellipsis), IndexError),
        ((5,), IndexError),
        ((-6,), IndexError),
        ((slice(3, 3),), IndexError),
    ],
)
def test_index_to_roi_rejects(key, error):
    with pytest.raises(error):
        g.index_to_roi(key, (5, 6, 7))


@pytest.mark.parametrize(
    "key", [np.array([True, False]), np.array([1, 2]), (0, np.array([1, 2])), [Ellipsis]]
)
def test_index_to_roi_rejects_arrays_and_lists_with_type_error(key):
    with pytest.raises(TypeError):
        g.index_to_roi(key, (5, 6, 7))


def test_block_projection_agrees_with_projections():
    rng = np.random.default_rng(5)
    shape, block = np.array([13, 17, 9]), np.array([4, 5, 3])
    for _ in range(30):
        start = np.array([rng.integers(0, n) for n in shape])
        stop = np.array([rng.integers(a + 1, n + 1) for a, n in zip(start, shape)])
        for p in g.projections(start, stop, block, shape):
            assert g.block_projection(p.block_start, block, shape, start, stop) == (
                p.block_slices,
                p.out_slices,
            )
