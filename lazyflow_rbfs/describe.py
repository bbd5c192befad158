"""``rbfs describe``: write a composite description from a remote volume's own metadata.

The source's format (:func:`lazyflow_rbfs.remote.formats.for_source`) reads the metadata and builds the
remote description (:meth:`~lazyflow_rbfs.remote.formats.base.RemoteFormat.probe`); this module adds the
local description around it and writes the composite. Sources of the built-in formats:

* a zarr array or OME-Zarr image, an N5 dataset or multiscale group, or a neuroglancer precomputed
  volume (the folder holding ``info``), at an ``http(s)://`` URL, ``gs://bucket/path`` /
  ``s3://bucket/path`` of a public bucket (read over its public HTTPS endpoint), a ``file://`` URL or a
  path; the format is found by its metadata file (:func:`lazyflow_rbfs.remote.formats.detect`) unless a
  prefix names it (``zarr://``, ``n5://``, ``precomputed://``);
* ``boss://collection/experiment/channel`` with ``boss_url`` (default: the public BossDB API). The token
  used to read the metadata is the user's, from intern's configuration for that host (``~/.intern/intern.cfg``
  or ``INTERN_*``; else ``"public"``); nothing about it is written.

The written description has the remote shape, dtype and axes, a block shape aligned to the remote chunks
(precomputed) or cuboids (Boss), and ``dataset_root_dir`` = ``cache_dir`` (default ``<output
stem>-blocks`` next to the description). It works with every other command unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs import description as _description
from lazyflow_rbfs import identity as _identity
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError, RemoteTimeoutError
from lazyflow_rbfs.remote import formats
from lazyflow_rbfs.remote.redaction import redact

__all__ = [
    "describe_source",
    "describe_main",
    "add_describe_arguments",
    "parse_source",
    "suggest_block_shape",
    "TARGET_BLOCK_BYTES",
]

logger = logging.getLogger(__name__)

#: Blocks are grown (by doubling along the remote chunk grid) until they hold about this many bytes.
TARGET_BLOCK_BYTES = 4 * 1024 * 1024


def parse_source(source: str) -> tuple[str, Any]:
    """Classify ``source``: ``(format name, where)``, e.g. ``("precomputed", url)`` or
    ``("boss", (collection, experiment, channel))`` (see :func:`lazyflow_rbfs.remote.formats.for_source`).

    Raises
    ------
    DescriptionError
        (field ``source``) for anything no registered format describes.
    """
    fmt = formats.for_source(source)
    return fmt.name, fmt.parse_source(str(source).strip())


def suggest_block_shape(
    shape: Sequence[int], unit: Sequence[int], itemsize: int, *, target: int = TARGET_BLOCK_BYTES
) -> tuple[int, ...]:
    """A block shape made of whole ``unit`` (remote chunks/cuboids), about ``target`` bytes, within ``shape``.

    Starting from one unit, the axis with the fewest voxels per block (that is still smaller than the
    volume; the last such axis on ties) is doubled until the block reaches ``target`` bytes or covers the
    volume; then every axis is clipped to the volume's extent.
    """
    shape_a = np.asarray(shape, dtype=np.int64)
    block = np.asarray(unit, dtype=np.int64).copy()
    while int(np.prod(np.minimum(block, shape_a))) * itemsize < target:
        growable = np.flatnonzero(block < shape_a)
        if growable.size == 0:
            break
        # The axis with the smallest block extent; ties go to the last axis (x, then y: EM is anisotropic).
        axis = max((int(a) for a in growable), key=lambda a: (-int(block[a]), a))
        block[axis] *= 2
    return tuple(int(b) for b in np.minimum(block, shape_a))


def _block_shape_arg(value: Any, ndim: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            items = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
        except ValueError:
            items = []
    else:
        items = [int(v) for v in value]
    if len(items) != ndim or min(items, default=0) <= 0:
        raise DescriptionError(
            f"block_shape: expected {ndim} positive integers (one per axis), found {value!r}",
            field="block_shape",
        )
    return tuple(items)


def _format_options(fmt: formats.RemoteFormat, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options given for ``fmt``'s probe (``None`` and ``False`` mean not given)."""
    known = {opt.name: f for f in formats.registered() for opt in f.probe_options}
    given: dict[str, Any] = {}
    for name, value in options.items():
        if name not in known:
            raise TypeError(f"describe_source() got an unexpected keyword argument {name!r}")
        if value is None or value is False:
            continue
        if name not in {opt.name for opt in fmt.probe_options}:
            owners = sorted(
                {f.name for f in formats.registered() for opt in f.probe_options if opt.name == name}
            )
            raise DescriptionError(
                f"{name}: applies to {' and '.join(owners)} sources only, found {source!r}", field=name
            )
        given[name] = value
    return given


