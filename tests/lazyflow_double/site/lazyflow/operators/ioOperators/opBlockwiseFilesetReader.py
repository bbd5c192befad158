"""lazyflow's reader of local blockwise filesets: opens local descriptions (metadata only in the double)."""

from __future__ import annotations

import os

from lazyflow.graph import InputSlot, Operator, OutputSlot
from lazyflow.operators.ioOperators._described import set_meta
from lazyflow.utility.jsonConfig import JsonConfigParser


class OpBlockwiseFilesetReader(Operator):
    DescriptionFilePath = InputSlot(stype="filestring")
    Output = OutputSlot()

    Schema = JsonConfigParser(
        {
            "_schema_name": "blockwise-fileset-description",
            "_schema_version": 1.1,
            "shape": list,
            "view_shape": list,
            "dtype": str,
            "axes": str,
        }
    )

    class MissingDatasetError(Exception):
        pass

    def setupOutputs(self) -> None:
        path = self.DescriptionFilePath.value
        if not os.path.exists(path):
            raise OpBlockwiseFilesetReader.MissingDatasetError(f"Dataset description not found: {path}")
        desc = self.Schema.parseConfigFile(path)
        set_meta(self.Output, desc.view_shape or desc.shape, desc.dtype, desc.axes)

    def execute(self, slot, subindex, roi, result):
        raise NotImplementedError("the lazyflow double's OpBlockwiseFilesetReader reads no data")

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.Output.setDirty(slice(None))
