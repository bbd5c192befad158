"""Reads one dataset of an open h5py file (lazyflow's HDF5 reader, minus N5)."""

from __future__ import annotations

import numpy as np
import vigra

from lazyflow.graph import InputSlot, Operator, OutputSlot

_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "zyxc", 5: "tzyxc"}


class OpStreamingH5N5Reader(Operator):
    H5N5File = InputSlot(stype="h5N5File")
    InternalPath = InputSlot(stype="string")
    OutputImage = OutputSlot()

    class DatasetReadError(Exception):
        def __init__(self, internalPath) -> None:
            self.internalPath = internalPath
            self.msg = f"Unable to open Hdf5 dataset: {internalPath}"
            super().__init__(self.msg)

    def setupOutputs(self) -> None:
        h5file = self.H5N5File.value
        internal = self.InternalPath.value
        if internal not in h5file:
            raise OpStreamingH5N5Reader.DatasetReadError(internal)
        dataset = h5file[internal]
        self.OutputImage.meta.dtype = dataset.dtype.type
        self.OutputImage.meta.shape = dataset.shape
        self.OutputImage.meta.axistags = vigra.defaultAxistags(_DEFAULT_AXES[len(dataset.shape)])
        if dataset.chunks:
            self.OutputImage.meta.ideal_blockshape = dataset.chunks

    def execute(self, slot, subindex, roi, result):
        dataset = self.H5N5File.value[self.InternalPath.value]
        key = roi.toSlice()
        if result.flags.c_contiguous:
            dataset.read_direct(result[...], key)
        else:
            result[...] = np.asarray(dataset[key])
        return result

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.OutputImage.setDirty(slice(None))
