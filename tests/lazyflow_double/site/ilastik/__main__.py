"""``ilastik.__main__.main()``: reads ``sys.argv`` like ilastik's entry point; models only a headless export.

Modelled from ``ilastik/__main__.py``, ``ilastik/app.py`` and ``applets/dataSelection/opDataSelection.py``:

* ``main()`` takes no arguments and parses ``sys.argv[1:]``; unknown arguments go to the workflow. It
  returns ``None``; bad arguments exit with status 2 (argparse's ``parser.error``). ``--headless`` needs
  ``--project`` (or ``--new_project`` with ``--workflow``), and a ``--project`` file that does not exist
  is a ``RuntimeError``. Without ``--headless`` ilastik would start its GUI; the double exits with 2.
* The workflow arguments ``--raw_data PATH [PATH ...]`` (relative to the working directory; each must
  exist) and ``--output_filename_format FORMAT`` (``{nickname}`` is the input's file name without
  extension). Each input is probed as ``FilesystemDatasetInfo`` does it —
  ``OpInputDataReader(graph=Graph(), WorkingDirectory=cwd, FilePath=path)``, a copy of ``Output.meta``,
  ``cleanUp()``; the axis tags must match the shape and contain ``x`` and ``y`` — then read whole through a
  second reader and written to ``FORMAT`` as dataset ``exported_data``. The project file is not read.
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py


def _app_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="ilastik", description="start an ilastik workflow")
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--project")
    parser.add_argument("--new_project")
    parser.add_argument("--workflow")
    parsed, unknown = parser.parse_known_args(argv)
    if parsed.headless and not parsed.project and not (parsed.new_project and parsed.workflow):
        parser.error(
            "You have to supply at least --project, or --new_project and workflow when invoking ilastik in "
            "headless mode."
        )
    return parsed, unknown


def _workflow_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ilastik workflow")
    parser.add_argument("--raw_data", nargs="+", default=[])
    parser.add_argument("--output_filename_format", default="{nickname}_exported.h5")
    parsed, _ = parser.parse_known_args(argv)
    return parsed


def _probe(path: str) -> dict:
    """What ``FilesystemDatasetInfo.__init__`` learns about an input."""
    from lazyflow.graph import Graph
    from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader

    reader = OpInputDataReader(graph=Graph(), WorkingDirectory=os.getcwd(), FilePath=path)
    meta = reader.Output.meta.copy()
    reader.cleanUp()
    if len(meta.axistags) != len(meta.shape):
        raise Exception(
            f"Unable to load {path}: axis tags {meta.axistags} do not match the shape {meta.shape}"
        )
    keys = [tag.key for tag in meta.axistags]
    if "x" not in keys or "y" not in keys:
        raise Exception("Data must always have at leaset the axes x and y for ilastik to work.")
    return {"shape": meta.shape, "dtype": meta.dtype, "drange": meta.get("drange")}


def main() -> None:
    app_args, workflow_argv = _app_args(sys.argv[1:])
    if not app_args.headless:
        sys.stderr.write("ilastik double: the GUI is not modelled\n")
        sys.exit(2)
    if app_args.project is not None and not os.path.exists(app_args.project):
        raise RuntimeError("Project file '" + app_args.project + "' does not exist.")
    args = _workflow_args(workflow_argv)

    from lazyflow.graph import Graph
    from lazyflow.operators.ioOperators.opInputDataReader import OpInputDataReader

    for raw in args.raw_data:
        external = raw.split(".h5/")[0] + (".h5" if ".h5/" in raw else "")
        if not os.path.exists(external):
            raise RuntimeError("Could not find one or more input files.  See logged errors.")
        info = _probe(raw)
        nickname = os.path.splitext(os.path.basename(external))[0]
        reader = OpInputDataReader(graph=Graph(), WorkingDirectory=os.getcwd(), FilePath=raw)
        try:
            if tuple(reader.Output.meta.shape) != tuple(info["shape"]):
                raise AssertionError("the provider's shape differs from the probed one")
            data = reader.Output[...].wait()
        finally:
            reader.cleanUp()
        with h5py.File(args.output_filename_format.format(nickname=nickname), "w") as f:
            f.create_dataset("exported_data", data=data)


if __name__ == "__main__":
    main()
