"""``JsonConfigParser`` as the .json reader chain uses it: parse a file, say "not mine" by ``SchemaError``.

Modelled: the top level must be a JSON object; ``_schema_name`` must equal the schema's, and
``_schema_version`` must not be newer than the schema's nor of a lower major version, else
``JsonConfigParser.SchemaError`` (a ``ParsingError``). Invalid JSON raises the json module's error
(lazyflow lets it through too). Values are kept as parsed from JSON (no type conversion).
"""

from __future__ import annotations

import json
from collections import OrderedDict


class Namespace:
    def __init__(self, items=None) -> None:
        object.__setattr__(self, "_items", OrderedDict(items or {}))

    def __getattr__(self, key: str):
        items = object.__getattribute__(self, "_items")
        if key in items:
            return items[key]
        raise AttributeError(key)

    def __setattr__(self, key: str, value) -> None:
        self._items[key] = value

    @property
    def __dict__(self):
        return self._items


class JsonConfigParser:
    class ParsingError(Exception):
        pass

    class SchemaError(ParsingError):
        pass

    def __init__(self, fields: dict) -> None:
        self._fields = dict(fields)
        self._requiredSchemaName = self._fields["_schema_name"]
        self._expectedSchemaVersion = float(self._fields["_schema_version"])

    def parseConfigFile(self, configFilePath: str) -> Namespace:
        with open(configFilePath) as f:
            obj = json.load(f, object_pairs_hook=OrderedDict)
        return self._getNamespace(obj)

    def __call__(self, value) -> Namespace:
        return self._getNamespace(value)

    def _getNamespace(self, obj) -> Namespace:
        if not isinstance(obj, dict):
            raise JsonConfigParser.ParsingError(f"Expected a collections.OrderedDict, got a {type(obj)}")
        namespace = Namespace()
        for key in self._fields:
            setattr(namespace, key.replace(" ", "_"), None)
        for key, value in obj.items():
            if key in self._fields:
                setattr(namespace, key.replace(" ", "_"), value)
        name = namespace._schema_name
        if name != self._requiredSchemaName:
            raise JsonConfigParser.SchemaError(
                f"File schema '{name}' does not match required schema '{self._requiredSchemaName}'"
            )
        try:
            version = float(namespace._schema_version)
        except (TypeError, ValueError):
            raise JsonConfigParser.ParsingError(
                f"invalid _schema_version {namespace._schema_version!r}"
            ) from None
        if version > self._expectedSchemaVersion or int(version) < int(self._expectedSchemaVersion):
            raise JsonConfigParser.SchemaError(
                f"File schema version '{version}' is not compatible with expected schema version "
                f"'{self._expectedSchemaVersion}'"
            )
        return namespace
