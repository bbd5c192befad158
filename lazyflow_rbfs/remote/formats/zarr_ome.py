"""OME-Zarr images (NGFF 0.4 on zarr v2, 0.5 on zarr v3): multiscales, levels, and axis names.

Part of the ``"zarr"`` format (:mod:`.zarr`): :func:`parse_multiscales` reads an image group's first
``multiscales`` entry, :func:`select_dataset` picks a level by path or index, :func:`axes_from_names` maps
NGFF axis names (or zarr v3 ``dimension_names``) to the description's ``txyzc`` letters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError

__all__ = ["Multiscale", "parse_multiscales", "select_dataset", "axes_from_names", "default_axes"]


def _bad(url: str, what: str) -> InvalidResponseError:
    return InvalidResponseError(
        f"the OME-Zarr metadata {url} is not usable: {what}"[:600], url=url, status=200
    )


@dataclass(frozen=True)
class Multiscale:
    """The first ``multiscales`` entry of an OME-Zarr image: its version, axis names and dataset paths."""

    url: str
    version: str
    axes: tuple[str, ...] | None
    axis_types: tuple[str | None, ...] | None
    paths: tuple[str, ...]


def parse_multiscales(attrs: dict[str, Any], url: str) -> Multiscale | None:
    """The image's first multiscale from a group's attributes (``ome.multiscales`` in NGFF 0.5, top-level
    ``multiscales`` in 0.4); ``None`` if the group has none.

    Raises
    ------
    InvalidResponseError
        ``multiscales`` that is not a list of objects with ``datasets`` holding relative ``path`` values.
    """
    ome = attrs.get("ome")
    version = None
    if isinstance(ome, dict) and "multiscales" in ome:
        multiscales = ome["multiscales"]
        version = ome.get("version")
    else:
        multiscales = attrs.get("multiscales")
    if multiscales is None:
        return None
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise _bad(url, "expected multiscales a non-empty list of objects")
    first = multiscales[0]
    version = str(first.get("version", version or "unknown"))
    datasets = first.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise _bad(url, "expected multiscales[0].datasets a non-empty list")
    paths = []
    for index, item in enumerate(datasets):
        path = item.get("path") if isinstance(item, dict) else None
        if (
            not isinstance(path, str)
            or not path
            or path.startswith("/")
            or any(p in ("", ".", "..") for p in path.split("/"))
            or "\\" in path
        ):
            raise _bad(url, f"expected multiscales[0].datasets[{index}].path a relative path, found {path!r}")
        paths.append(path)
    axes = first.get("axes")
    names: tuple[str, ...] | None = None
    types: tuple[str | None, ...] | None = None
    if axes is not None:
        if not isinstance(axes, list):
            raise _bad(url, f"expected multiscales[0].axes a list, found {axes!r}"[:300])
        found_names, found_types = [], []
        for item in axes:
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str):
                raise _bad(url, f"expected each axis a name or an object with a 'name', found {item!r}"[:300])
            found_names.append(name)
            kind = item.get("type") if isinstance(item, dict) else None
            found_types.append(kind if isinstance(kind, str) else None)
        names, types = tuple(found_names), tuple(found_types)
    return Multiscale(url, version, names, types, tuple(paths))


def select_dataset(multiscale: Multiscale, scale: str | int | None, field: str = "scale") -> str:
    """The dataset path of level ``scale``: a path, or an index (an int, or digits that are no path);
    ``None``: the first (full resolution).

    Raises
    ------
    DescriptionError
        No such level (the message lists the paths).
    """
    paths = list(multiscale.paths)
    if scale is None:
        return paths[0]
    if isinstance(scale, str):
        if scale in paths:
            return scale
        if not scale.isdigit():
            raise DescriptionError(
                f"{field}: expected a dataset path of the OME-Zarr image {multiscale.url} (one of {paths}) "
                f"or an index below {len(paths)}, found {scale!r}",
                field=field,
            )
        scale = int(scale)
    if isinstance(scale, bool) or not 0 <= int(scale) < len(paths):
        raise DescriptionError(
            f"{field}: expected a level index below {len(paths)} or a dataset path of the OME-Zarr image "
            f"{multiscale.url} (one of {paths}), found {scale!r}",
            field=field,
        )
    return paths[int(scale)]


def default_axes(ndim: int, url: str) -> str:
    """Axis names of an array without names: ``zyx``-style for the last three, ``c`` then ``t`` before."""
    if not 1 <= ndim <= 5:
        raise DescriptionError(
            f"source: {url}: an array of {ndim} dimensions has no default axis names (expected 1 to 5)",
            field="source",
        )
    return "tczyx"[5 - ndim :]


_TYPE_LETTERS = {"time": "t", "channel": "c"}


def axes_from_names(
    names: Sequence[str | None] | None, types: Sequence[str | None] | None, ndim: int, url: str
) -> str:
    """The description's axes from the source's axis names: each name must be one of ``t``, ``c``, ``z``,
    ``y``, ``x`` (any case), or an axis of NGFF type ``time``/``channel``; all unnamed: :func:`default_axes`.

    Raises
    ------
    DescriptionError
        (field ``axes``) A name that is none of those, names that repeat, or a count that differs from the
        array's dimensions.
    """
    if names is None or all(n is None for n in names):
        return default_axes(ndim, url)
    if len(names) != ndim:
        raise DescriptionError(
            f"axes: the metadata of {url} names {len(names)} axes {list(names)}, but the array has {ndim} "
            f"dimensions",
            field="axes",
        )
    letters = []
    for index, name in enumerate(names):
        kind = types[index] if types is not None and index < len(types) else None
        letter = name.lower() if isinstance(name, str) and name.lower() in ("t", "c", "z", "y", "x") else None
        if letter is None and kind in _TYPE_LETTERS:
            letter = _TYPE_LETTERS[kind]
        if letter is None:
            raise DescriptionError(
                f"axes: expected axis names t, c, z, y or x (or NGFF axis types time/channel) in {url}, "
                f"found {list(names)}: axis {name!r} cannot be mapped to a description axis",
                field="axes",
            )
        letters.append(letter)
    if len(set(letters)) != len(letters):
        raise DescriptionError(
            f"axes: expected distinct axis names in {url}, found {list(names)} (as {''.join(letters)!r})",
            field="axes",
        )
    return "".join(letters)
