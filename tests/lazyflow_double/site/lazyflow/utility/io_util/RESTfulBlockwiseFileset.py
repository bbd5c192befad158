"""Stand-in for lazyflow's older ``RESTfulBlockwiseFileset``: claims composite descriptions, reads nothing.

Importing it registers it with ``BlockwiseFilesetFactory``, as lazyflow's module does — the competitor
that ``lazyflow_rbfs.operators`` must win against.
"""

from __future__ import annotations

from lazyflow.utility.io_util.blockwiseFileset import BlockwiseFileset, BlockwiseFilesetFactory
from lazyflow.utility.jsonConfig import JsonConfigParser


class RESTfulBlockwiseFileset(BlockwiseFileset):
    DescriptionFields = {
        "_schema_name": "RESTful-blockwise-fileset-description",
        "_schema_version": 1.0,
        "remote_description": dict,
        "local_description": dict,
    }
    DescriptionSchema = JsonConfigParser(DescriptionFields)

    def __init__(self, compositeDescriptionPath) -> None:
        self.compositeDescription = self.DescriptionSchema.parseConfigFile(compositeDescriptionPath)
        self.mode = "r"

    @classmethod
    def _createAndReturnBlockwiseFileset(cls, descriptionFilePath, mode):
        try:
            return RESTfulBlockwiseFileset(descriptionFilePath)
        except JsonConfigParser.SchemaError:
            return None

    def readData(self, roi, out_array=None):
        raise NotImplementedError("the lazyflow double's old RESTfulBlockwiseFileset reads nothing")


BlockwiseFilesetFactory.register(RESTfulBlockwiseFileset._createAndReturnBlockwiseFileset)
