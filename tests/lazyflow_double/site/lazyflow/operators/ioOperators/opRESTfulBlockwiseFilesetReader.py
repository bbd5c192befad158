"""lazyflow's older RESTful reader: opens composite descriptions (metadata only in the double)."""

from __future__ import annotations

import os

from lazyflow.graph import InputSlot, Operator, OutputSlot
from lazyflow.operators.ioOperators._described import set_meta
from lazyflow.utility.io_util.RESTfulBlockwiseFileset import RESTfulBlockwiseFileset


class OpRESTfulBlockwiseFilesetReader(Operator):
    DescriptionFilePath = InputSlot(stype="filestring")
    Output = OutputSlot()

    class MissingDatasetError(Exception):
        pass

    def setupOutputs(self) -> None:
        path = self.DescriptionFilePath.value
        if not os.path.exists(path):
            raise OpRESTfulBlockwiseFilesetReader.MissingDatasetError(
                f"Dataset description not found: {path}"
            )
        local = RESTfulBlockwiseFileset(path).compositeDescription.local_description
        set_meta(self.Output, local.get("view_shape") or local["shape"], local["dtype"], local["axes"])

    def execute(self, slot, subindex, roi, result):
        raise NotImplementedError("the lazyflow double's old OpRESTfulBlockwiseFilesetReader reads no data")

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.Output.setDirty(slice(None))
