"""``lazyflow_rbfs.open(source, cache_dir)``: from a URL or path to a cached fileset in one call.

It writes the description ``rbfs describe`` would write (:func:`lazyflow_rbfs.describe.describe_source`)
as ``<cache_dir>/description.json``, with the blocks in ``<cache_dir>/blocks``, and opens it as a
:class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset`. Opening the same ``cache_dir`` again reuses its
blocks (the cache root's record makes sure they are of the same volume); without a network the
description already there is opened as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from lazyflow_rbfs.errors import DownloadError

__all__ = ["open", "DESCRIPTION_NAME", "BLOCKS_DIR"]

logger = logging.getLogger(__name__)

#: The description file ``open`` writes into ``cache_dir``.
DESCRIPTION_NAME = "description.json"
#: The folder of ``cache_dir`` that holds the blocks (the description's ``dataset_root_dir``).
BLOCKS_DIR = "blocks"

#: Options of :class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` that the metadata requests share.
_SHARED = ("timeout", "retries", "headers")


def open(  # noqa: A001 - the public name of API.md
    source: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    scale: str | int | None = None,
    block_shape: Sequence[int] | None = None,
    **options: Any,
) -> Any:
    """Open ``source`` through a block cache in ``cache_dir``.

    Parameters
    ----------
    source
        What ``rbfs describe`` accepts: an ``http(s)://``, ``gs://``, ``s3://`` or ``file://`` URL or a
        path of a precomputed volume, zarr array or OME-Zarr image, or N5 dataset (format prefixes such
        as ``zarr://`` and ``precomputed://`` allowed), or ``boss://collection/experiment/channel``.
    cache_dir
        The folder of the cache (created if needed): ``description.json`` and ``blocks/``.
    scale
        A level of a multiscale source, by key/path or index (default: the first, full resolution).
    block_shape
        Local block shape in the source's axis order (default: whole remote chunks, about 4 MiB).
    **options
        Options of :class:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset` (``max_parallel``, ``timeout``,
        ``retries``, ``lock_timeout``, ``headers``, ``progress``, ``fsync``, ...) and of the source's
        format for ``rbfs describe`` (``fill_missing``, ``boss_url``, ...). ``timeout``, ``retries`` and
        ``headers`` apply to the metadata requests too.

    Returns
    -------
    RESTfulBlockwiseFileset

    Raises
    ------
    DescriptionError
        A source no format reads, a bad scale or block shape, or a ``cache_dir`` holding another volume.
    DownloadError
        The source's metadata could not be read (and ``cache_dir`` has no description to fall back on).

    Examples
    --------
    >>> import lazyflow_rbfs                                                       # doctest: +SKIP
    >>> vol = lazyflow_rbfs.open("gs://bucket/em/image.zarr", "~/rbfs-cache/em")   # doctest: +SKIP
    >>> vol[0:64, 0:512, 0:512].mean()                                            # doctest: +SKIP
    """
    from lazyflow_rbfs import describe as _describe
    from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    from lazyflow_rbfs.remote import formats

    folder = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    target = os.path.join(folder, DESCRIPTION_NAME)
    format_names = {opt.name for fmt in formats.registered() for opt in fmt.probe_options}
    describe_options = {k: v for k, v in options.items() if k in format_names}
    fileset_options = {k: v for k, v in options.items() if k not in format_names}
    shared = {k: fileset_options[k] for k in _SHARED if k in fileset_options}
    os.makedirs(folder, exist_ok=True)
    try:
        _describe.describe_source(
            os.fspath(source),
            target,
            scale=scale,
            block_shape=block_shape,
            cache_dir=BLOCKS_DIR,
            **shared,
            **describe_options,
        )
    except DownloadError as exc:
        if not os.path.isfile(target):
            raise
        logger.warning(
            "could not read the metadata of %s (%s); opening the description already in %s",
            source,
            exc,
            folder,
        )
    return RESTfulBlockwiseFileset(target, **fileset_options)
