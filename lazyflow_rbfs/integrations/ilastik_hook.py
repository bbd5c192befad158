"""Install, remove and inspect the permanent ilastik hook of a Python environment.

``rbfs ilastik --install-hook`` (:func:`install_hook`) writes two files into the site-packages of the
interpreter that runs it (``sysconfig``'s ``purelib``; another directory with ``target``):

* ``_lazyflow_rbfs_ilastik_hook.py``, a copy of :mod:`lazyflow_rbfs.integrations.ilastik_startup`
  (standard library only), and
* ``lazyflow_rbfs_ilastik_hook.pth``, whose one ``import`` line ``site`` runs at every start of that
  interpreter: it registers the start-up module's import hook, which calls
  ``lazyflow_rbfs.ilastik.install()`` right after ilastik's ``OpInputDataReader`` module is imported.

:func:`uninstall_hook` removes both and the module's compiled ``__pycache__`` files; :func:`hook_status`
says what is installed where, and (for a site directory of this interpreter) what a fresh interpreter of
this environment does with it. Both files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import site
import subprocess
import sys
import sysconfig

from lazyflow_rbfs import atomic, errors
from lazyflow_rbfs.integrations import ilastik_startup as startup

__all__ = [
    "HookFiles",
    "HookInstall",
    "HookRemoval",
    "HookStatus",
    "default_site_dir",
    "hook_files",
    "install_hook",
    "uninstall_hook",
    "hook_status",
]

# What a fresh interpreter reports about the hook (run by hook_status; standard library only).
_PROBE = """
import importlib.util, json, os, sys
mark = "_lazyflow_rbfs_ilastik_hook"
result = {
    "registered": any(getattr(f, mark, False) for f in sys.meta_path),
    "module": getattr(sys.modules.get(mark), "__file__", None),
    "lazyflow_rbfs": False,
    "disabled": os.environ.get("RBFS_ILASTIK_HOOK", "").strip().lower() in ("0", "off", "no", "false"),
}
try:
    import lazyflow_rbfs.ilastik as hook
    result["lazyflow_rbfs"] = os.path.dirname(os.path.dirname(os.path.abspath(hook.__file__)))
except Exception as exc:
    result["error"] = type(exc).__name__ + ": " + str(exc)
try:
    result["lazyflow"] = importlib.util.find_spec("lazyflow") is not None
except Exception:
    result["lazyflow"] = False
print(json.dumps(result))
"""
_PROBE_TIMEOUT = 120.0


def default_site_dir() -> str:
    """The site-packages directory of the running interpreter's environment (``sysconfig`` ``purelib``)."""
    return os.path.abspath(sysconfig.get_paths()["purelib"])


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [os.path.realpath(d) for d in dirs]


@dataclasses.dataclass(frozen=True)
class HookFiles:
    """Where the hook's files are (or would be) in one site-packages directory."""

    site_dir: str
    pth: str
    module: str

    def compiled(self) -> list[str]:
        """The start-up module's ``__pycache__`` files that exist."""
        pattern = os.path.join(glob.escape(self.site_dir), "__pycache__", startup.MODULE_NAME + ".*.pyc")
        return sorted(glob.glob(pattern))

    @property
    def on_site_path(self) -> bool:
        """Whether the directory is a site directory of this interpreter (its ``.pth`` files are run)."""
        return os.path.realpath(self.site_dir) in _site_dirs()


def hook_files(target: str | os.PathLike[str] | None = None) -> HookFiles:
    """The hook's file names in ``target`` (default :func:`default_site_dir`)."""
    site_dir = os.path.abspath(os.fspath(target)) if target is not None else default_site_dir()
    return HookFiles(
        site_dir=site_dir,
        pth=os.path.join(site_dir, startup.PTH_NAME),
        module=os.path.join(site_dir, startup.MODULE_NAME + ".py"),
    )


def _module_source() -> bytes:
    with open(startup.__file__, "rb") as file:
        return file.read()


