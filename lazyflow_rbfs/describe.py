"""``rbfs describe``: write a composite description from a remote volume's own metadata.

Sources:

* an ``http(s)://`` URL of a neuroglancer precomputed volume (the folder holding ``info``); also accepted:
  ``precomputed://<url>``, and ``gs://bucket/path`` / ``s3://bucket/path`` for public buckets (read over
  their public HTTPS endpoints);
* ``boss://collection/experiment/channel`` with ``boss_url`` (default: the public BossDB API). The token
  used to read the metadata is the user's, from intern's configuration for that host (``~/.intern/intern.cfg``
  or ``INTERN_*``; else ``"public"``); nothing about it is written.

The written description has the remote shape, dtype and axes, a block shape aligned to the remote chunks
(precomputed) or cuboids (Boss), and ``dataset_root_dir`` = ``cache_dir`` (default ``<output
stem>-blocks`` next to the description). It works with every other command unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from lazyflow_rbfs import description as _description
from lazyflow_rbfs import identity as _identity
from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError, RbfsError
from lazyflow_rbfs.remote import boss as _boss
from lazyflow_rbfs.remote import codecs as _codecs
from lazyflow_rbfs.remote import precomputed as _precomputed
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.redaction import scrub_error

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

_MAX_METADATA_BYTES = 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# Sources


def parse_source(source: str) -> tuple[str, Any]:
    """Classify ``source``: ``("precomputed", url)`` or ``("boss", (collection, experiment, channel))``.

    Raises
    ------
    DescriptionError
        (field ``source``) for anything else.
    """
    text = str(source).strip()
    if text.startswith("precomputed://"):
        text = text[len("precomputed://") :]
    scheme = urlsplit(text).scheme.lower()
    if scheme == "boss":
        parts = [p for p in text[len("boss://") :].split("/") if p]
        if len(parts) != 3 or any(_description.remote._BOSS_NAME.fullmatch(p) is None for p in parts):
            raise DescriptionError(
                f"source: expected boss://collection/experiment/channel, found {source!r}", field="source"
            )
        return "boss", tuple(parts)
    if scheme in ("gs", "s3"):
        rest = text.split("://", 1)[1].strip("/")
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise DescriptionError(
                f"source: expected {scheme}://bucket/path, found {source!r}", field="source"
            )
        if scheme == "gs":
            url = f"https://storage.googleapis.com/{bucket}/{path}"
        else:
            url = f"https://{bucket}.s3.amazonaws.com/{path}"
        return "precomputed", url.rstrip("/")
    if scheme in ("http", "https"):
        url = text.rstrip("/")
        if url.endswith("/info"):
            url = url[: -len("/info")]
        return "precomputed", url
    raise DescriptionError(
        f"source: expected an http(s) URL of a precomputed volume (the folder holding 'info'), gs:// or "
        f"s3:// of one, or boss://collection/experiment/channel; found {source!r}",
        field="source",
    )


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


def _get_json(client: HttpClient, url: str) -> Any:
    body = client.get(url, max_bytes=_MAX_METADATA_BYTES)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidResponseError(
            f"response from {url} is not JSON ({exc}); beginning {body[:60]!r}", url=url, status=200
        ) from exc


def _field(obj: Any, key: str, url: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidResponseError(
            f"response from {url} lacks a usable {key!r} (found {value!r})", url=url, status=200
        )
    return value


# ---------------------------------------------------------------------------------------------------------
# Remote descriptions from metadata


def _precomputed_remote(
    url: str, client: HttpClient, scale: str | int | None, fill_missing: bool
) -> tuple[dict[str, Any], tuple[int, ...], int]:
    info_url = f"{url}/info"
    info = _precomputed.parse_info(client.get(info_url, max_bytes=_precomputed.MAX_INFO_BYTES), info_url)
    chosen = _precomputed.select_scale(info, scale)
    _precomputed.check_scale_supported(chosen, info)
    offset = list(chosen.offset_zyx)
    if min(offset) < 0:
        raise DescriptionError(
            f"scale: expected a scale with voxel_offset >= 0, found {list(chosen.voxel_offset)} (x, y, z) in "
            f"scale {chosen.key!r} of {info_url}; negative offsets are not supported",
            field="scale",
        )
    shape = list(chosen.shape_zyx)
    unit = list(chosen.chunk_zyx)
    axes = "zyx"
    if info.num_channels > 1:
        axes = "czyx"
        offset = [0, *offset]
        shape = [info.num_channels, *shape]
        unit = [info.num_channels, *unit]
    remote = {
        "_schema_name": _description.REMOTE_SCHEMA_NAME,
        "_schema_version": 1.0,
        "name": url.rsplit("/", 1)[-1] or "precomputed",
        "format": "precomputed",
        "axes": axes,
        "dtype": info.dtype.name,
        "origin_offset": offset,
        "bounds": [o + s for o, s in zip(offset, shape)],
        "precomputed_url": url,
        "scale": chosen.key,
        "fill_missing": bool(fill_missing),
    }
    return remote, tuple(unit), info.dtype.itemsize


def _boss_remote(
    names: tuple[str, str, str],
    base: str,
    client: HttpClient,
    resolution: int,
) -> tuple[dict[str, Any], tuple[int, ...], int]:
    collection, experiment, channel = names
    c, e, ch = (quote(n, safe="") for n in names)
    exp_url = f"{base}/v1/collection/{c}/experiment/{e}/"
    experiment_info = _get_json(client, exp_url)
    frame_name = _field(experiment_info, "coord_frame", exp_url, str)
    hierarchy = experiment_info.get("hierarchy_method", "anisotropic")
    levels = experiment_info.get("num_hierarchy_levels")
    if isinstance(levels, int) and not isinstance(levels, bool) and not 0 <= resolution < max(levels, 1):
        raise DescriptionError(
            f"scale: expected a Boss resolution from 0 to {levels - 1} for {collection}/{experiment}, found "
            f"{resolution}",
            field="scale",
        )
    chan_url = f"{base}/v1/collection/{c}/experiment/{e}/channel/{ch}/"
    channel_info = _get_json(client, chan_url)
    datatype = _field(channel_info, "datatype", chan_url, str)
    dtype = _description.parse_dtype(datatype, "dtype")
    frame_url = f"{base}/v1/coord/{quote(frame_name, safe='')}/"
    frame = _get_json(client, frame_url)
    factor = 2**resolution
    start, stop = [], []
    for axis in "zyx":
        lo = int(_field(frame, f"{axis}_start", frame_url, int))
        hi = int(_field(frame, f"{axis}_stop", frame_url, int))
        if hi <= lo or lo < 0:
            raise InvalidResponseError(
                f"response from {frame_url}: {axis}_start {lo} and {axis}_stop {hi} are not a valid extent",
                url=frame_url,
                status=200,
            )
        f = factor if (axis in "yx" or hierarchy == "isotropic") else 1
        start.append(lo // f)
        stop.append(-(-hi // f))
    remote: dict[str, Any] = {
        "_schema_name": _description.REMOTE_SCHEMA_NAME,
        "_schema_version": 1.0,
        "name": f"{collection}/{experiment}/{channel}",
        "format": "boss",
        "axes": "zyx",
        "dtype": np.dtype(dtype).name,
        "origin_offset": start,
        "bounds": stop,
        "boss_url": base,
        "collection": collection,
        "experiment": experiment,
        "channel": channel,
        "resolution": resolution,
        # blosc is the Boss's native body; without a blosc package, npygz (zlib) needs nothing extra.
        "boss_encoding": "blosc" if _blosc_installed() else "npygz",
    }
    cuboid = (_boss.BOSS_CUBOID_XYZ[2], _boss.BOSS_CUBOID_XYZ[1], _boss.BOSS_CUBOID_XYZ[0])
    return remote, cuboid, np.dtype(dtype).itemsize


def _blosc_installed() -> bool:
    try:
        _codecs.blosc_decompressor()
    except _codecs.MissingCodecError:
        logger.info("no blosc package installed: the description asks the Boss for npygz bodies")
        return False
    return True


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


def describe_source(
    source: str,
    output: str | os.PathLike,
    *,
    scale: str | int | None = None,
    block_shape: Sequence[int] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    boss_url: str | None = None,
    token_env: str | None = None,
    token_file: str | None = None,
    fill_missing: bool = False,
    name: str | None = None,
    timeout: float | tuple[float, float] = (5, 60),
    retries: int = 3,
    headers: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
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
        Precomputed: a scale key or index (default the first scale). Boss: the resolution level (default 0).
    block_shape
        Local block shape in the description's axis order (``"Z,Y,X"`` or a sequence); default: whole remote
        chunks/cuboids, about :data:`TARGET_BLOCK_BYTES` per block.
    cache_dir
        The local ``dataset_root_dir`` (relative: to the description's directory). Default
        ``<output stem>-blocks``.
    boss_url
        Base URL of the Boss API (default ``https://api.bossdb.io``); only for ``boss://`` sources.
    token_env, token_file
        No longer accepted (a :class:`DescriptionError`): the Boss token is the user's, from intern's
        configuration for the host of ``boss_url`` (``~/.intern/intern.cfg``, or ``INTERN_PROTOCOL``,
        ``INTERN_HOST`` and ``INTERN_TOKEN``); else ``"public"``.
    fill_missing
        Precomputed only: read missing chunks (HTTP 404) as zeros.
    name
        The description's ``name`` (default from the source).
    timeout, retries, headers
        For the metadata requests (headers are sent, never written).

    Raises
    ------
    DescriptionError
        Bad source, scale or block shape, or a remote this package cannot read (sharded, other encodings);
        or (field ``dataset_root_dir``) ``cache_dir`` already holds the blocks of another volume (nothing
        is written then).
    DownloadError
        The metadata could not be fetched, or is not valid.
    """
    for name, value in (("token_env", token_env), ("token_file", token_file)):
        if value is not None:
            raise DescriptionError(
                f"{name}: no longer accepted (its value is not shown). {_description.CREDENTIALS_HELP}",
                field=name,
            )
    kind, where = parse_source(source)
    if kind != "boss" and boss_url:
        raise DescriptionError(
            f"source: --boss-url applies to boss:// sources only, found {source!r}", field="source"
        )
    if kind == "boss" and fill_missing:
        raise DescriptionError(
            "fill_missing: applies to precomputed sources only, found a boss:// source", field="fill_missing"
        )
    user_headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if kind == "boss":
        base = _description.fields.check_http_base(
            boss_url or _description.DEFAULT_BOSS_URL, "boss_url", "the Boss API"
        )
        if scale is None:
            resolution = 0
        elif isinstance(scale, int) and not isinstance(scale, bool):
            resolution = scale
        elif isinstance(scale, str) and scale.isdigit():
            resolution = int(scale)
        else:
            raise DescriptionError(
                f"scale: expected a Boss resolution level (an integer >= 0), found {scale!r}", field="scale"
            )
        token = _boss.resolve_token(base, environ)
        logger.debug("describing %s: Boss token from %s", source, _boss.token_source(base, environ))
        public = {"Accept": "application/json"}
        secret: dict[str, str] = {}
        if not any(k.lower() == "authorization" for k in user_headers):
            (public if token == _boss.PUBLIC_TOKEN else secret)["Authorization"] = f"Token {token}"
        with HttpClient(
            timeout=timeout,
            retries=retries,
            headers={**secret, **user_headers},
            public_headers=public,
            max_parallel=1,
        ) as client:
            try:
                remote, unit, itemsize = _boss_remote(where, base, client, resolution)
            except RbfsError as exc:  # a metadata error may quote a body that echoes the token
                scrub_error(exc)
                raise
    else:
        with HttpClient(timeout=timeout, retries=retries, headers=user_headers, max_parallel=1) as client:
            try:
                remote, unit, itemsize = _precomputed_remote(where, client, scale, fill_missing)
            except RbfsError as exc:
                scrub_error(exc)
                raise
    if name:
        remote["name"] = name
    shape = [b - o for b, o in zip(remote["bounds"], remote["origin_offset"])]
    chosen = _block_shape_arg(block_shape, len(shape))
    if chosen is None:
        chosen = suggest_block_shape(shape, unit, itemsize)
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


