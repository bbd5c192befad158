"""The seed's cutout API (formats ``hdf5`` and ``npz``/``npygz``), as the test server speaks it.

URL layout (one path segment per axis, in ``url_axes`` order, by default the reverse of ``axes`` like
openconnecto.me's ``x,y,z`` for ``zyx`` volumes)::

    http://127.0.0.1:PORT/emca/sample/hdf5/0/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/

``.../npz/0/...`` serves the same regions as zlib-compressed ``.npy``. Coordinates in URLs are server
coordinates: volume index + ``origin_offset``.
"""

from __future__ import annotations

from typing import Any

from lazyflow_rbfs.testing import encoders
from lazyflow_rbfs.testing.replies import BadRequest, NotFound, Reply
from lazyflow_rbfs.testing.volumes import ServedVolume

__all__ = ["CutoutEmulator", "FORMATS"]

#: The remote description ``format`` values this API serves.
FORMATS = ("hdf5", "npz", "npygz")


class CutoutEmulator:
    """Routes and description fields of the HDF5/npz cutout API of one volume.

    Parameters
    ----------
    volume:
        What is served.
    prefix:
        URL path before ``/hdf5/0/`` (``""`` or starting with ``/``).
    url_axes:
        Order of the per-axis path segments (a permutation of the volume's axes).
    dataset_name:
        Name of the dataset inside every HDF5 response (with a leading ``/``).
    compression:
        h5py compression of the response datasets (``None``: uncompressed).
    """

    def __init__(
        self,
        volume: ServedVolume,
        *,
        prefix: str,
        url_axes: str,
        dataset_name: str,
        compression: str | None = None,
    ) -> None:
        self.volume = volume
        self.prefix = prefix
        self.url_axes = url_axes
        self.dataset_name = dataset_name
        self.compression = compression

    def url_format(self, base_url: str, fmt: str = "hdf5") -> str:
        """A ``url_format`` for the ``hdf5`` or ``npz``/``npygz`` cutouts, below ``base_url``."""
        if fmt not in FORMATS:
            raise ValueError(f"url_format_for: expected 'hdf5', 'npz' or 'npygz', got {fmt!r}")
        segments = "/".join(f"{{{a}_start}},{{{a}_stop}}" for a in self.url_axes)
        kind = "hdf5" if fmt == "hdf5" else "npz"
        return f"{base_url}{self.prefix}/{kind}/0/{segments}/"

    def description_fields(self, base_url: str, fmt: str) -> dict[str, Any]:
        """The format's fields of a remote description (``url_format``, and ``hdf5_dataset`` for HDF5)."""
        fields: dict[str, Any] = {"url_format": self.url_format(base_url, fmt)}
        if fmt == "hdf5":
            fields["hdf5_dataset"] = self.dataset_name.lstrip("/")
        return fields

    def route(self, path: str) -> Reply:
        """The answer to a ``GET`` of ``path`` (any path that is not another API's)."""
        data = self.volume.read(self.region(path))
        if path.startswith(f"{self.prefix}/npz/0/"):
            return Reply("application/octet-stream", data, encoders.encode_npy_zlib)
        return Reply("application/x-hdf5", data, self._encode_hdf5)

    def region(self, path: str) -> tuple[slice, ...]:
        """The volume index a cutout path asks for."""
        head = f"{self.prefix}/hdf5/0/"
        if path.startswith(f"{self.prefix}/npz/0/"):
            head = f"{self.prefix}/npz/0/"
        if not path.startswith(head):
            raise NotFound(f"unknown path {path!r}; cutouts are at {head}<one 'start,stop' per axis>/")
        segments = path[len(head) :].strip("/").split("/")
        if len(segments) != len(self.url_axes):
            raise BadRequest(
                f"expected {len(self.url_axes)} 'start,stop' segments for axes {self.url_axes!r}, "
                f"got {len(segments)}"
            )
        axes = self.volume.axes
        slices: dict[str, slice] = {}
        for axis, segment in zip(self.url_axes, segments):
            try:
                lo_text, hi_text = segment.split(",")
                lo, hi = int(lo_text), int(hi_text)
            except ValueError:
                raise BadRequest(
                    f"malformed segment {segment!r} for axis {axis}: expected 'start,stop'"
                ) from None
            i = axes.index(axis)
            origin, size = self.volume.origin_offset[i], self.volume.shape[i]
            if not origin <= lo < hi <= origin + size:
                raise BadRequest(
                    f"axis {axis}: {lo},{hi} is outside [{origin}, {origin + size}) or empty/reversed"
                )
            slices[axis] = slice(lo - origin, hi - origin)
        return tuple(slices[a] for a in axes)

    def _encode_hdf5(self, data: Any) -> bytes:
        return encoders.encode_hdf5(data, self.dataset_name, self.compression)
