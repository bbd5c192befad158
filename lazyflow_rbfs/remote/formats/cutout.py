"""The seed's cutout API (remote formats ``"hdf5"``, ``"npz"`` and ``"npygz"``): one GET per roi.

A description gives ``url_format``, an ``http(s)`` URL with ``{a_start}``/``{a_stop}`` placeholders for every
axis ``a`` (coordinates of the service: volume coordinates + ``origin_offset``), e.g.
``http://openconnecto.me/emca/bock11/hdf5/0/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/``.
The body is an HDF5 file holding the cutout as ``hdf5_dataset`` (``"hdf5"``), or a zlib-compressed ``.npy``
(``"npz"``/``"npygz"``, openconnecto.me's ndstore; no dataset name inside).
"""

from __future__ import annotations

import re
import string
from typing import Any

import numpy as np

from lazyflow_rbfs.description import IdentityLocation, Namespace, normalize_h5_path
from lazyflow_rbfs.description.fields import (
    field_error,
    field_error_text,
    format_fields,
    join_field,
    parse_str,
    placeholder,
    show_value,
)
from lazyflow_rbfs.description.h5path import split_block_file_name_format
from lazyflow_rbfs.remote.codecs import Expected
from lazyflow_rbfs.remote.formats.base import RemoteFormat, fetch_block
from lazyflow_rbfs.remote.http import HttpClient

__all__ = ["CutoutFormat", "CutoutReader", "HDF5", "NPY", "check_url_format"]

_URL_AXES = "tcxyz"
_URL_PLACEHOLDER = re.compile(r"([tcxyz])_(start|stop)")


def check_url_format(fmt: Any, field: str, axes: str) -> str:
    fmt = parse_str(fmt, field)
    expected = "an http(s) URL format with {a_start}/{a_stop} for every axis"
    if fmt is None:
        raise field_error(field, expected, None)
    lowered = fmt.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        raise field_error(field, "an http:// or https:// URL", fmt)
    rest = fmt.split("://", 1)[1]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not host or "{" in host or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in fmt):
        raise field_error(field, "an http(s) URL with a literal host and no whitespace", fmt)
    names = format_fields(fmt, field)
    present: set[str] = set()
    sample: dict[str, int] = {}
    for name, conversion, spec in names:
        if conversion or spec:
            raise field_error_text(
                field,
                "plain placeholders such as {x_start} (no conversion or format spec)",
                f"{placeholder(name, conversion, spec)} in {show_value(fmt)}",
            )
        match = _URL_PLACEHOLDER.fullmatch(name)
        if match is None:
            raise field_error_text(
                field,
                f"only placeholders {{a_start}}/{{a_stop}} for axes a of {_URL_AXES!r}",
                f"{{{name}}} in {show_value(fmt)}",
            )
        if match.group(1) not in axes:
            raise field_error_text(
                field,
                f"placeholders only for the axes {axes!r}",
                f"{{{name}}} (axis {match.group(1)!r} is not in axes) in {show_value(fmt)}",
            )
        present.add(name)
        sample[name] = 0
    missing = [f"{{{a}_{end}}}" for a in axes for end in ("start", "stop") if f"{a}_{end}" not in present]
    if missing:
        raise field_error_text(
            field, expected + f" of {axes!r}", f"{show_value(fmt)} without {', '.join(missing)}"
        )
    try:
        fmt.format(**sample)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise field_error_text(field, "a valid str.format string", f"{show_value(fmt)} ({exc})") from None
    return fmt


class CutoutReader:
    """Fetch rois of a cutout description: one GET of ``url_format`` per roi, decoded by ``encoding``."""

    def __init__(self, desc: Any, client: HttpClient, encoding: str) -> None:
        self.client = client
        self.encoding = encoding
        self.axes = str(desc.axes)
        self.dtype = np.dtype(desc.dtype)
        self.origin = np.asarray(desc.origin_offset, dtype=np.int64)
        self.dataset = normalize_h5_path(desc.hdf5_dataset) if desc.hdf5_dataset is not None else None
        # The description checked url_format: only {a_start}/{a_stop} placeholders, one pair per axis.
        self.parts = [
            (literal, name) for literal, name, _s, _c in string.Formatter().parse(str(desc.url_format))
        ]

    def url(self, start: np.ndarray, stop: np.ndarray) -> str:
        """The URL of ``[start, stop)`` (``origin_offset`` is added here)."""
        values: dict[str, str] = {}
        for axis, a, b, o in zip(self.axes, start.tolist(), stop.tolist(), self.origin.tolist()):
            values[f"{axis}_start"] = str(int(a) + int(o))
            values[f"{axis}_stop"] = str(int(b) + int(o))
        return "".join(literal + (values[name] if name else "") for literal, name in self.parts)

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        return [self.url(start, stop)]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        url = self.url(start, stop)
        shape = tuple(int(s) for s in (stop - start))
        expected = Expected(url=url, shape=shape, dtype=self.dtype, dataset=self.dataset)
        return fetch_block(self.client, url, self.encoding, expected)


class CutoutFormat(RemoteFormat):
    """The seed's cutout API with one body encoding (``"hdf5"`` names a dataset inside each body)."""

    def __init__(self, names: tuple[str, ...], encoding: str, *, dataset: bool) -> None:
        self.names = names
        self.encoding = encoding
        self.dataset = dataset

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        field = join_field(prefix, "hdf5_dataset")
        dataset = parse_str(out["hdf5_dataset"], field)
        if self.dataset and (dataset is None or not dataset.strip("/")):
            raise field_error(
                field, "the HDF5 dataset name inside each downloaded file (e.g. 'cube')", dataset
            )
        out["hdf5_dataset"] = dataset
        out["url_format"] = check_url_format(out["url_format"], join_field(prefix, "url_format"), out["axes"])

    def check_composite(self, remote: Namespace, local: Namespace, local_field: str) -> None:
        if not self.dataset:
            return
        _external, internal = split_block_file_name_format(local.block_file_name_format)
        if normalize_h5_path(internal) != normalize_h5_path(remote.hdf5_dataset):
            raise field_error_text(
                join_field(local_field, "block_file_name_format"),
                f"the internal dataset path {normalize_h5_path(remote.hdf5_dataset)!r} "
                f"(remote hdf5_dataset {remote.hdf5_dataset!r})",
                f"{normalize_h5_path(internal)!r} in {local.block_file_name_format!r}",
            )

    def open_reader(self, desc: Any, client: HttpClient) -> CutoutReader:
        return CutoutReader(desc, client, self.encoding)

    def source_url(self, desc: Any) -> str:
        """``url_format`` (placeholders kept)."""
        return str(getattr(desc, "url_format", ""))

    def identity_location(self, desc: Any) -> IdentityLocation:
        return IdentityLocation(str(desc.url_format))


#: HDF5 cutouts (the seed's API): the body is an HDF5 file holding the cutout as ``hdf5_dataset``.
HDF5 = CutoutFormat(("hdf5",), "hdf5", dataset=True)
#: zlib-compressed ``.npy`` cutouts (openconnecto.me/ndstore ``npz``; ``npygz``).
NPY = CutoutFormat(("npz", "npygz"), "npy-zlib", dataset=False)