def _pth_text(files: HookFiles) -> str:
    return (
        f"{startup.PTH_MARK}: lets ilastik open lazyflow_rbfs composite descriptions. Written by "
        "`rbfs ilastik --install-hook`; remove with `rbfs ilastik --uninstall-hook`.\n"
        f"{startup.pth_line(files.site_dir)}\n"
    )


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def _is_ours(pth: bytes | None) -> bool:
    return pth is not None and pth.startswith(startup.PTH_MARK.encode())


@dataclasses.dataclass(frozen=True)
class HookInstall:
    """What :func:`install_hook` did."""

    files: HookFiles
    #: The hook was installed there already (its files were rewritten with this version's).
    replaced: bool


def install_hook(target: str | os.PathLike[str] | None = None) -> HookInstall:
    """Install the permanent hook into a site-packages directory (idempotent).

    Parameters
    ----------
    target
        The site-packages directory; default :func:`default_site_dir`, the running interpreter's. A
        directory that is not a site directory of the interpreter that should run ilastik does nothing
        there (``site`` runs ``.pth`` files only in site directories).

    Returns
    -------
    HookInstall
        The files written, and whether the hook was installed there before.

    Raises
    ------
    ArgumentError
        ``target`` is not an existing directory, or a ``.pth`` of that name exists and is not ours.
    CacheWriteError
        The directory is not writable (permissions, read-only file system, full disk).
    """
    files = hook_files(target)
    if not os.path.isdir(files.site_dir):
        raise errors.ArgumentError(
            f"cannot install the ilastik hook into {files.site_dir}: expected an existing site-packages "
            "directory, found none"
        )
    existing = _read(files.pth)
    if existing is not None and not _is_ours(existing):
        raise errors.ArgumentError(
            f"cannot install the ilastik hook: {files.pth} exists and was not written by lazyflow_rbfs "
            f"(expected its first line to start with {startup.PTH_MARK!r}); move it away first"
        )
    replaced = existing is not None and os.path.exists(files.module)
    # The module first: the .pth must never point at a module that is not there yet.
    atomic.write_bytes(files.module, _module_source(), mode=0o644)
    for compiled in files.compiled():  # never let a stale compiled copy shadow the new source
        _remove(compiled)
    atomic.write_bytes(files.pth, _pth_text(files).encode(), mode=0o644)
    return HookInstall(files=files, replaced=replaced)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise errors.CacheWriteError.from_os_error(exc, path, "remove") from exc
    return True


@dataclasses.dataclass(frozen=True)
class HookRemoval:
    """What :func:`uninstall_hook` did."""

    files: HookFiles
    #: The files removed (empty: the hook was not installed there).
    removed: tuple[str, ...]


def uninstall_hook(target: str | os.PathLike[str] | None = None) -> HookRemoval:
    """Remove the hook's files from a site-packages directory (idempotent).

    Removes the ``.pth`` file (only if it is ours), the start-up module and its ``__pycache__`` files.
    Interpreters running already keep the hook until they exit.

    Raises
    ------
    ArgumentError
        A ``.pth`` of that name exists and is not ours (it is left alone, and so is everything else).
    CacheWriteError
        A file could not be removed (permissions, read-only file system).
    """
    files = hook_files(target)
    existing = _read(files.pth)
    if existing is not None and not _is_ours(existing):
        raise errors.ArgumentError(
            f"not removing {files.pth}: it was not written by lazyflow_rbfs (expected its first line to "
            f"start with {startup.PTH_MARK!r})"
        )
    removed = []
    # The .pth first: the module must never be missing while the .pth still loads it.
    compiled = files.compiled()
    for path in [files.pth, files.module, *compiled]:
        if _remove(path):
            removed.append(path)
    if compiled:  # a __pycache__ that only our module's import created goes too
        try:
            os.rmdir(os.path.dirname(compiled[0]))
        except OSError:
            pass  # not empty: other modules' files are there
        else:
            removed.append(os.path.dirname(compiled[0]))
    return HookRemoval(files=files, removed=tuple(removed))


