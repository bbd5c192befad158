"""The start-up module of the permanent ilastik hook (``rbfs ilastik --install-hook``).

``rbfs ilastik --install-hook`` copies this file, unchanged, into an environment's site-packages as
``_lazyflow_rbfs_ilastik_hook.py`` (:data:`MODULE_NAME`) and writes ``lazyflow_rbfs_ilastik_hook.pth``
(:data:`PTH_NAME`) next to it, whose one line (:func:`pth_line`) calls :func:`register` at every start of
that environment's interpreter. :func:`register` only puts an :class:`ImportHook` at the front of
``sys.meta_path``: when ilastik's ``OpInputDataReader`` module (:data:`TARGET`) is imported later, the
hook lets the normal import run, then calls ``lazyflow_rbfs.ilastik.install()`` (:data:`APPLY`). A process
that never imports lazyflow imports nothing more (not even ``lazyflow_rbfs``).

Nothing here may stop an interpreter from starting: :func:`register` and the apply step catch every
``Exception`` and log a warning (``logging`` at WARNING: on stderr unless the program configured logging,
in ilastik's log if it did). The file must therefore import only what every interpreter has loaded at
start-up (``os``, ``sys``), and nothing of ``lazyflow_rbfs``, whose absence it must survive; ``logging``
and ``importlib`` are imported only when needed. For the same reason it has no
``from __future__ import annotations`` (that import loads a module at start-up) and its annotations are
plain builtins.

Set the environment variable ``RBFS_ILASTIK_HOOK=0`` to start an interpreter without the hook (to rule it
out when something goes wrong) without uninstalling it.
"""

import os
import sys

#: The installed copy of this file: a top-level module in site-packages (outside the package, so loading
#: it never imports ``lazyflow_rbfs``).
MODULE_NAME = "_lazyflow_rbfs_ilastik_hook"
#: The start-up file that loads it.
PTH_NAME = "lazyflow_rbfs_ilastik_hook.pth"
#: First line of the start-up file: how uninstall and status recognise it as ours.
PTH_MARK = "# lazyflow_rbfs ilastik hook"
#: The module after whose import the hook is applied (ilastik's ``OpInputDataReader``).
TARGET = "lazyflow.operators.ioOperators.opInputDataReader"
#: The module whose ``install()`` applies the hook.
APPLY = "lazyflow_rbfs.ilastik"
#: Environment variable: ``0`` (or ``off``, ``no``, ``false``) starts the interpreter without the hook.
DISABLE_VARIABLE = "RBFS_ILASTIK_HOOK"
#: Name of the logger the warnings go to.
LOGGER_NAME = "lazyflow_rbfs.ilastik_hook"
# Marks our finder in sys.meta_path (an attribute, not a class check: the module may be loaded twice under
# two names, the installed copy and lazyflow_rbfs.integrations.ilastik_startup).
_FINDER_MARK = "_lazyflow_rbfs_ilastik_hook"


def pth_line(site_dir: str = "site-packages") -> str:
    """The line of the ``.pth`` file: load :data:`MODULE_NAME` and call :func:`register`, never raising.

    ``site`` executes a ``.pth`` line that starts with ``import``; an exception there would print a
    traceback. So the line imports the module only if its file is on ``sys.path`` (one ``stat`` per
    entry, with ``os`` and ``sys``, which are loaded already), and otherwise writes a one-line warning
    naming the file to remove (in ``site_dir``). :func:`register` catches everything else.
    """
    file = MODULE_NAME + ".py"
    orphan = (
        f"warning: lazyflow_rbfs: {os.path.join(site_dir, PTH_NAME)} is left without its module {file}: "
        "run rbfs ilastik --uninstall-hook, or delete that file\n"
    )
    return (
        "import os, sys; "
        f"__import__({MODULE_NAME!r}).register() "
        "if any(map(os.path.isfile, map(os.path.join, map(str, sys.path), "
        f"[{file!r}] * len(sys.path)))) "
        f"else sys.stderr.write({orphan!r})"
    )


def _warn(message: str) -> None:
    import logging

    logging.getLogger(LOGGER_NAME).warning("%s", message)


def _where() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return f"{os.path.join(here, PTH_NAME)} and {os.path.join(here, MODULE_NAME + '.py')}"


def _disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() in ("0", "off", "no", "false")


def apply() -> bool:
    """Run ``lazyflow_rbfs.ilastik.install()``; on any failure log a warning and return ``False``."""
    try:
        import importlib

        importlib.import_module(APPLY).install()
    except Exception as exc:  # noqa: BLE001 - ilastik must start whatever happens here
        _warn(
            f"lazyflow_rbfs: the ilastik hook could not be applied ({type(exc).__name__}: {exc}); ilastik "
            "runs without it and will not open composite descriptions (.json) or projects that use them. "
            "Fix or reinstall lazyflow_rbfs in this environment, or remove the hook: "
            f"rbfs ilastik --uninstall-hook (or delete {_where()})"
        )
        return False
    return True


class _ApplyAfterExec:
    """A loader that runs the original loader, then :func:`apply`; every other attribute is the original's."""

    def __init__(self, loader: object) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> object:
        return getattr(self.loader, name)

    def create_module(self, spec: object) -> object:
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: object) -> None:
        self.loader.exec_module(module)
        # From now on the module shows its own loader, as if no hook had been there.
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        apply()


class ImportHook:
    """A ``sys.meta_path`` finder that applies the hook right after :data:`TARGET` is imported.

    For every other module it returns ``None`` at once (one string comparison). For :data:`TARGET` it
    asks the other finders, as the import system would, and wraps the loader of the spec they return.
    """

    _lazyflow_rbfs_ilastik_hook = True

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != TARGET:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if getattr(finder, _FINDER_MARK, False) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if getattr(spec, "loader", None) is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ApplyAfterExec(spec.loader)
        return spec

    def __repr__(self) -> str:
        return f"<lazyflow_rbfs ilastik hook for {TARGET}>"


def registered() -> bool:
    """Whether an :class:`ImportHook` (of any copy of this module) is in ``sys.meta_path``."""
    return any(getattr(finder, _FINDER_MARK, False) for finder in sys.meta_path)


def register() -> None:
    """Put an :class:`ImportHook` at the front of ``sys.meta_path`` (once); never raises.

    If :data:`TARGET` is imported already, the hook is applied at once. Nothing happens when the
    environment variable :data:`DISABLE_VARIABLE` is ``0``.
    """
    try:
        if _disabled():
            return
        if not registered():
            sys.meta_path.insert(0, ImportHook())
        if TARGET in sys.modules:
            apply()
    except Exception as exc:  # noqa: BLE001 - the interpreter must start whatever happens here
        _warn(f"lazyflow_rbfs: the ilastik hook could not be registered ({type(exc).__name__}: {exc})")


def unregister() -> None:
    """Remove every :class:`ImportHook` from ``sys.meta_path`` (does not undo an applied hook)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _FINDER_MARK, False)]