def describe_source(
    source: str,
    output: str | os.PathLike,
    *,
    scale: str | int | None = None,
    block_shape: Sequence[int] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token_env: str | None = None,
    token_file: str | None = None,
    name: str | None = None,
    timeout: float | tuple[float, float] = (5, 60),
    retries: int = 3,
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    **format_options: Any,
) -> str:
    """Write a composite description of ``source`` to ``output``; returns its absolute path.

    Parameters
    ----------
    source
        ``http(s)://…`` (precomputed folder holding ``info``; also ``precomputed://``, ``gs://``, ``s3://``)
        or ``boss://collection/experiment/channel``.
    output
        The description file to write (replaced atomically).
    scale
        Precomputed: a scale key or index (default the first scale). OME-Zarr: a dataset path or index
        (default the first). Boss: the resolution level (default 0).
    block_shape
        Local block shape in the description's axis order (``"Z,Y,X"`` or a sequence); default: whole remote
        chunks/cuboids, about :data:`TARGET_BLOCK_BYTES` per block.
    cache_dir
        The local ``dataset_root_dir`` (relative: to the description's directory). Default
        ``<output stem>-blocks``.
    token_env, token_file
        No longer accepted (a :class:`DescriptionError`): the Boss token is the user's, from intern's
        configuration for the host of ``boss_url`` (``~/.intern/intern.cfg``, or ``INTERN_PROTOCOL``,
        ``INTERN_HOST`` and ``INTERN_TOKEN``); else ``"public"``.
    name
        The description's ``name`` (default from the source).
    timeout, retries, headers
        For the metadata requests (headers are sent, never written).
    environ
        The environment the Boss token is looked up in (default ``os.environ``).
    **format_options
        Options of the source's format (its ``probe_options``): ``boss_url`` (Boss API base URL, default
        ``https://api.bossdb.io``; boss:// sources only), ``fill_missing`` (precomputed only: read missing
        chunks, HTTP 404, as zeros).

    Raises
    ------
    DescriptionError
        Bad source, scale, block shape or option, or a remote this package cannot read (sharded, other
        encodings); or (field ``dataset_root_dir``) ``cache_dir`` already holds the blocks of another
        volume (nothing is written then).
    DownloadError
        The metadata could not be fetched, or is not valid.
    TypeError
        An option no registered format has.
    """
    for refused, value in (("token_env", token_env), ("token_file", token_file)):
        if value is not None:
            raise DescriptionError(
                f"{refused}: no longer accepted (its value is not shown). {_description.CREDENTIALS_HELP}",
                field=refused,
            )
    request = formats.ProbeRequest(
        scale=scale,
        timeout=timeout,
        retries=retries,
        headers={str(k): str(v) for k, v in (headers or {}).items()},
        environ=environ,
    )
    fmt = formats.detect(source, request)
    request = dataclasses.replace(request, options=_format_options(fmt, source, format_options))
    try:
        probe = fmt.probe(source, request)
    except DownloadError as exc:
        error = _probe_error(fmt, source, exc)
        if error is exc:
            raise
        raise error from exc
    remote = dict(probe.remote)
    if name:
        remote["name"] = name
    shape = [b - o for b, o in zip(remote["bounds"], remote["origin_offset"])]
    chosen = _block_shape_arg(block_shape, len(shape))
    if chosen is None:
        chosen = suggest_block_shape(shape, probe.unit, probe.itemsize)
    target = os.path.abspath(os.fspath(output))
    stem = os.path.splitext(os.path.basename(target))[0] or "volume"
    root = os.fspath(cache_dir) if cache_dir is not None else f"{stem}-blocks"
    local = {
        "_schema_name": _description.LOCAL_SCHEMA_NAME,
        "_schema_version": 1.1,
        "name": f"{str(remote['name']).replace('/', '_')}-blocks",
        "format": "hdf5",
        "axes": remote["axes"],
        "shape": shape,
        "dtype": remote["dtype"],
        "block_shape": list(chosen),
        "block_file_name_format": "block-{roiString}.h5/data",
        "dataset_root_dir": root,
    }
    composite = {
        "_schema_name": _description.COMPOSITE_SCHEMA_NAME,
        "_schema_version": 1.0,
        "remote_description": remote,
        "local_description": local,
    }
    # A cache dir that already holds another volume would refuse this description at every open: say so now.
    _identity.check_composite(_description.parse_composite(composite), target)
    _description.write_description(target, composite, "composite")
    logger.info(
        "described %s as %s (%s, shape %s, blocks %s)", source, target, remote["format"], shape, chosen
    )
    return target


