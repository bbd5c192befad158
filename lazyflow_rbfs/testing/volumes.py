"""The volumes the test server serves: synthetic sample data, volumes loaded from files, levels.

* :func:`sample_volume` makes a deterministic EM-like volume whose every voxel depends on its position.
* :func:`load_volume` opens what a server is given: an array, an ``.npy`` file or ``file.h5/dataset``.
* :class:`ServedVolume` is a volume as a server presents it: axes, server coordinates
  (``origin_offset``) and resolution levels, which halve y and x per level by striding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import h5py
import numpy as np

__all__ = ["sample_volume", "split_h5_path", "load_volume", "ServedVolume"]

_H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def sample_volume(
    shape: Sequence[int] = (64, 256, 256),
    dtype: Any = np.uint8,
    seed: int = 0,
    *,
    writeable: bool = True,
    progress: Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """A deterministic synthetic EM-like volume: smooth blobs, membrane-like dark sheets and texture.

    Every voxel also carries a hash of its position, so a block placed at the wrong position (or
    transposed) is detected by any comparison with the original.

    Parameters
    ----------
    shape:
        Any number of axes (1 to 5 make sense).
    dtype:
        Integer types use up to 16 bits of their range; floats lie in ``[0, 1]``; bool is a threshold.
    seed:
        Same seed, same volume.
    writeable:
        ``False`` gives an array nobody can change, for a volume that many tests share.
    progress:
        ``progress(done, total)`` after each slab along the first axis (``done`` of ``total`` planes made):
        a large volume takes a while.
    """
    array = _synthesize(tuple(int(s) for s in shape), np.dtype(dtype), seed, progress)
    array.setflags(write=writeable)
    return array


#: Voxels :func:`sample_volume` synthesizes at once (it works in slabs along the first axis).
_SLAB_VOXELS = 1 << 22


def _synthesize(
    shape: tuple[int, ...], dtype: np.dtype, seed: int, progress: Callable[[int, int], Any] | None = None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    # Every random parameter first (in a fixed order), then the voxels slab by slab along axis 0: the
    # result does not depend on the slabs, and memory stays bounded by one slab's temporaries.
    waves = [[(rng.uniform(0.04, 0.2), rng.uniform(0, 2 * math.pi)) for _ in range(ndim)] for _ in range(4)]
    slants = [rng.uniform(0.05, 0.15) for _ in range(ndim)]
    out = np.empty(shape, dtype=dtype)
    if ndim == 0 or out.size == 0:
        return out
    rows = max(1, _SLAB_VOXELS // max(1, math.prod(shape[1:])))
    for z0 in range(0, shape[0], rows):
        z1 = min(shape[0], z0 + rows)
        out[z0:z1] = _synthesize_slab(shape, dtype, seed, z0, z1, waves, slants)
        if progress is not None:
            progress(z1, shape[0])
    return out


def _synthesize_slab(
    shape: tuple[int, ...], dtype: np.dtype, seed: int, z0: int, z1: int, waves: list, slants: list
) -> np.ndarray:
    ndim = len(shape)
    slab = (z1 - z0, *shape[1:])
    grids = [
        (np.arange(z0, z1, dtype=np.float32) if i == 0 else np.arange(n, dtype=np.float32)).reshape(
            [slab[i] if i == k else 1 for k in range(ndim)]
        )
        for i, n in enumerate(shape)
    ]
    value = np.zeros(slab, dtype=np.float32)
    for params in waves:  # smooth blobs: separable products of cosines, in [-4, 4] summed
        wave = np.float32(1.0)
        for g, (frequency, shift) in zip(grids, params):
            wave = wave * np.cos(g * np.float32(frequency) + np.float32(shift))
        value += wave
    value *= np.float32(0.55 / 8)
    value += np.float32(0.55 / 2)
    # membranes: thin dark sheets where a slanted phase crosses multiples of pi
    phase = np.zeros(slab, dtype=np.float32)
    for g, slant in zip(grids, slants):
        phase += g * np.float32(slant)
    np.sin(phase, out=phase)
    for _ in range(3):
        phase *= phase  # sin**8
    phase *= np.float32(-0.25)
    value += phase
    value += np.float32(0.25)
    # texture: a hash of the position, so every voxel depends on where it is
    index = np.zeros(slab, dtype=np.uint32)
    stride = 1
    for g, n in zip(reversed(grids), reversed(shape)):
        index += g.astype(np.uint32) * np.uint32(stride % (1 << 32))
        stride *= n
    index += np.uint32((seed * 0x9E3779B9) % (1 << 32))
    index *= np.uint32(2654435761)
    index >>= np.uint32(24)
    value += index.astype(np.float32) * np.float32(0.2 / 255)
    if dtype.kind == "b":
        return value > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo = max(int(info.min), 0)
        hi = min(int(info.max), 65535)
        value *= np.float32(hi - lo)
        value += np.float32(lo)
        np.rint(value, out=value)
        return value.astype(dtype)
    return value.astype(dtype)


def split_h5_path(path: str) -> tuple[str, str] | None:
    """``"dir/file.h5/group/data"`` → ``("dir/file.h5", "group/data")``; ``None`` if no HDF5 file is named.

    The split is at the first path component ending in ``.h5``, ``.hdf5`` or ``.hdf`` (any case) that is
    followed by something.
    """
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.lower().endswith(_H5_SUFFIXES) and i + 1 < len(parts):
            return "/".join(parts[: i + 1]), "/".join(parts[i + 1 :])
    return None


def load_volume(volume: Any) -> tuple[Any, h5py.File | None]:
    """What a server serves from ``volume``, and the HDF5 file to close when it stops (or ``None``).

    ``volume`` is an array (or array-like with ``shape``, ``dtype`` and slicing, such as an
    ``h5py.Dataset``), anything ``numpy.asarray`` accepts, a path to an ``.npy`` file (memory-mapped) or
    ``"file.h5/dataset"``.

    Raises
    ------
    ValueError
        A path that is neither.
    """
    if isinstance(volume, (str, os.PathLike)):
        path = os.fspath(volume)
        if path.endswith(".npy"):
            return np.load(path, mmap_mode="r"), None
        split = split_h5_path(path)
        if split is not None:
            h5file = h5py.File(split[0], "r")
            return h5file[split[1]], h5file
        raise ValueError(f"volume path {path!r} must be an .npy file or 'file.h5/dataset'")
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    return volume, None


class ServedVolume:
    """A volume as a server presents it: ``data`` with axis names, server coordinates and levels.

    Parameters
    ----------
    data:
        The voxels (see :func:`load_volume`), in ``axes`` order.
    axes:
        Distinct characters of ``txyzc``, one per axis of ``data``.
    origin_offset:
        Server coordinates of the first voxel (default zeros).

    Raises
    ------
    ValueError
        ``axes`` or ``origin_offset`` do not fit ``data``.
    """

    def __init__(self, data: Any, axes: str, origin_offset: Sequence[int] | None = None) -> None:
        ndim = len(data.shape)
        if len(axes) != ndim or len(set(axes)) != ndim or not set(axes) <= set("txyzc"):
            raise ValueError(f"axes must be {ndim} distinct characters of 'txyzc', got {axes!r}")
        self.data = data
        self.axes = axes
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.origin_offset = tuple(
            int(o) for o in (origin_offset if origin_offset is not None else [0] * ndim)
        )
        if len(self.origin_offset) != ndim or min(self.origin_offset) < 0:
            raise ValueError(f"origin_offset must be {ndim} integers >= 0, got {origin_offset!r}")

    @property
    def bounds(self) -> tuple[int, ...]:
        """``shape + origin_offset``: the remote description's ``bounds``."""
        return tuple(s + o for s, o in zip(self.shape, self.origin_offset))

    def read(self, index: tuple[slice, ...]) -> np.ndarray:
        """``data[index]`` (volume coordinates) as an array."""
        return np.asarray(self.data[index])

    def level(self, level: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shape and origin (server coordinates) of the volume at ``level``, in ``axes`` order."""
        step = 2**level
        shape = tuple(-(-n // step) if a in "yx" else n for a, n in zip(self.axes, self.shape))
        origin = tuple(o // step if a in "yx" else o for a, o in zip(self.axes, self.origin_offset))
        return shape, origin

    def read_level(self, level: int, region: Sequence[slice]) -> np.ndarray:
        """``region`` (level coordinates relative to its origin) of the volume at ``level``, strided reads."""
        step = 2**level
        index = tuple(
            slice(r.start * step, min(r.stop * step, n), step) if a in "yx" and step > 1 else r
            for a, r, n in zip(self.axes, region, self.shape)
        )
        return self.read(index)

    def xyz(self, values: Sequence[int]) -> tuple[int, int, int]:
        """The x, y and z entries of per-axis ``values`` (1 for an axis the volume lacks)."""
        by_axis = dict(zip(self.axes, values))
        return (int(by_axis.get("x", 1)), int(by_axis.get("y", 1)), int(by_axis.get("z", 1)))
