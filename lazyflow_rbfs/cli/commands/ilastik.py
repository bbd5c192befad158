"""``rbfs ilastik``: run ilastik with the lazyflow_rbfs hook, or install the hook permanently.

* ``rbfs ilastik [--] ILASTIK_ARGS...`` runs ilastik with the hook installed. ilastik's arguments are
  never parsed here: :func:`lazyflow_rbfs.cli.main` hands them to :func:`run_ilastik` untouched
  (:func:`launch_args` tells them apart from ours).
* ``rbfs ilastik --install-hook | --uninstall-hook | --hook-status [--target DIR]`` manage the permanent
  hook (:mod:`lazyflow_rbfs.integrations.ilastik_hook`); ``rbfs ilastik --help`` shows this command's
  help and ``rbfs ilastik -- --help`` ilastik's.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from lazyflow_rbfs.cli.args import AddCommand
from lazyflow_rbfs.cli.exits import EXIT_FAILURE, EXIT_OK, Failure, Unavailable, UsageError
from lazyflow_rbfs.errors import CacheWriteError

__all__ = ["add_ilastik", "run_ilastik", "launch_args"]

logger = logging.getLogger(__name__)

_HOOK_FLAGS = ("--install-hook", "--uninstall-hook", "--hook-status")
_OWN_FIRST = ("-h", "--help", "--target", *_HOOK_FLAGS)

_DESCRIPTION = """\
Run ilastik with the lazyflow_rbfs hook installed, so that it opens composite descriptions (.json):
'rbfs ilastik' starts the GUI, 'rbfs ilastik -- ARGS...' passes ARGS to ilastik (e.g. -- --headless
--project=pc.ilp --raw_data=volume.json); the exit status is ilastik's. Or make the hook permanent for
this Python environment, so that plain ilastik (desktop launcher, run_ilastik.sh) opens them and reopens
projects that use them: --install-hook, --uninstall-hook, --hook-status."""

_EPILOG = """\
'rbfs ilastik -- --help' shows ilastik's own help. --hook-status exits with 0 if the hook is installed
and works, 1 otherwise. Set RBFS_ILASTIK_HOOK=0 to start ilastik once without an installed hook."""


def add_ilastik(command: AddCommand) -> None:
    p = command("ilastik", "Run ilastik with the lazyflow_rbfs hook, or install the hook permanently")
    p.description = _DESCRIPTION
    p.epilog = _EPILOG
    hook = p.add_mutually_exclusive_group()
    hook.add_argument(
        "--install-hook",
        dest="hook_action",
        action="store_const",
        const="install",
        help="install the hook permanently into this Python environment's site-packages (a .pth file "
        "and a small module; idempotent)",
    )
    hook.add_argument(
        "--uninstall-hook",
        dest="hook_action",
        action="store_const",
        const="uninstall",
        help="remove every file --install-hook wrote",
    )
    hook.add_argument(
        "--hook-status",
        dest="hook_action",
        action="store_const",
        const="status",
        help="say whether the hook is installed, where, and whether it works in a fresh interpreter",
    )
    p.add_argument(
        "--target",
        metavar="DIR",
        help="the site-packages directory for the three options above (default: this interpreter's, "
        f"{_default_site_dir_text()})",
    )
    p.add_argument(
        "ilastik_args",
        nargs=argparse.REMAINDER,
        metavar="-- ILASTIK_ARGS",
        help="ilastik's own arguments",
    )
    p.set_defaults(func=_cmd_ilastik, hook_action=None)


def _default_site_dir_text() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"].replace("%", "%%")


def launch_args(rest: list[str]) -> list[str] | None:
    """The words after ``rbfs [-v] ilastik``: ilastik's arguments for a launch, or ``None`` if they are
    this command's own (``--help``, the hook options), to be parsed as usual."""
    if rest[:1] == ["--"]:
        return rest[1:]
    head = rest[: rest.index("--")] if "--" in rest else rest
    first = rest[0] if rest else ""
    if first in _OWN_FIRST or first.startswith("--target=") or any(word in _HOOK_FLAGS for word in head):
        return None
    return rest