# ---------------------------------------------------------------------------------------------------------
# Command line


def _probe_error(fmt: formats.RemoteFormat, source: str, exc: DownloadError) -> DownloadError:
    """The error of a metadata request that failed: the URL tried, what was expected there, and (for an
    HTTP status) no server page pasted in and no advice about a description that does not exist yet."""
    if (
        isinstance(exc, (RemoteTimeoutError, InvalidResponseError))
        or exc.status is None
        or exc.status < 400
        or exc.url is None
    ):
        # A timeout, a connection failure, a body cut off, a server without Range support (a 200 to a
        # Range request): its own message says what to do.
        return exc
    expected = fmt.metadata_help or f"the metadata of a {fmt.name} source"
    what = {
        404: "not found",
        401: "not authorised",
        403: "forbidden",
    }.get(exc.status, "failed")
    if exc.status in (401, 403):
        hint = "check the credentials for this host"
    elif exc.status == 429 or exc.status >= 500:
        hint = "the server is failing or overloaded: try again later or with more --retries"
    else:
        hint = "check the source"
    return type(exc)(
        redact(
            f"describe {source}: GET {exc.url} {what} (HTTP {exc.status}). Expected there: {expected}. "
            f"{hint[0].upper()}{hint[1:]}"
        ),
        url=exc.url,
        status=exc.status,
    )


def add_describe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``rbfs describe`` arguments to ``parser`` (the CLI adds its own network options); each
    registered format adds its own (``--boss-url``, ``--fill-missing``)."""
    parser.add_argument("source", metavar="SOURCE", help=formats.sources_help())
    parser.add_argument("-o", "--output", required=True, metavar="DESCRIPTION.json", help="file to write")
    parser.add_argument(
        "--scale",
        metavar="KEY",
        help="a level of a multiscale source: precomputed scale key, OME-Zarr dataset path or N5 level (s1), "
        "or an index (default: the first); "
        "Boss resolution",
    )
    parser.add_argument(
        "--block-shape", metavar="Z,Y,X", help="local block shape (default: whole remote chunks, ~4 MiB)"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="block cache directory (default: <output stem>-blocks beside it)"
    )
    added: set[str] = set()
    for fmt in formats.registered():
        for opt in fmt.probe_options:
            if opt.name in added:  # an option several formats share is added once
                continue
            added.add(opt.name)
            if opt.switch:
                parser.add_argument(opt.flag, dest=opt.name, action="store_true", help=opt.help)
            else:
                parser.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=opt.help)
    # Removed: a token is the user's (intern's configuration). Kept hidden to say so instead of "unknown".
    parser.add_argument("--token-env", help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    parser.add_argument("--name", help="the description's name")


def describe_main(args: argparse.Namespace) -> str:
    """Run ``rbfs describe`` from parsed arguments (see :func:`add_describe_arguments`); returns the path.

    Network options ``timeout``, ``retries`` and ``headers`` are used when ``args`` has them.
    """
    options: dict[str, Any] = {}
    for key in ("timeout", "retries", "headers"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    for fmt in formats.registered():
        for opt in fmt.probe_options:
            options[opt.name] = getattr(args, opt.name, None)
    return describe_source(
        args.source,
        args.output,
        scale=args.scale,
        block_shape=args.block_shape,
        cache_dir=args.cache_dir,
        token_env=getattr(args, "token_env", None),
        token_file=getattr(args, "token_file", None),
        name=getattr(args, "name", None),
        **options,
    )
