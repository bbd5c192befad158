"""``JsonConfigParser`` as the ``.json`` readers use it: parse a file; say "not mine" by ``SchemaError``.

Kept: the top level must be a JSON object; ``_schema_name`` must equal the schema's, and
``_schema_version`` must be neither newer than the schema's nor of a lower major version, else
``JsonConfigParser.SchemaError`` (a ``ParsingError``). Values stay as parsed (no field conversion).
"""

from __future__ import annotations

import json
from types import SimpleNamespace


class JsonConfigParser:
    class ParsingError(Exception):
        pass

    class SchemaError(ParsingError):
        pass

    def __init__(self, fields: dict) -> None:
        self._fields = dict(fields)

    def parseConfigFile(self, configFilePath: str) -> SimpleNamespace:
        with open(configFilePath) as f:
            obj = json.load(f)
        if not isinstance(obj, dict):
            raise JsonConfigParser.ParsingError(f"Expected a JSON object, got a {type(obj)}")
        name, version = obj.get("_schema_name"), obj.get("_schema_version")
        if name != self._fields["_schema_name"]:
            raise JsonConfigParser.SchemaError(
                f"File schema '{name}' does not match required schema '{self._fields['_schema_name']}'"
            )
        expected = float(self._fields["_schema_version"])
        if not isinstance(version, (int, float)) or version > expected or int(version) < int(expected):
            raise JsonConfigParser.SchemaError(
                f"File schema version '{version}' is not compatible with expected schema version '{expected}'"
            )
        return SimpleNamespace(**{key: obj.get(key) for key in self._fields})
