from lazyflow.operators.ioOperators.opBlockwiseFilesetReader import OpBlockwiseFilesetReader
from lazyflow.operators.ioOperators.opCachedTiledVolumeReader import OpCachedTiledVolumeReader
from lazyflow.operators.ioOperators.opRESTfulBlockwiseFilesetReader import OpRESTfulBlockwiseFilesetReader
from lazyflow.operators.ioOperators.opStreamingH5N5Reader import OpStreamingH5N5Reader

from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader  # isort: skip

__all__ = [
    "OpBlockwiseFilesetReader",
    "OpCachedTiledVolumeReader",
    "OpInputDataReader",
    "OpRESTfulBlockwiseFilesetReader",
    "OpStreamingH5N5Reader",
]
