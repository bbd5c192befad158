"""The BossDB cutout API (format ``boss``), as the test server speaks it.

::

    GET /v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/<z0>:<z1>/[<t0>:<t1>/]

with ``Accept: application/blosc`` or ``application/npygz``, the ``Authorization: Token <token>`` check
(401 without, 403 with a wrong token), HTTP 413 above ``max_cutout_bytes``, and the metadata endpoints
``/v1/collection/<c>/experiment/<e>/``, ``.../channel/<ch>/`` and ``/v1/coord/<frame>/``. Resolution
levels halve y and x per level (see :class:`~lazyflow_rbfs.testing.volumes.ServedVolume`). Volumes with
axes ``zyx`` or ``tzyx`` are served.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lazyflow_rbfs.testing import encoders
from lazyflow_rbfs.testing.replies import BadRequest, HttpError, NotFound, Reply, json_reply
from lazyflow_rbfs.testing.volumes import ServedVolume

__all__ = ["BossSettings", "BossEmulator"]


@dataclass
class BossSettings:
    """How a :class:`~lazyflow_rbfs.testing.CutoutServer` speaks the BossDB cutout API.

    ``token=None`` accepts any request; otherwise ``Authorization: Token <token>`` is required (401 when
    missing, 403 when wrong). Cutouts above ``max_cutout_bytes`` (uncompressed) get HTTP 413 like the
    real service's limit.
    """

    collection: str = "sample"
    experiment: str = "em"
    channel: str = "image"
    token: str | None = None
    max_cutout_bytes: int | None = None
    levels: int = 2

    @property
    def coord_frame(self) -> str:
        return f"{self.collection}_{self.experiment}_frame"


class BossEmulator:
    """Routes (everything under ``/v1/``) and description fields of the Boss API of one volume."""

    def __init__(self, settings: BossSettings, volume: ServedVolume) -> None:
        self.settings = settings
        self.volume = volume

    def description_fields(self, base_url: str, level: int) -> dict[str, Any]:
        """The ``boss`` fields of a remote description of resolution ``level``."""
        b = self.settings
        return {
            "boss_url": base_url,
            "collection": b.collection,
            "experiment": b.experiment,
            "channel": b.channel,
            "resolution": level,
        }

    def route(self, path: str, headers: Mapping[str, str]) -> Reply:
        """The answer to a ``GET`` of ``path`` (starting with ``/v1/``) with request ``headers``."""
        self._check_token(headers)
        parts = [p for p in path.split("/") if p]
        b = self.settings
        if parts[:2] == ["v1", "coord"] and len(parts) == 3:
            if parts[2] != b.coord_frame:
                raise NotFound(f"coordinate frame {parts[2]!r} not found")
            return json_reply(self._coord_frame())
        if parts[:2] == ["v1", "collection"] and len(parts) in (5, 7) and parts[3] == "experiment":
            if parts[2] != b.collection or parts[4] != b.experiment:
                raise NotFound(f"collection/experiment {parts[2]}/{parts[4]} not found")
            if len(parts) == 5:
                return json_reply(self._experiment())
            if parts[5] != "channel" or parts[6] != b.channel:
                raise NotFound(f"channel {'/'.join(parts[5:])} not found")
            return json_reply(self._channel())
        if parts[:2] != ["v1", "cutout"] or len(parts) not in (9, 10):
            raise NotFound(f"unknown Boss path {path!r}")
        return self._cutout(parts, headers)

    def _check_token(self, headers: Mapping[str, str]) -> None:
        token = self.settings.token
        if token is None:
            return
        sent = headers.get("Authorization")
        if sent is None:
            raise HttpError(
                '{"status": 401, "message": "Authentication credentials were not provided."}', 401
            )
        if sent != f"Token {token}":
            raise HttpError('{"status": 403, "message": "Invalid token."}', 403)

    def _cutout(self, parts: list[str], headers: Mapping[str, str]) -> Reply:
        b, volume = self.settings, self.volume
        axes = volume.axes
        if axes not in ("zyx", "tzyx"):
            raise NotFound(f"this volume's axes {axes!r} are not served over the Boss API (zyx, tzyx)")
        if parts[2:5] != [b.collection, b.experiment, b.channel]:
            raise NotFound(f"channel {'/'.join(parts[2:5])} not found")
        try:
            level = int(parts[5])
        except ValueError:
            raise BadRequest(f"resolution {parts[5]!r} is not an integer") from None
        if not 0 <= level < max(1, b.levels):
            raise BadRequest(f"resolution {level} not available (0..{max(1, b.levels) - 1})")
        shape, origin = volume.level(level)
        ranges: dict[str, tuple[int, int]] = {}
        for axis, text in zip("xyzt", parts[6:]):
            match = re.fullmatch(r"(\d+):(\d+)", text)
            if match is None:
                raise BadRequest(f"malformed range {text!r} for axis {axis}: expected 'start:stop'")
            ranges[axis] = (int(match.group(1)), int(match.group(2)))
        squeeze_t = "t" in axes and "t" not in ranges
        if "t" in ranges and "t" not in axes:
            raise BadRequest("this channel has no time axis")
        if squeeze_t:
            ranges["t"] = (0, 1)
        region = []
        for axis, size, o in zip(axes, shape, origin):
            lo, hi = ranges[axis]
            if not o <= lo < hi <= o + size:
                raise BadRequest(f"axis {axis}: {lo}:{hi} is outside [{o}, {o + size}) or empty/reversed")
            region.append(slice(lo - o, hi - o))
        nbytes = math.prod(s.stop - s.start for s in region) * volume.dtype.itemsize
        if b.max_cutout_bytes is not None and nbytes > b.max_cutout_bytes:
            raise HttpError(
                f"Cutout request is over {b.max_cutout_bytes} bytes when uncompressed ({nbytes}). "
                f"Reduce cutout dimensions.",
                413,
            )
        data = volume.read_level(level, region)
        if squeeze_t:
            data = data[0]
        accept = headers.get("Accept", "")
        if accept == "application/blosc" and encoders.blosc_module() is not None:
            return Reply("application/blosc", data, encoders.encode_blosc)
        if accept == "application/npygz":
            return Reply("application/npygz", data, encoders.encode_npy_zlib)
        raise HttpError(
            f"unsupported Accept {accept!r}: this server sends application/blosc or application/npygz "
            f"(never pickles)",
            406,
        )

    def _coord_frame(self) -> dict[str, Any]:
        volume = self.volume
        frame: dict[str, Any] = {
            "name": self.settings.coord_frame,
            "description": "",
            "voxel_unit": "nanometers",
        }
        for axis, size, o, voxel in zip(
            "xyz", volume.xyz(volume.shape), volume.xyz(volume.origin_offset), (4, 4, 40)
        ):
            frame[f"{axis}_start"], frame[f"{axis}_stop"] = o, o + size
            frame[f"{axis}_voxel_size"] = voxel
        return frame

    def _experiment(self) -> dict[str, Any]:
        volume = self.volume
        t = volume.shape[volume.axes.index("t")] if "t" in volume.axes else 1
        return {
            "name": self.settings.experiment,
            "collection": self.settings.collection,
            "coord_frame": self.settings.coord_frame,
            "num_hierarchy_levels": max(1, self.settings.levels),
            "hierarchy_method": "anisotropic",
            "num_time_samples": t,
        }

    def _channel(self) -> dict[str, Any]:
        return {
            "name": self.settings.channel,
            "experiment": self.settings.experiment,
            "type": "image",
            "datatype": self.volume.dtype.name,
            "base_resolution": 0,
            "default_time_sample": 0,
            "downsample_status": "DOWNSAMPLED",
        }
