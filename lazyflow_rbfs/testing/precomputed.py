"""A neuroglancer precomputed volume (format ``precomputed``, unsharded), as the test server serves it.

Under the settings' ``prefix`` (default ``/precomputed/sample/``): ``info`` and
``<key>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` chunks of the chunk grid only, like files in a bucket; raw
(gzip-encoded when the client accepts it) or jpeg. Scales halve y and x per level (see
:class:`~lazyflow_rbfs.testing.volumes.ServedVolume`). Volumes with axes ``zyx`` or ``czyx`` are served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.testing import encoders
from lazyflow_rbfs.testing.replies import NotFound, Reply, json_reply
from lazyflow_rbfs.testing.volumes import ServedVolume

__all__ = ["PrecomputedSettings", "PrecomputedEmulator"]


@dataclass
class PrecomputedSettings:
    """How a :class:`~lazyflow_rbfs.testing.CutoutServer` serves a neuroglancer precomputed volume.

    ``chunk_xyz`` is the chunk size (x, y, z; default 64³, as real volumes use: far fewer requests than
    tiny chunks); ``encoding`` ``"raw"`` or ``"jpeg"``; ``gzip`` encodes raw
    chunks with ``Content-Encoding: gzip`` for clients that accept it; ``scales`` resolution levels.
    """

    prefix: str = "/precomputed/sample"
    chunk_xyz: tuple[int, int, int] = (64, 64, 64)
    encoding: str = "raw"
    gzip: bool = True
    scales: int = 2
    jpeg_quality: int = 95
    resolution_xyz: tuple[float, float, float] = (4.0, 4.0, 40.0)


class PrecomputedEmulator:
    """Routes (everything under ``settings.prefix``) and ``info`` of the precomputed volume."""

    def __init__(self, settings: PrecomputedSettings, volume: ServedVolume) -> None:
        self.settings = settings
        self.volume = volume

    def url(self, base_url: str) -> str:
        """The folder holding the ``info`` file, below ``base_url``."""
        return f"{base_url}{self.settings.prefix}"

    def description_fields(self, base_url: str, level: int) -> dict[str, Any]:
        """The ``precomputed`` fields of a remote description of scale ``level``."""
        return {"precomputed_url": self.url(base_url), "scale": level}

    def handles(self, path: str) -> str | None:
        """The part of ``path`` after the prefix if it is this volume's, else ``None``."""
        head = self.settings.prefix.rstrip("/") + "/"
        return path[len(head) :] if path.startswith(head) else None

    def info(self) -> dict[str, Any]:
        """The ``info`` JSON of the precomputed volume."""
        pc, volume = self.settings, self.volume
        channels = volume.shape[0] if volume.axes == "czyx" else 1
        scales = []
        for level in range(max(1, pc.scales)):
            shape, origin = volume.level(level)
            f = 2**level
            scales.append(
                {
                    "key": f"{f}_{f}_1",
                    "size": list(volume.xyz(shape)),
                    "voxel_offset": list(volume.xyz(origin)),
                    "chunk_sizes": [list(pc.chunk_xyz)],
                    "encoding": pc.encoding,
                    "resolution": [pc.resolution_xyz[0] * f, pc.resolution_xyz[1] * f, pc.resolution_xyz[2]],
                }
            )
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": "image",
            "data_type": volume.dtype.name,
            "num_channels": channels,
            "scales": scales,
        }

    def route(self, rest: str) -> Reply:
        """The answer to a ``GET`` of ``<prefix>/<rest>`` (see :meth:`handles`)."""
        volume = self.volume
        if volume.axes not in ("zyx", "czyx"):
            raise NotFound(f"this volume's axes {volume.axes!r} are not served as precomputed (zyx, czyx)")
        info = self.info()
        if rest == "info":
            return json_reply(info)
        key, _, name = rest.rpartition("/")
        levels = {s["key"]: level for level, s in enumerate(info["scales"])}
        if key not in levels:
            raise NotFound(f"no scale {key!r}")
        match = re.fullmatch(r"(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)", name)
        if match is None:
            raise NotFound(f"no chunk {name!r}")
        x0, x1, y0, y1, z0, z1 = (int(g) for g in match.groups())
        scale = info["scales"][levels[key]]
        region: dict[str, slice] = {}
        for axis, lo, hi, size, off, chunk in zip(
            "xyz",
            (x0, y0, z0),
            (x1, y1, z1),
            scale["size"],
            scale["voxel_offset"],
            self.settings.chunk_xyz,
        ):
            # Only the chunks of the grid exist, like files in a bucket.
            if (lo - off) % chunk or lo < off or hi != min(lo + chunk, off + size) or lo >= off + size:
                raise NotFound(f"no chunk {name!r} in scale {key!r}")
            region[axis] = slice(lo - off, hi - off)
        index = tuple(region.get(a, slice(0, n)) for a, n in zip(volume.axes, volume.shape))
        data = volume.read_level(levels[key], index)
        if volume.axes == "zyx":
            data = data[np.newaxis]
        if self.settings.encoding == "jpeg":
            quality = self.settings.jpeg_quality
            return Reply("image/jpeg", data, lambda d: encoders.encode_jpeg(d, quality))
        extra = {"X-Gzip": "1"} if self.settings.gzip else {}
        return Reply("application/octet-stream", data, encoders.encode_raw_chunk, extra=extra)
