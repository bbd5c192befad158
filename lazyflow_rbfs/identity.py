"""Which remote volume a cache root belongs to: the volume record ``<root>/.rbfs-volume.json``.

A cache root holds the blocks of one remote volume. Nothing in a block tree says which one, so two
descriptions whose ``dataset_root_dir`` resolve to the same folder would read each other's blocks. The first
process of this package that publishes a block into a root records the volume's identity there; every
later open compares its description with the record and refuses another volume with a
:class:`~lazyflow_rbfs.errors.DescriptionError` (field ``dataset_root_dir``) before any block is read.

What identifies a volume (:class:`VolumeIdentity`) is what decides which voxels a block file holds and
whether a block file can be read at all: the remote ``format``, its location (``url_format``, the Boss
channel, the precomputed folder), ``scale``, ``origin_offset``, and of the local tree ``dtype``, ``axes``,
``shape``, ``block_shape`` and ``block_file_name_format``. What only changes how the bytes are stored or
fetched (``compression``, ``chunks``, ``drange``, the Boss body encoding, cutout size limits), what a view
selects (``view_origin``, ``view_shape``) and credentials are not part of it: two views of one volume share
a cache, and a rotated token does not orphan one.

Locations are recorded without secrets: the URL's user and password are dropped, query parameters named
like credentials (``token``, ``key``, ``signature``, ...) are dropped, and token-like values (long runs of
letters and digits) in the path or the query are shown as ``***``. The comparison uses ``location_digest``,
a SHA-256 of the location with only the credentials dropped, so ``?channel=2`` and ``?channel=3`` (or two
dataset ids) stay different volumes while the readable ``location`` may hide them.

The record is created once, atomically: a complete temporary file is hard-linked to the record's name,
which fails if a record exists (then that record is compared). A root without a record (written by
upstream lazyflow, or by an older version) is adopted by the first writer. Opening never writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy

from lazyflow_rbfs.description import remote_format
from lazyflow_rbfs.errors import CacheWriteError, DescriptionError

__all__ = [
    "RECORD_NAME",
    "VolumeIdentity",
    "identity_of",
    "root_of",
    "read_record",
    "check",
    "check_local",
    "check_composite",
    "record",
    "scrub_location",
]

logger = logging.getLogger(__name__)

#: The record's file name in the cache root. Upstream lazyflow never lists the root, and a name starting
#: with a dot cannot be a block directory (``<axis>_<8 digits>``).
RECORD_NAME = ".rbfs-volume.json"
SCHEMA_NAME = "rbfs-cache-volume"
SCHEMA_VERSION = 1
#: Largest record read (a record is well under 2 KiB).
_MAX_RECORD_BYTES = 64 * 1024

#: What a local fileset (which knows no remote) can check: the fields that make block files readable.
LOCAL_KEYS = ("dtype", "axes", "shape", "block_shape", "block_file_name_format")

_CREDENTIAL_NAME = re.compile(
    r"token|key|secret|pass|pwd|auth|sig|credential|session|x-amz-|x-goog-", re.IGNORECASE
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.~+/=%]+")


@dataclass(frozen=True)
class VolumeIdentity:
    """The identity of the volume a cache root holds (see the module docstring for what is in it)."""

    format: str
    location: str
    location_digest: str
    scale: str | int | None
    origin_offset: tuple[int, ...]
    dtype: str
    axes: str
    shape: tuple[int, ...]
    block_shape: tuple[int, ...]
    block_file_name_format: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object written under ``"volume"`` in the record."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, obj: Any) -> VolumeIdentity:
        """Rebuild one from :meth:`to_json` output; ``ValueError`` names what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"'volume' is not an object but {type(obj).__name__}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                raise ValueError(f"'volume' lacks {f.name!r}")
            value = obj[f.name]
            if f.name in ("origin_offset", "shape", "block_shape"):
                if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                ):
                    raise ValueError(f"{f.name!r} is not a list of integers: {value!r}")
                value = tuple(value)
            elif f.name == "scale":
                if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                    raise ValueError(f"'scale' is not a string, an integer or null: {value!r}")
            elif not isinstance(value, str):
                raise ValueError(f"{f.name!r} is not a string: {value!r}")
            values[f.name] = value
        return cls(**values)

    def differences(self, other: VolumeIdentity, keys: Iterable[str] | None = None) -> list[str]:
        """``"dtype uint8 in the cache, uint16 here"`` for each of ``keys`` where ``other`` differs."""
        out = []
        for key in keys if keys is not None else _COMPARED:
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine == theirs:
                continue
            if key == "location_digest":  # the digest decides; people read the location
                if self.location != other.location:
                    out.append(f"location {self.location} in the cache, {other.location} here")
                else:
                    out.append(
                        f"location {self.location} in the cache and here, but with other hidden query values"
                    )
                continue
            out.append(f"{key} {_show(mine)} in the cache, {_show(theirs)} here")
        return out

    def summary(self) -> str:
        """One line: ``"hdf5 volume http://… (uint8, zyx, shape [..], blocks [..])"``."""
        scale = "" if self.scale is None else f" scale {self.scale!r}"
        return (
            f"{self.format} volume {self.location}{scale} ({self.dtype}, {self.axes}, shape "
            f"{list(self.shape)}, blocks {list(self.block_shape)})"
        )