def add_describe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``rbfs describe`` arguments to ``parser`` (the CLI adds its own network options)."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="http(s) URL of a neuroglancer precomputed volume (the folder holding 'info'; gs:// and s3:// "
        "of public buckets work too), or boss://collection/experiment/channel",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DESCRIPTION.json", help="file to write")
    parser.add_argument(
        "--scale", metavar="KEY", help="precomputed scale key or index (default: the first); Boss resolution"
    )
    parser.add_argument(
        "--block-shape", metavar="Z,Y,X", help="local block shape (default: whole remote chunks, ~4 MiB)"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="block cache directory (default: <output stem>-blocks beside it)"
    )
    parser.add_argument(
        "--boss-url", metavar="BASE", help=f"Boss API base URL (default {_description.DEFAULT_BOSS_URL})"
    )
    # Removed: a token is the user's (intern's configuration). Kept hidden to say so instead of "unknown".
    parser.add_argument("--token-env", help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fill-missing", action="store_true", help="precomputed: read missing chunks (HTTP 404) as zeros"
    )
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
    return describe_source(
        args.source,
        args.output,
        scale=args.scale,
        block_shape=args.block_shape,
        cache_dir=args.cache_dir,
        boss_url=args.boss_url,
        token_env=getattr(args, "token_env", None),
        token_file=getattr(args, "token_file", None),
        fill_missing=bool(args.fill_missing),
        name=getattr(args, "name", None),
        **options,
    )
