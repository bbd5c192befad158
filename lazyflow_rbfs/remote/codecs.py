"""Response decoders: turn a response body into a validated numpy array.

A decoder is a plain function ``decode(body, expected) -> numpy.ndarray`` registered under the remote
description's ``format`` name. It only has to get *an* array out of the body (or raise
:class:`~lazyflow_rbfs.errors.InvalidResponseError`); :func:`decode` then checks the shape and dtype the
same way for every format, so a new wire format is one small function plus one :func:`register_decoder`
call.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError

__all__ = [
    "Expected",
    "Decoder",
    "register_decoder",
    "get_decoder",
    "decode",
    "validate_array",
    "decode_hdf5",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expected:
    """What a response must contain.

    Attributes
    ----------
    url:
        The request's URL (for error messages only).
    shape:
        The requested roi's shape.
    dtype:
        The description's dtype; a body of another dtype is accepted only if it casts safely to it.
    dataset:
        The dataset/key name inside the body, for formats that have one (``hdf5_dataset``).
    """

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dataset: str | None = None


Decoder = Callable[[bytes, Expected], np.ndarray]

_DECODERS: dict[str, Decoder] = {}


def register_decoder(fmt: str, decoder: Decoder) -> None:
    """Make ``decoder`` responsible for remote descriptions whose ``format`` is ``fmt``."""
    _DECODERS[fmt] = decoder


def get_decoder(fmt: str) -> Decoder:
    """The decoder for ``fmt``; a :class:`DescriptionError` on field ``format`` if there is none."""
    try:
        return _DECODERS[fmt]
    except KeyError:
        raise DescriptionError(
            f"remote format {fmt!r} is not supported; expected one of {sorted(_DECODERS)}", field="format"
        ) from None


def decode(fmt: str, body: bytes, expected: Expected) -> np.ndarray:
    """Decode ``body`` with the decoder of ``fmt`` and validate the result against ``expected``."""
    return validate_array(get_decoder(fmt)(body, expected), expected)


def validate_array(array: np.ndarray, expected: Expected) -> np.ndarray:
    """Check shape and dtype; return the array in the expected (native) dtype.

    Raises
    ------
    InvalidResponseError
        The shape differs from the requested one, or the dtype does not cast safely to the expected one.
    """
    _check_shape_dtype(array.shape, array.dtype, expected)
    if array.dtype != expected.dtype:
        array = array.astype(expected.dtype)
    return array


def _check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype, expected: Expected) -> None:
    if tuple(int(s) for s in shape) != tuple(expected.shape):
        raise InvalidResponseError(
            f"response from {expected.url} holds an array of shape {tuple(int(s) for s in shape)}, "
            f"but the request asked for shape {tuple(expected.shape)}; the server does not serve the "
            f"requested region (check the description's axes, origin_offset and url_format)",
            url=expected.url,
            status=200,
        )
    if not np.can_cast(dtype, expected.dtype, "safe"):
        raise InvalidResponseError(
            f"response from {expected.url} holds dtype {np.dtype(dtype).name}, which does not convert "
            f"safely to the description's dtype {expected.dtype.name}; fix the description's dtype",
            url=expected.url,
            status=200,
        )


def _invalid(expected: Expected, what: str, exc: BaseException | None = None) -> InvalidResponseError:
    detail = f" ({exc})" if exc is not None else ""
    return InvalidResponseError(
        f"response from {expected.url} is not a usable HDF5 cutout: {what}{detail}",
        url=expected.url,
        status=200,
    )


def _normalize(name: str) -> str:
    return "/" + name.strip("/")


def decode_hdf5(body: bytes, expected: Expected) -> np.ndarray:
    """Decode an HDF5 file held in ``body`` and return its dataset ``expected.dataset``.

    Shape and dtype are checked on the dataset's metadata before any voxel is read.
    """
    name = _normalize(expected.dataset or "")
    try:
        with h5py.File(io.BytesIO(body), "r") as f:
            node = f.get(name)
            if not isinstance(node, h5py.Dataset):
                found = sorted(_dataset_names(f))
                raise _invalid(expected, f"expected a dataset {name!r}, found datasets {found}")
            _check_shape_dtype(node.shape, node.dtype, expected)
            return node[()]
    except InvalidResponseError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        start = body[:40].decode("latin-1", "replace")
        raise _invalid(
            expected, f"the body ({len(body)} bytes, beginning {start!r}) is not a complete HDF5 file", exc
        ) from exc


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda key, obj: names.append("/" + key) if isinstance(obj, h5py.Dataset) else None)
    return names


register_decoder("hdf5", decode_hdf5)
