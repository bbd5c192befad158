"""lazyflow's ``BlockwiseFilesetFactory`` (faithful) and a stand-in for lazyflow's own ``BlockwiseFileset``.

The factory keeps its creation functions in a ``set`` (iteration order arbitrary) and ``create`` returns the
first non-``None`` result, else raises ``RuntimeError``. Importing this module registers lazyflow's own
local fileset class, as lazyflow does.
"""

from __future__ import annotations

from lazyflow.utility.jsonConfig import JsonConfigParser


class BlockwiseFilesetFactory:
    creationFns: set = set()

    @classmethod
    def register(cls, creationFn) -> None:
        BlockwiseFilesetFactory.creationFns.add(creationFn)

    @classmethod
    def create(cls, descriptionPath, mode):
        for fn in BlockwiseFilesetFactory.creationFns:
            bfs = fn(descriptionPath, mode)
            if bfs is not None:
                return bfs
        raise RuntimeError(f"Wasn't able to create a blockwise fileset from your file: {descriptionPath} ")


class BlockwiseFileset:
    """Stand-in for lazyflow's local fileset: parses the description, reads nothing."""

    DescriptionFields = {"_schema_name": "blockwise-fileset-description", "_schema_version": 1.1}
    DescriptionSchema = JsonConfigParser(DescriptionFields)

    def __init__(self, descriptionFilePath, mode="r", preparsedDescription=None) -> None:
        self.mode = mode
        self._descriptionFilePath = descriptionFilePath
        self.description = preparsedDescription or self.DescriptionSchema.parseConfigFile(descriptionFilePath)

    @classmethod
    def _createAndReturnBlockwiseFileset(cls, descriptionFilePath, mode):
        try:
            return BlockwiseFileset(descriptionFilePath, mode)
        except JsonConfigParser.SchemaError:
            return None

    def close(self) -> None:
        pass


BlockwiseFilesetFactory.register(BlockwiseFileset._createAndReturnBlockwiseFileset)
