"""ilastik's ``OpInputDataReader``: picks a reader by trying them in a fixed order.

Modelled from ``lazyflow/operators/ioOperators/opInputDataReader.py``:

* ``__init__(WorkingDirectory=None, FilePath=None, SequenceAxis=None, SubVolumeRoi=None, *args,
  **kwargs)``: ilastik's ``FilesystemDatasetInfo`` builds it as
  ``OpInputDataReader(graph=Graph(), WorkingDirectory=..., FilePath=...)``, so the whole chain runs during
  construction (in ``_after_init``).
* ``setupOutputs`` cleans up the previous internal operators (the metadata injector first, then the
  readers in reverse), builds the list of bound ``_attemptOpenAs...`` methods each time, calls them in
  order until one returns ``([operators], output)`` with a non-empty list, raises ``RuntimeError("Can't
  read ... unrecognized format.")`` if none does, and connects ``Output`` through an
  ``OpMetadataInjector`` that adds ``ram_per_pixelram_usage_per_requested_pixel`` computed as
  ``meta.dtype().nbytes`` (so ``meta.dtype`` must be a numpy scalar *type*) times the ``c`` extent from
  ``meta.getTaggedShape()`` (so ``meta.axistags`` must be set).
* For ``.json`` the order is tiled volume, H5BlockStore, blockwise fileset, RESTful blockwise fileset. A
  reader says "not mine" only by raising ``JsonConfigParser.SchemaError`` from ``setValue``; any other
  exception aborts the chain. The H5BlockStore attempt names ``OpH5BlockStoreReader``, which only exists
  when ``quilted`` is installed, so without it every ``.json`` ends in ``NameError`` there.
"""

from __future__ import annotations

import os

import h5py

from lazyflow.graph import InputSlot, Operator, OutputSlot
from lazyflow.operators.ioOperators import (
    OpBlockwiseFilesetReader,
    OpCachedTiledVolumeReader,
    OpRESTfulBlockwiseFilesetReader,
    OpStreamingH5N5Reader,
)
from lazyflow.utility.jsonConfig import JsonConfigParser

try:
    from lazyflow.operators.ioOperators.opH5BlockStoreReader import OpH5BlockStoreReader  # noqa: F401

    _supports_h5blockreader = True
except ImportError:
    _supports_h5blockreader = False


class OpMetadataInjector(Operator):
    """Passes ``Input`` through with extra metadata (lazyflow's ``OpMetadataInjector``)."""

    Input = InputSlot()
    Metadata = InputSlot()
    Output = OutputSlot()

    def setupOutputs(self) -> None:
        self.Output.meta.clear()
        self.Output.meta.update(self.Input.meta)
        self.Output.meta.update(self.Metadata.value)
        self.Output.meta._ready = False

    def execute(self, slot, subindex, roi, result):
        return self.Input(roi.start, roi.stop).writeInto(result).wait()

    def propagateDirty(self, slot, subindex, roi) -> None:
        if slot is self.Input:
            self.Output.setDirty(roi)
        else:
            self.Output.setDirty(slice(None))


