"""ilastik's ``OpInputDataReader``, which opens every input by trying readers in a fixed order.

Kept from ``lazyflow/operators/ioOperators/opInputDataReader.py`` (readers not reached by ``.h5`` or
``.json`` inputs left out; the readers it calls are stand-ins defined here, reading only HDF5 data):

* ``OpInputDataReader(graph=Graph(), WorkingDirectory=..., FilePath=...)`` (as ilastik's
  ``FilesystemDatasetInfo`` builds it) runs the chain right after construction; a relative path waits for
  ``WorkingDirectory``.
* ``setupOutputs`` cleans up the previous internal operators (newest first), then calls the
  ``_attemptOpenAs...(filePath)`` methods in order until one returns ``([operators], output)`` with a
  non-empty list; none: ``RuntimeError("Can't read ... unrecognized format.")``. ``Output`` shows the
  internal output's metadata plus ``ram_per_pixelram_usage_per_requested_pixel`` (lazyflow's
  ``OpMetadataInjector``), computed with ``meta.dtype().nbytes`` (``meta.dtype`` must be a numpy scalar
  *type*) and ``meta.getTaggedShape()`` (``meta.axistags`` must be set).
* For ``.json`` the order is tiled volume, H5BlockStore, blockwise fileset, RESTful blockwise fileset. A
  reader says "not mine" only by raising ``JsonConfigParser.SchemaError``; any other exception aborts the
  chain. The H5BlockStore attempt names ``OpH5BlockStoreReader``, which lazyflow defines only when the
  optional ``quilted`` package imports: without it every ``.json`` ends in ``NameError`` there.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import vigra

from lazyflow.graph import InputSlot, Operator, OutputSlot
from lazyflow.utility.jsonConfig import JsonConfigParser

try:  # lazyflow defines OpH5BlockStoreReader only if this works
    import quilted.h5blockstore  # noqa: F401
except ImportError:
    pass


def _set_meta(slot, shape, dtype, axes) -> None:
    slot.meta.shape = tuple(int(n) for n in shape)
    slot.meta.dtype = np.dtype(str(dtype).removeprefix("numpy.")).type
    slot.meta.axistags = vigra.defaultAxistags(str(axes))


class OpStreamingH5N5Reader(Operator):
    H5N5File = InputSlot()
    InternalPath = InputSlot()
    OutputImage = OutputSlot()

    def setupOutputs(self) -> None:
        dataset = self.H5N5File.value[self.InternalPath.value]
        axes = {2: "yx", 3: "zyx", 4: "zyxc", 5: "tzyxc"}[dataset.ndim]  # lazyflow's defaults by rank
        _set_meta(self.OutputImage, dataset.shape, dataset.dtype, axes)
        if dataset.chunks:
            self.OutputImage.meta.ideal_blockshape = dataset.chunks

    def execute(self, slot, subindex, roi, result):
        result[...] = self.H5N5File.value[self.InternalPath.value][roi.toSlice()]
        return result

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.OutputImage.setDirty()


class _DescribedReader(Operator):
    """What lazyflow's readers of JSON-described volumes share; these stand-ins set metadata, read nothing.

    ``setupOutputs`` raises ``JsonConfigParser.SchemaError`` for a file of another schema ("not mine") and
    ``MissingDatasetError`` for a missing file. (lazyflow's tiled reader calls its output
    ``SpecifiedOutput``; here every one is ``Output``.)
    """

    DescriptionFilePath = InputSlot(stype="filestring")
    Output = OutputSlot()
    schema: tuple[str, float]
    FIELDS = {"local_description": dict, "shape": list, "view_shape": list, "dtype": str, "axes": str}

    class MissingDatasetError(Exception):
        pass

    def setupOutputs(self) -> None:
        path = self.DescriptionFilePath.value
        if not os.path.exists(path):
            raise self.MissingDatasetError(f"Dataset description not found: {path}")
        name, version = self.schema
        parser = JsonConfigParser({"_schema_name": name, "_schema_version": version, **self.FIELDS})
        found = parser.parseConfigFile(path).__dict__
        d = found["local_description"] or found
        _set_meta(self.Output, d.get("view_shape") or d["shape"], d["dtype"], d.get("axes") or "zyx")

    def propagateDirty(self, slot, subindex, roi) -> None:
        self.Output.setDirty()


class OpCachedTiledVolumeReader(_DescribedReader):
    schema = ("tiled-volume-description", 1.0)


class OpBlockwiseFilesetReader(_DescribedReader):
    schema = ("blockwise-fileset-description", 1.1)


class OpRESTfulBlockwiseFilesetReader(_DescribedReader):
    """lazyflow's older reader of composite descriptions (the last ``.json`` reader)."""

    schema = ("RESTful-blockwise-fileset-description", 1.0)