def _cmd_ilastik(args: argparse.Namespace) -> int:
    forwarded = list(args.ilastik_args)
    if forwarded[:1] == ["--"]:
        forwarded = forwarded[1:]
    action = args.hook_action
    if action is None:
        if args.target is not None:
            raise UsageError("--target goes with --install-hook, --uninstall-hook or --hook-status")
        return run_ilastik(forwarded)
    if forwarded:
        flag = {"install": "--install-hook", "uninstall": "--uninstall-hook"}.get(action, "--hook-status")
        raise UsageError(f"{flag} takes no ilastik arguments, found {' '.join(forwarded)!r}")
    hook = _hook_module()
    try:
        if action == "install":
            return _install(hook, args.target)
        if action == "uninstall":
            return _uninstall(hook, args.target)
        return _status(hook, args.target)
    except CacheWriteError as exc:
        raise Failure(
            f"{exc} (run as the owner of this Python environment, or name another site-packages directory "
            "with --target)"
        ) from exc


def _hook_module() -> ModuleType:
    try:
        return importlib.import_module("lazyflow_rbfs.ilastik")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        logger.debug("importing lazyflow_rbfs.ilastik failed", exc_info=True)
        raise Unavailable(f"the ilastik integration is not available: {type(exc).__name__}: {exc}") from exc


def _install(hook: ModuleType, target: str | None) -> int:
    done = hook.install_hook(target)
    files = done.files
    verb = "reinstalled (it was installed already)" if done.replaced else "installed"
    print(f"ilastik hook {verb} in {files.site_dir}:")
    print(f"  {files.pth}")
    print(f"  {files.module}")
    if files.on_site_path:
        print(
            f"ilastik started with {sys.executable} (this environment) now opens composite descriptions; "
            "undo with: rbfs ilastik --uninstall-hook"
        )
    else:
        print(
            f"rbfs: warning: {files.site_dir} is not a site directory of {sys.executable}: the hook works "
            "only in interpreters whose site directories include it",
            file=sys.stderr,
        )
    return EXIT_OK


def _uninstall(hook: ModuleType, target: str | None) -> int:
    done = hook.uninstall_hook(target)
    if not done.removed:
        print(f"the ilastik hook is not installed in {done.files.site_dir}: nothing removed")
        return EXIT_OK
    print(f"ilastik hook removed from {done.files.site_dir}:")
    for path in done.removed:
        print(f"  {path}")
    return EXIT_OK


def _status(hook: ModuleType, target: str | None) -> int:
    status = hook.hook_status(target)
    files = status.files
    state = "installed" if status.installed else ("incomplete" if status.present else "not installed")
    print(f"ilastik hook: {state}")
    where = "" if status.on_site_path else f", not a site directory of {sys.executable}"
    print(f"  site-packages: {files.site_dir}{where}")
    for label, path in (("start-up file", files.pth), ("module", files.module)):
        print(f"  {label}: {path} ({'present' if path in status.present else 'absent'})")
    probe = status.probe
    if probe is not None and "probe_error" not in probe:
        print(f"  a fresh {sys.executable}: " + ("loads the hook" if probe.get("registered") else "no hook"))
        package = probe.get("lazyflow_rbfs")
        print(
            "  lazyflow_rbfs.ilastik (what the hook imports): "
            + (f"importable from {package}" if package else f"NOT importable ({probe.get('error')})")
        )
        print(
            "  lazyflow: "
            + ("importable" if probe.get("lazyflow") else "not importable (the hook waits for ilastik's)")
        )
    for problem in status.problems:
        print(f"  problem: {problem}")
    return EXIT_OK if status.ok else EXIT_FAILURE


def run_ilastik(forwarded: list[str]) -> int:
    _ilastik = _hook_module()
    result = _ilastik.main(forwarded)
    return int(result or 0)
