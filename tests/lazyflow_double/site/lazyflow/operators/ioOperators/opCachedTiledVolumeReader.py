"""lazyflow's tiled-volume reader: the first .json reader tried; "not mine" for other schemas."""

from __future__ import annotations

from lazyflow.graph import InputSlot, Operator, OutputSlot
from lazyflow.operators.ioOperators._described import set_meta
from lazyflow.utility.jsonConfig import JsonConfigParser


class OpCachedTiledVolumeReader(Operator):
    DescriptionFilePath = InputSlot(stype="filestring")
    SpecifiedOutput = OutputSlot()

    Schema = JsonConfigParser(
        {
            "_schema_name": "tiled-volume-description",
            "_schema_version": 1.0,
            "shape": list,
            "dtype": str,
            "output_axes": str,
        }
    )

    def setupOutputs(self) -> None:
        desc = self.Schema.parseConfigFile(self.DescriptionFilePath.value)
        set_meta(self.SpecifiedOutput, desc.shape, desc.dtype, desc.output_axes or "zyx")

    def execute(self, slot, subindex, roi, result):
        raise NotImplementedError("the lazyflow double's tiled volume reader reads no data")

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.SpecifiedOutput.setDirty(slice(None))