class OpInputDataReader(Operator):
    name = "OpInputDataReader"
    WorkingDirectory = InputSlot(stype="filestring", optional=True)
    FilePath = InputSlot(stype="filestring")
    Output = OutputSlot()

    class DatasetReadError(Exception):
        pass

    def __init__(
        self, WorkingDirectory=None, FilePath=None, SequenceAxis=None, SubVolumeRoi=None, *args, **kw
    ):
        super().__init__(*args, **kw)
        self.internalOperators, self.internalOutput, self._file = [], None, None
        for slot, value in ((self.WorkingDirectory, WorkingDirectory), (self.FilePath, FilePath)):
            if value is not None:
                slot.setValue(value)

    def cleanUp(self) -> None:
        super().cleanUp()
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def setupOutputs(self) -> None:
        path = self.FilePath.value
        if not os.path.isabs(path):
            if not self.WorkingDirectory.ready():
                return
            path = os.path.normpath(os.path.join(self.WorkingDirectory.value, path))
        self.Output.disconnect()
        for op in self.internalOperators[::-1]:
            op.cleanUp()
        self.internalOperators, self.internalOutput = [], None
        self._close_file()
        for attempt in (
            self._attemptOpenAsH5N5,
            self._attemptOpenAsTiledVolume,
            self._attemptOpenAsH5BlockStore,
            self._attemptOpenAsBlockwiseFileset,
            self._attemptOpenAsRESTfulBlockwiseFileset,
        ):
            self.internalOperators, self.internalOutput = attempt(path)
            if self.internalOperators:
                break
        if self.internalOutput is None:
            raise RuntimeError("Can't read " + path + " because it has an unrecognized format.")
        inner, meta = self.internalOutput.meta, self.Output.meta
        meta.clear()
        meta.update(inner)
        if inner.ram_per_pixelram_usage_per_requested_pixel is None:
            ram = inner.dtype().nbytes * inner.getTaggedShape().get("c", 1)
            meta.ram_per_pixelram_usage_per_requested_pixel = ram

    def execute(self, slot, subindex, roi, result):
        return self.internalOutput(roi.start, roi.stop).writeInto(result).wait()

    def propagateDirty(self, slot, subindex, roi) -> None:
        pass

    def _attemptOpenAsH5N5(self, filePath):
        ext = next((e for e in (".h5", ".hdf5", ".ilp") if e in filePath), None)
        if ext is None:
            return [], None
        external, internal = filePath.split(ext)[0] + ext, filePath.split(ext)[1]
        if not os.path.exists(external):
            raise OpInputDataReader.DatasetReadError("Input file does not exist: " + external)
        self._file = h5py.File(external, "r")
        reader = OpStreamingH5N5Reader(parent=self)
        reader.H5N5File.setValue(self._file)
        reader.InternalPath.setValue(internal)
        return [reader], reader.OutputImage

    def _attemptOpenAsTiledVolume(self, filePath):
        return self._open_json(OpCachedTiledVolumeReader, filePath)

    def _attemptOpenAsH5BlockStore(self, filePath):
        if not os.path.splitext(filePath)[1] == ".json":
            return [], None
        op = OpH5BlockStoreReader(parent=self)  # noqa: F821 - a NameError without quilted, as in lazyflow
        op.IndexFilepath.setValue(filePath)
        return [op], op.Output

    def _attemptOpenAsBlockwiseFileset(self, filePath):
        return self._open_json(OpBlockwiseFilesetReader, filePath)

    def _attemptOpenAsRESTfulBlockwiseFileset(self, filePath):
        return self._open_json(OpRESTfulBlockwiseFilesetReader, filePath)

    def _open_json(self, reader_class, filePath):
        """lazyflow's three JSON attempts, written once here: ``SchemaError`` means "not mine"."""
        if os.path.splitext(filePath)[1].lower() != ".json":
            return [], None
        reader = reader_class(parent=self)
        try:
            reader.DescriptionFilePath.setValue(filePath)
            return [reader], reader.Output
        except JsonConfigParser.SchemaError:
            reader.cleanUp()
        except reader_class.MissingDatasetError as e:
            raise OpInputDataReader.DatasetReadError(*e.args) from e
        return [], None