@dataclasses.dataclass(frozen=True)
class HookStatus:
    """What :func:`hook_status` found."""

    files: HookFiles
    #: Both files are there and the ``.pth`` is ours.
    installed: bool
    #: The files present, of ``files.pth`` and ``files.module``.
    present: tuple[str, ...]
    #: The installed files are those this version of lazyflow_rbfs writes.
    current: bool
    #: The directory is a site directory of this interpreter (so a fresh one was asked, see ``probe``).
    on_site_path: bool
    #: What a fresh interpreter of this environment reported (``None``: not asked). Keys: ``registered``
    #: (the hook's finder is in ``sys.meta_path``), ``module`` (the start-up module's file),
    #: ``lazyflow_rbfs`` (directory the package imports from, or ``False``), ``error`` (why it does not
    #: import), ``lazyflow`` (importable), ``disabled`` (``RBFS_ILASTIK_HOOK=0`` is set).
    probe: dict | None
    #: What is wrong, one sentence each, with what to do.
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Installed, current, and (if asked) a fresh interpreter loads it and can import the package."""
        return self.installed and not self.problems


def _probe(site_dir: str, timeout: float) -> dict:
    # Run in site_dir: `-c` puts the working directory first on sys.path, and a checkout there must not
    # make lazyflow_rbfs look importable.
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=site_dir,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        return {"probe_error": f"{type(exc).__name__}: {exc}"}


def hook_status(target: str | os.PathLike[str] | None = None, *, probe: bool = True) -> HookStatus:
    """Whether the hook is installed in a site-packages directory, and whether it works there.

    Parameters
    ----------
    target
        The site-packages directory; default :func:`default_site_dir`.
    probe
        If the directory is a site directory of this interpreter, start a fresh one (``sys.executable``,
        this environment) and report whether it loads the hook and can import ``lazyflow_rbfs.ilastik``.
    """
    files = hook_files(target)
    pth, module = _read(files.pth), _read(files.module)
    present = tuple(p for p, c in ((files.pth, pth), (files.module, module)) if c is not None)
    installed = _is_ours(pth) and module is not None
    problems = []
    current = installed and module == _module_source() and pth == _pth_text(files).encode()
    if pth is not None and not _is_ours(pth):
        problems.append(f"{files.pth} was not written by lazyflow_rbfs")
    elif pth is not None and module is None:
        problems.append(
            f"{files.module} is missing: run rbfs ilastik --install-hook again, or --uninstall-hook"
        )
    elif pth is None and module is not None:
        problems.append(f"{files.pth} is missing: run rbfs ilastik --install-hook again, or --uninstall-hook")
    elif installed and not current:
        problems.append(
            "the installed files are from another version of lazyflow_rbfs: run rbfs ilastik "
            "--install-hook again"
        )
    on_site_path = files.on_site_path
    found = None
    if installed and not on_site_path:
        problems.append(
            f"{files.site_dir} is not a site directory of this interpreter ({sys.executable}): only an "
            "interpreter whose site directories include it runs the hook"
        )
    if installed and on_site_path and probe:
        found = _probe(files.site_dir, _PROBE_TIMEOUT)
        if "probe_error" in found:
            problems.append(f"could not start {sys.executable} to check: {found['probe_error']}")
        elif found.get("disabled"):
            problems.append("RBFS_ILASTIK_HOOK=0 is set here: interpreters start without the hook")
        elif not found.get("registered"):
            problems.append(f"a fresh {sys.executable} does not load the hook (is it started with -S?)")
        if "error" in found:
            problems.append(
                f"a fresh {sys.executable} cannot import lazyflow_rbfs.ilastik ({found['error']}): ilastik "
                "would start without the hook, with a warning"
            )
    return HookStatus(
        files=files,
        installed=installed,
        present=present,
        current=current,
        on_site_path=on_site_path,
        probe=found,
        problems=tuple(problems),
    )
