"""HDF5 path conventions: internal paths, and ``file.h5/internal/path`` strings."""

from __future__ import annotations

from lazyflow_rbfs.description.fields import field_error

__all__ = ["H5_SUFFIXES", "normalize_h5_path", "split_h5_path", "split_block_file_name_format"]

#: File name endings that mark the HDF5 file in a ``file.h5/internal/path`` string (any case).
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def normalize_h5_path(path: str) -> str:
    """Return an HDF5 internal path in canonical form: one leading ``/``, no empty or trailing parts.

    ``"cube"``, ``"/cube"`` and ``"cube/"`` all become ``"/cube"``; ``"volume//cube"`` becomes
    ``"/volume/cube"``.
    """
    return "/" + "/".join(part for part in str(path).split("/") if part)


def split_h5_path(path: str) -> tuple[str, str] | None:
    """Split ``"dir/file.h5/internal/path"`` at its first component ending in ``.h5``, ``.hdf5`` or ``.hdf``
    (any case) into ``("dir/file.h5", "internal/path")``; the internal path is returned as written (it may
    be empty). ``None`` if no component names an HDF5 file."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part.lower().endswith(H5_SUFFIXES):
            return "/".join(parts[: index + 1]), "/".join(parts[index + 1 :])
    return None


def split_block_file_name_format(fmt: str) -> tuple[str, str]:
    """Split a ``block_file_name_format`` into the file part and the HDF5 internal path.

    The split is at the first path component ending in ``.h5``, ``.hdf5`` or ``.hdf`` (any case):
    ``"block-{roiString}.h5/cube"`` gives ``("block-{roiString}.h5", "cube")``. The internal path is
    returned as written (compare with :func:`normalize_h5_path`).

    Raises
    ------
    DescriptionError
        (field ``block_file_name_format``) if no component names an HDF5 file or nothing follows it.
    """
    split = split_h5_path(fmt)
    if split is None or not split[1].strip("/"):
        raise field_error(
            "block_file_name_format",
            "a file name ending in .h5/.hdf5/.hdf followed by an HDF5 internal path "
            "(e.g. 'block-{roiString}.h5/cube')",
            fmt,
        )
    return split