#: Compared by :func:`check` (``location`` is for people; its digest decides).
_COMPARED = tuple(f.name for f in fields(VolumeIdentity) if f.name != "location")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return str(list(value))
    return repr(value) if isinstance(value, str) and " " in value else str(value)


# ---------------------------------------------------------------------------------------------------------
# Identity of a description


def scrub_location(url: str) -> tuple[str, str]:
    """``(readable, canonical)`` forms of a location URL, both without credentials.

    ``canonical`` drops the user and password and every query parameter named like a credential, and
    lower-cases the scheme and host; everything else that may select data is kept. ``readable`` is the
    same with token-like path segments and query values shown as ``***`` (it is written to the record).
    Anything that is not a URL with a host is returned as it is.
    """
    text = str(url)
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text, text
    host = parts.netloc.rpartition("@")[2].lower()
    head = f"{parts.scheme.lower()}://{host}"
    path_readable = "/".join("***" if _token_like(seg, 24) else seg for seg in parts.path.split("/"))
    kept: list[str] = []
    shown: list[str] = []
    for item in re.split(r"[&;]", parts.query) if parts.query else ():
        name, eq, value = item.partition("=")
        if _CREDENTIAL_NAME.search(unquote(name)):
            shown.append(f"{name}=***")
            continue
        kept.append(item)
        shown.append(f"{name}{eq}{'***' if _token_like(value, 16) else value}")
    canonical = head + parts.path + ("?" + "&".join(kept) if kept else "")
    readable = head + path_readable + ("?" + "&".join(shown) if shown else "")
    return readable, canonical


def _token_like(text: str, min_length: int) -> bool:
    """A long run of URL-safe characters with both letters and digits: an API key, a signature, a hash."""
    return (
        len(text) >= min_length
        and _TOKEN_CHARS.fullmatch(text) is not None
        and any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
    )


def _location(remote: Any) -> tuple[str, str, str | int | None]:
    """``(readable, canonical, scale)`` of a parsed remote description, from its format's
    ``identity_location`` (the URL part scrubbed here, the path part appended as it is)."""
    where = remote_format(str(remote.format)).identity_location(remote)
    readable, canonical = scrub_location(where.url)
    return readable + where.path, canonical + where.path, _scale(where.scale)


def _scale(value: Any) -> str | int | None:
    if value is None or isinstance(value, str):
        return value
    return int(value)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _local_values(local: Any) -> dict[str, Any]:
    return {
        "dtype": numpy.dtype(local.dtype).name,
        "axes": str(local.axes),
        "shape": _ints(local.shape),
        "block_shape": _ints(local.block_shape),
        "block_file_name_format": str(local.block_file_name_format),
    }


def identity_of(composite: Any) -> VolumeIdentity:
    """The identity of the volume a parsed composite description reads."""
    remote = composite.remote_description
    readable, canonical, scale = _location(remote)
    digest = "sha256:" + hashlib.sha256(f"{remote.format}\0{canonical}".encode()).hexdigest()
    return VolumeIdentity(
        format=str(remote.format),
        location=readable,
        location_digest=digest,
        scale=scale,
        origin_offset=_ints(remote.origin_offset),
        **_local_values(composite.local_description),
    )


def root_of(local: Any, description_path: str | os.PathLike) -> str:
    """The cache root of a local description read from ``description_path`` (as the filesets resolve it)."""
    root = str(local.dataset_root_dir if local.dataset_root_dir is not None else ".")
    base = os.path.dirname(os.path.abspath(os.fspath(description_path)))
    return os.path.normpath(os.path.join(base, root))


# ---------------------------------------------------------------------------------------------------------
# The record file


def _record_path(root: str) -> str:
    return os.path.join(root, RECORD_NAME)


def _damaged(path: str, problem: str) -> DescriptionError:
    return DescriptionError(
        f"dataset_root_dir: the cache's volume record {path} is damaged ({problem}); if the blocks under "
        f"{os.path.dirname(path)} belong to this description's volume, delete the record (the next download "
        f"writes it again), otherwise give this description a dataset_root_dir of its own",
        field="dataset_root_dir",
    )