class OpInputDataReader(Operator):
    name = "OpInputDataReader"
    category = "Input"

    h5_n5_Exts = ["h5", "hdf5", "ilp"]
    blockwiseExts = ["json"]
    tiledExts = ["json"]
    SupportedExtensions = h5_n5_Exts + blockwiseExts

    WorkingDirectory = InputSlot(stype="filestring", optional=True)
    FilePath = InputSlot(stype="filestring")
    Output = OutputSlot()

    class DatasetReadError(Exception):
        pass

    def __init__(
        self, WorkingDirectory=None, FilePath=None, SequenceAxis=None, SubVolumeRoi=None, *args, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.internalOperators = []
        self.internalOutput = None
        self._file = None
        self.WorkingDirectory.setOrConnectIfAvailable(WorkingDirectory)
        self.FilePath.setOrConnectIfAvailable(FilePath)

    def cleanUp(self) -> None:
        super().cleanUp()
        if self._file is not None:
            self._file.close()
            self._file = None

    def setupOutputs(self) -> None:
        filePath = self.FilePath.value
        if not os.path.isabs(filePath):
            if not self.WorkingDirectory.ready():
                return
            filePath = os.path.normpath(os.path.join(self.WorkingDirectory.value, filePath))

        if self.internalOperators:
            self.Output.disconnect()
            self.opInjector.cleanUp()
            for op in self.internalOperators[::-1]:
                op.cleanUp()
            self.internalOperators = []
            self.internalOutput = None
        if self._file is not None:
            self._file.close()
            self._file = None

        openFuncs = [
            self._attemptOpenAsH5N5,
            self._attemptOpenAsTiledVolume,
            self._attemptOpenAsH5BlockStore,
            self._attemptOpenAsBlockwiseFileset,
            self._attemptOpenAsRESTfulBlockwiseFileset,
        ]
        iterFunc = iter(openFuncs)
        while not self.internalOperators:
            try:
                openFunc = next(iterFunc)
            except StopIteration:
                break
            self.internalOperators, self.internalOutput = openFunc(filePath)

        if self.internalOutput is None:
            raise RuntimeError("Can't read " + filePath + " because it has an unrecognized format.")

        self.opInjector = OpMetadataInjector(parent=self)
        self.opInjector.Input.connect(self.internalOutput)
        meta = self.internalOutput.meta
        if meta.ram_per_pixelram_usage_per_requested_pixel is None:
            ram_per_pixel = meta.dtype().nbytes
            if "c" in meta.getTaggedShape():
                ram_per_pixel *= meta.getTaggedShape()["c"]
            self.opInjector.Metadata.setValue({"ram_per_pixelram_usage_per_requested_pixel": ram_per_pixel})
        else:
            self.opInjector.Metadata.setValue({})
        self.Output.connect(self.opInjector.Output)

    def _attemptOpenAsH5N5(self, filePath):
        for ext in (".h5", ".hdf5", ".ilp"):
            if ext in filePath:
                break
        else:
            return ([], None)
        externalPath, internalPath = filePath.split(ext)[0] + ext, filePath.split(ext)[1]
        if not os.path.exists(externalPath):
            raise OpInputDataReader.DatasetReadError("Input file does not exist: " + externalPath)
        h5file = h5py.File(externalPath, "r")
        if not internalPath:
            names = []
            h5file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            if len(names) != 1:
                h5file.close()
                raise OpInputDataReader.DatasetReadError(
                    f"When using hdf5, you must append the internal path to the filename: {externalPath}"
                )
            internalPath = "/" + names[0]
        self._file = h5file
        reader = OpStreamingH5N5Reader(parent=self)
        reader.H5N5File.setValue(h5file)
        try:
            reader.InternalPath.setValue(internalPath)
        except OpStreamingH5N5Reader.DatasetReadError as e:
            raise OpInputDataReader.DatasetReadError(
                f"Error reading H5/N5 File: {externalPath}\n{e.msg}"
            ) from e
        return ([reader], reader.OutputImage)

    def _attemptOpenAsH5BlockStore(self, filePath):
        if not os.path.splitext(filePath)[1] == ".json":
            return ([], None)
        op = OpH5BlockStoreReader(parent=self)  # noqa: F821 - NameError without quilted, as in lazyflow
        op.IndexFilepath.setValue(filePath)
        return [op], op.Output

    def _attemptOpenAsBlockwiseFileset(self, filePath):
        fileExtension = os.path.splitext(filePath)[1].lower().lstrip(".")
        if fileExtension in OpInputDataReader.blockwiseExts:
            opReader = OpBlockwiseFilesetReader(parent=self)
            try:
                opReader.DescriptionFilePath.setValue(filePath)
                return ([opReader], opReader.Output)
            except JsonConfigParser.SchemaError:
                opReader.cleanUp()
            except OpBlockwiseFilesetReader.MissingDatasetError as e:
                raise OpInputDataReader.DatasetReadError(*e.args) from e
        return ([], None)

    def _attemptOpenAsRESTfulBlockwiseFileset(self, filePath):
        fileExtension = os.path.splitext(filePath)[1].lower().lstrip(".")
        if fileExtension in OpInputDataReader.blockwiseExts:
            opReader = OpRESTfulBlockwiseFilesetReader(parent=self)
            try:
                opReader.DescriptionFilePath.setValue(filePath)
                return ([opReader], opReader.Output)
            except JsonConfigParser.SchemaError:
                opReader.cleanUp()
            except OpRESTfulBlockwiseFilesetReader.MissingDatasetError as e:
                raise OpInputDataReader.DatasetReadError(*e.args) from e
        return ([], None)

    def _attemptOpenAsTiledVolume(self, filePath):
        fileExtension = os.path.splitext(filePath)[1].lower().lstrip(".")
        if fileExtension in OpInputDataReader.tiledExts:
            opReader = OpCachedTiledVolumeReader(parent=self)
            try:
                opReader.DescriptionFilePath.setValue(filePath)
                return ([opReader], opReader.SpecifiedOutput)
            except JsonConfigParser.SchemaError:
                opReader.cleanUp()
        return ([], None)

    def execute(self, slot, subindex, roi, result):
        raise AssertionError("Shouldn't get here because our output is directly connected...")

    def propagateDirty(self, slot, subindex, roi) -> None:
        pass
