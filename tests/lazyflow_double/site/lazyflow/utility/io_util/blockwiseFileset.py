"""lazyflow's ``BlockwiseFilesetFactory`` and stand-ins for lazyflow's own fileset classes.

The factory keeps its creation functions in a ``set`` (iteration order arbitrary); ``create`` returns the
first non-``None`` result, else raises ``RuntimeError``. lazyflow registers its local ``BlockwiseFileset``
here and its older ``RESTfulBlockwiseFileset`` (in ``RESTfulBlockwiseFileset.py``, imported with its
reader): the competitors ``lazyflow_rbfs.operators`` must win against. The stand-ins parse, read nothing.
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
            fileset = fn(descriptionPath, mode)
            if fileset is not None:
                return fileset
        raise RuntimeError(f"Wasn't able to create a blockwise fileset from your file: {descriptionPath} ")


class BlockwiseFileset:
    DescriptionSchema = JsonConfigParser(
        {"_schema_name": "blockwise-fileset-description", "_schema_version": 1.1}
    )

    def __init__(self, descriptionFilePath, mode="r") -> None:
        self.description = self.DescriptionSchema.parseConfigFile(descriptionFilePath)
        self.mode = mode

    @classmethod
    def _createAndReturnBlockwiseFileset(cls, descriptionFilePath, mode):
        try:
            return cls(descriptionFilePath, mode)
        except JsonConfigParser.SchemaError:
            return None

    def close(self) -> None:
        pass


class RESTfulBlockwiseFileset(BlockwiseFileset):
    DescriptionSchema = JsonConfigParser(
        {"_schema_name": "RESTful-blockwise-fileset-description", "_schema_version": 1.0}
    )


BlockwiseFilesetFactory.register(BlockwiseFileset._createAndReturnBlockwiseFileset)
BlockwiseFilesetFactory.register(RESTfulBlockwiseFileset._createAndReturnBlockwiseFileset)