def read_record(root: str | os.PathLike) -> VolumeIdentity | None:
    """The identity recorded in cache root ``root``, or ``None`` when it has no record.

    Raises
    ------
    DescriptionError
        (field ``dataset_root_dir``) the record is not a readable regular file of this format (a symbolic
        link is not followed).
    """
    path = _record_path(os.fspath(root))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _damaged(path, "it is a symbolic link") from None
        raise _damaged(path, f"cannot read it: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _damaged(path, "it is not a regular file")
        data = b""
        while len(data) <= _MAX_RECORD_BYTES:
            chunk = os.read(fd, _MAX_RECORD_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > _MAX_RECORD_BYTES:
        raise _damaged(path, f"larger than {_MAX_RECORD_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _damaged(path, f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("_schema_name") != SCHEMA_NAME:
        raise _damaged(path, f"no '_schema_name': {SCHEMA_NAME!r}")
    version = obj.get("_schema_version")
    if isinstance(version, bool) or not isinstance(version, (int, float)) or not 1 <= version < 2:
        raise _damaged(path, f"'_schema_version' {version!r}; this lazyflow_rbfs reads 1.x")
    try:
        return VolumeIdentity.from_json(obj.get("volume"))
    except ValueError as exc:
        raise _damaged(path, str(exc)) from None


def _mismatch(
    root: str, recorded: VolumeIdentity, wanted: VolumeIdentity, keys: Sequence[str], description_path: Any
) -> DescriptionError:
    what = f"the description {description_path}" if description_path else "this description"
    differences = recorded.differences(wanted, keys)
    if "location_digest" not in keys:  # a local fileset: say which volume the blocks are of
        differences.append(f"(the cache holds the {recorded.format} volume {recorded.location})")
    return DescriptionError(
        f"dataset_root_dir: the cache directory {root} holds the blocks of another volume (see its "
        f"{RECORD_NAME}), so {what} cannot use it: {'; '.join(differences)}. Give {what} a "
        f"dataset_root_dir of its own, or delete {root} if its blocks are no longer wanted",
        field="dataset_root_dir",
    )


def check(
    root: str | os.PathLike, wanted: VolumeIdentity, description_path: Any = None
) -> VolumeIdentity | None:
    """Refuse a cache root recorded for another volume; return the record (``None``: the root has none).

    A root without a record passes; nothing is written.

    Raises
    ------
    DescriptionError
        (field ``dataset_root_dir``) the record names another volume, or is damaged.
    """
    root = os.fspath(root)
    recorded = read_record(root)
    if recorded is not None and recorded.differences(wanted):
        raise _mismatch(root, recorded, wanted, _COMPARED, description_path)
    return recorded


def check_local(root: str | os.PathLike, local: Any, description_path: Any = None) -> None:
    """What a local fileset can check of a recorded root: its block files are of this description's kind.

    ``local`` is a parsed local description. Only :data:`LOCAL_KEYS` are compared.
    """
    root = os.fspath(root)
    recorded = read_record(root)
    if recorded is None:
        return
    values = _local_values(local)
    if all(getattr(recorded, k) == v for k, v in values.items()):
        return
    # Compare as identities that agree on everything but the local fields.
    wanted = replace(recorded, **values)
    raise _mismatch(root, recorded, wanted, LOCAL_KEYS, description_path)


def check_composite(composite: Any, description_path: str | os.PathLike) -> None:
    """:func:`check` the cache root of a parsed composite description read from ``description_path``."""
    root = root_of(composite.local_description, description_path)
    check(root, identity_of(composite), os.fspath(description_path))


def record(root: str | os.PathLike, identity: VolumeIdentity, description_path: Any = None) -> None:
    """Make sure cache root ``root`` records ``identity``: write the record if there is none, else compare.

    Safe against any number of processes doing the same at once: exactly one record is ever written, it
    appears complete or not at all, and every writer of another volume gets :class:`DescriptionError`.

    Raises
    ------
    DescriptionError
        (field ``dataset_root_dir``) the root records another volume, or its record is damaged.
    CacheWriteError
        The file system refused the write (read-only, full, quota); nothing is left behind.
    """
    root = os.fspath(root)
    if read_record(root) is None:
        _create(root, identity)
    check(root, identity, description_path)


def _create(root: str, identity: VolumeIdentity) -> None:
    from lazyflow_rbfs import __version__

    payload = {
        "_schema_name": SCHEMA_NAME,
        "_schema_version": SCHEMA_VERSION,
        "written_by": f"lazyflow_rbfs {__version__}",
        "volume": identity.to_json(),
    }
    data = _render(payload).encode("utf-8")
    path = _record_path(root)
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    target = root
    try:
        os.makedirs(root, exist_ok=True)
        target = path
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            0o644,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if _link_exclusive(temp, path):
            _fsync_directory(root)
            logger.info("cache %s now records its volume: %s", root, identity.summary())
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, target, "write the cache's volume record") from exc
    finally:
        try:
            os.remove(temp)
        except OSError:
            pass


def _render(payload: dict[str, Any]) -> str:
    """The record's text: one field a line, lists on one line."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in payload.items() if k != "volume"]
    inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in payload["volume"].items())
    lines.append(f'  "volume": {{\n{inner}\n  }}')
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _link_exclusive(temp: str, path: str) -> bool:
    """Give the complete file ``temp`` the name ``path`` unless that exists; whether this call did."""
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
    # A file system without hard links: the same, under an OS lock every writer of the root takes.
    from lazyflow_rbfs.locks import BlockLock

    with BlockLock(path + ".lock"):
        if os.path.lexists(path):
            return False
        os.replace(temp, path)
        return True


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the record itself is already synced
    finally:
        os.close(fd)
