"""The permanent ilastik hook (``rbfs ilastik --install-hook``), in fresh interpreters of a real venv.

Each test makes a venv (``python -m venv --without-pip``) in ``tmp_path``; a ``_deps.pth`` path line gives
it this interpreter's site-packages (numpy, h5py, ...) as a plain ``sys.path`` entry, so that the ``.pth``
files there (the editable install of lazyflow_rbfs) do not run and ``lazyflow_rbfs`` comes only from
``PYTHONPATH``. ``rbfs`` runs with the venv's interpreter, so the hook goes where a user's would: into the
site-packages of the interpreter running ``rbfs``, and Python's own ``site`` runs it at start-up.
lazyflow and ilastik are ``tests/lazyflow_double`` (on ``PYTHONPATH``), ilastik's entry point is
``python -m ilastik``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs.cli import main
from lazyflow_rbfs.integrations import ilastik_startup
from tests.lazyflow_double import SITE as DOUBLE

REPO = Path(__file__).resolve().parents[1]
PTH = ilastik_startup.PTH_NAME
MODULE = ilastik_startup.MODULE_NAME + ".py"
TIMEOUT = 120

# Run in a fresh interpreter: import ilastik's reader module as ilastik does, report whether the hook was
# applied, and if so read a description through OpInputDataReader into a .npy file.
READ_THROUGH_ILASTIK = """
import json, sys
import numpy as np
from lazyflow.graph import Graph
from lazyflow.operators.ioOperators import opInputDataReader as module
import lazyflow_rbfs.ilastik as hook

out = {
    "installed": hook.installed(),
    "loader": type(module.__loader__).__name__,
    "spec_loader": type(module.__spec__.loader).__name__,
}
if out["installed"] and len(sys.argv) > 2:
    reader = module.OpInputDataReader(graph=Graph())
    reader.FilePath.setValue(sys.argv[1])
    out["inner"] = type(reader.internalOperators[0]).__name__
    np.save(sys.argv[2], reader.Output[...].wait())
    reader.cleanUp()
print(json.dumps(out))
"""


@dataclass
class Venv:
    root: Path
    python: str
    site: Path

    def run(
        self, *args: str, path: tuple = (REPO, DOUBLE), cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess:
        """Run this venv's interpreter with ``PYTHONPATH`` = ``path`` (nothing else of ours)."""
        environ = dict(os.environ)
        for name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "PYTHONSTARTUP"):
            environ.pop(name, None)
        environ.pop(ilastik_startup.DISABLE_VARIABLE, None)
        if path:
            environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
        environ.update(env)
        return subprocess.run(
            [self.python, *args],
            capture_output=True,
            text=True,
            env=environ,
            cwd=cwd or self.root,
            timeout=TIMEOUT,
            check=False,
        )

    def rbfs(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "lazyflow_rbfs", "ilastik", *args, path=(REPO,))

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.site)) for p in self.site.rglob("*"))


@pytest.fixture
def venv(tmp_path) -> Venv:
    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=TIMEOUT)
    python = str(root / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout.strip()
    site_dir = Path(purelib)
    deps = {sysconfig.get_paths()["purelib"], *__import__("site").getsitepackages()}
    (site_dir / "_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return Venv(root=root, python=python, site=site_dir)


def _installed_and_read(venv: Venv, description: str, out: Path, **env: str) -> dict:
    done = venv.run("-c", READ_THROUGH_ILASTIK, description, str(out), **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _plain_ilastik(venv: Venv, tmp_path: Path, raw_data: str, path: tuple = (REPO, DOUBLE)):
    project = tmp_path / "pc.ilp"
    project.write_bytes(b"")
    out = tmp_path / "exported.h5"
    done = venv.run(
        "-m",
        "ilastik",
        "--headless",
        f"--project={project}",
        f"--raw_data={raw_data}",
        f"--output_filename_format={out}",
        path=path,
    )
    return done, out


# ------------------------------------------------------------------------------------------- install


def test_install_makes_plain_ilastik_open_descriptions_and_uninstall_removes_every_trace(
    venv, composite_description_path, sample_array, tmp_path
):
    before = venv.files()
    status = venv.rbfs("--hook-status")
    assert status.returncode == 1 and "ilastik hook: not installed" in status.stdout

    done = venv.rbfs("--install-hook")
    assert done.returncode == 0, done.stderr
    assert f"installed in {venv.site}" in done.stdout and str(venv.site / PTH) in done.stdout
    again = venv.rbfs("--install-hook")
    assert again.returncode == 0 and "reinstalled (it was installed already)" in again.stdout
    assert sorted(p.name for p in venv.site.glob("*.pth")) == ["_deps.pth", PTH], "installing twice: one .pth"
    assert {MODULE, PTH} <= set(venv.files())

    status = venv.rbfs("--hook-status")
    assert status.returncode == 0, status.stdout
    assert "ilastik hook: installed" in status.stdout
    assert f"site-packages: {venv.site}\n" in status.stdout
    assert "loads the hook" in status.stdout and f"importable from {REPO}" in status.stdout

    # A fresh interpreter of this environment: the hook is applied when ilastik's reader module is imported,
    # and the module keeps its own loader.
    found = _installed_and_read(venv, str(composite_description_path), tmp_path / "read.npy")
    assert found == {
        "installed": True,
        "loader": "SourceFileLoader",
        "spec_loader": "SourceFileLoader",
        "inner": "OpRESTfulBlockwiseFilesetReader",
    }
    np.testing.assert_array_equal(np.load(tmp_path / "read.npy"), sample_array)
    # Plain ilastik (its own entry point, no launcher) opens the description.
    ran, exported = _plain_ilastik(venv, tmp_path, str(composite_description_path))
    assert ran.returncode == 0, ran.stderr
    with h5py.File(exported, "r") as f:
        np.testing.assert_array_equal(f["exported_data"][...], sample_array)
    assert (venv.site / "__pycache__").is_dir(), "the start-up module was compiled (its .pyc must go too)"

    removed = venv.rbfs("--uninstall-hook")
    assert removed.returncode == 0, removed.stderr
    assert str(venv.site / PTH) in removed.stdout and str(venv.site / MODULE) in removed.stdout
    assert venv.files() == before, "uninstall must leave no file behind"
    again = venv.rbfs("--uninstall-hook")
    assert again.returncode == 0 and "not installed" in again.stdout and "nothing removed" in again.stdout
    status = venv.rbfs("--hook-status")
    assert status.returncode == 1 and "ilastik hook: not installed" in status.stdout

    assert _installed_and_read(venv, str(composite_description_path), tmp_path / "again.npy") == {
        "installed": False,
        "loader": "SourceFileLoader",
        "spec_loader": "SourceFileLoader",
    }
    ran, _ = _plain_ilastik(venv, tmp_path, str(composite_description_path))
    assert ran.returncode != 0 and "OpH5BlockStoreReader" in ran.stderr


def test_a_process_that_never_imports_lazyflow_loads_only_the_start_up_module(venv):
    script = "import json, sys; print(json.dumps([sorted(sys.modules), [repr(f) for f in sys.meta_path]]))"
    without = venv.run("-c", script)
    assert without.returncode == 0, without.stderr
    assert venv.rbfs("--install-hook").returncode == 0
    with_hook = venv.run("-c", script)
    assert with_hook.returncode == 0 and with_hook.stderr == ""
    (modules, finders), (modules_before, _) = json.loads(with_hook.stdout), json.loads(without.stdout)
    assert set(modules) - set(modules_before) == {ilastik_startup.MODULE_NAME}
    assert not [m for m in modules if m.startswith("lazyflow")]
    assert finders[0] == f"<lazyflow_rbfs ilastik hook for {ilastik_startup.TARGET}>"


def test_hook_status_reports_a_stale_or_incomplete_install(venv):
    assert venv.rbfs("--install-hook").returncode == 0
    module = venv.site / MODULE
    module.write_text(module.read_text() + "\n# edited\n")
    status = venv.rbfs("--hook-status")
    assert status.returncode == 1 and "another version of lazyflow_rbfs" in status.stdout
    assert venv.rbfs("--install-hook").returncode == 0
    assert venv.rbfs("--hook-status").returncode == 0

    module.unlink()
    status = venv.rbfs("--hook-status")
    assert status.returncode == 1 and "ilastik hook: incomplete" in status.stdout
    assert f"{module} is missing" in status.stdout
    # The orphaned .pth does not stop any interpreter: a one-line warning naming the file to remove (as
    # often as site runs the .pth: twice in a venv of Python 3.11, which visits site-packages twice).
    started = venv.run("-c", "print('started')")
    assert started.returncode == 0 and started.stdout == "started\n"
    (warning,) = set(started.stderr.splitlines())
    assert warning.startswith("warning: lazyflow_rbfs: ") and str(venv.site / PTH) in warning
    assert venv.rbfs("--uninstall-hook").returncode == 0
    assert not (venv.site / PTH).exists()


# ------------------------------------------------------------------------------- a broken lazyflow_rbfs


@pytest.fixture
def h5_input(tmp_path, sample_array) -> str:
    path = tmp_path / "volume.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=sample_array)
    return f"{path}/data"


@pytest.mark.parametrize("how", ["missing", "broken"])
def test_a_missing_or_broken_package_lets_python_and_ilastik_start_with_a_warning(
    venv, tmp_path, h5_input, sample_array, how
):
    assert venv.rbfs("--install-hook").returncode == 0
    if how == "missing":
        probe = venv.run("-c", "import lazyflow_rbfs", path=(DOUBLE,))
        if probe.returncode == 0:
            pytest.skip("lazyflow_rbfs is installed (not editable) in this interpreter's site-packages")
        path, error = (DOUBLE,), "ModuleNotFoundError"
    else:  # a copy of the package with a corrupt module, in front of everything else
        broken = tmp_path / "broken"
        shutil.copytree(REPO / "lazyflow_rbfs", broken / "lazyflow_rbfs")
        (broken / "lazyflow_rbfs" / "integrations" / "ilastik.py").write_text("def install(:\n")
        path, error = (broken, DOUBLE), "SyntaxError"

    started = venv.run("-c", "print('started')", path=path)
    assert (started.returncode, started.stdout, started.stderr) == (0, "started\n", "")

    ran, exported = _plain_ilastik(venv, tmp_path, h5_input, path=path)
    assert ran.returncode == 0, ran.stderr
    with h5py.File(exported, "r") as f:
        np.testing.assert_array_equal(f["exported_data"][...], sample_array)
    warning = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(warning) == 1, ran.stderr
    assert "the ilastik hook could not be applied" in warning[0] and error in warning[0]
    assert "rbfs ilastik --uninstall-hook" in warning[0] and str(venv.site / PTH) in warning[0]

    if how == "missing":
        # rbfs run from a checkout (`python -m` finds it in the working directory): the fresh interpreter
        # that hook-status starts does not, and says so.
        status = venv.run("-m", "lazyflow_rbfs", "ilastik", "--hook-status", path=(), cwd=REPO)
        assert status.returncode == 1, status.stdout
        assert "lazyflow_rbfs.ilastik (what the hook imports): NOT importable" in status.stdout
        assert "ModuleNotFoundError" in status.stdout


# ------------------------------------------------------------------------------------------ details


def test_the_disable_variable_starts_without_the_hook(venv, composite_description_path, tmp_path):
    assert venv.rbfs("--install-hook").returncode == 0
    off = {ilastik_startup.DISABLE_VARIABLE: "0"}
    assert _installed_and_read(venv, "", "", **off)["installed"] is False
    status = venv.run("-m", "lazyflow_rbfs", "ilastik", "--hook-status", path=(REPO,), **off)
    assert status.returncode == 1 and "RBFS_ILASTIK_HOOK=0" in status.stdout
    # Registering later, with lazyflow's reader already imported, applies the hook at once.
    late = venv.run(
        "-c",
        "import os, sys; import lazyflow.operators.ioOperators.opInputDataReader; "
        f"os.environ.pop({ilastik_startup.DISABLE_VARIABLE!r}); "
        f"import {ilastik_startup.MODULE_NAME} as m; m.register(); "
        "import lazyflow_rbfs.ilastik as h; print(h.installed())",
        **off,
    )
    assert late.returncode == 0 and late.stdout == "True\n", late.stderr


def test_the_target_option_and_its_errors(tmp_path, capsys):
    target = tmp_path / "site"
    target.mkdir()
    assert main(["ilastik", "--install-hook", "--target", str(target)]) == 0
    captured = capsys.readouterr()
    assert f"installed in {target}" in captured.out
    assert "is not a site directory of" in captured.err  # a plain directory: site would not run it
    assert sorted(p.name for p in target.iterdir()) == sorted([PTH, MODULE])
    assert main(["ilastik", "--hook-status", f"--target={target}"]) == 1
    assert "not a site directory" in capsys.readouterr().out
    assert main(["ilastik", "--uninstall-hook", "--target", str(target)]) == 0
    assert list(target.iterdir()) == []
    capsys.readouterr()

    assert main(["ilastik", "--install-hook", "--target", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rbfs: error: ") and "nowhere" in err and err.count("\n") == 1

    (target / PTH).write_text("import something_else\n")
    for action in ("--install-hook", "--uninstall-hook"):
        assert main(["ilastik", action, "--target", str(target)]) == 1
        assert "not written by lazyflow_rbfs" in capsys.readouterr().err
    assert (target / PTH).read_text() == "import something_else\n" and not (target / MODULE).exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--install-hook", "--headless"], "unrecognized arguments: --headless"),
        (["--hook-status", "--", "--headless"], "--hook-status takes no ilastik arguments"),
        (["--install-hook", "--uninstall-hook"], "not allowed with argument"),
        (["--target", "x"], "--target goes with"),
    ],
)
def test_hook_options_are_checked(argv, message, capsys):
    assert main(["ilastik", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rbfs: error: ") and message in err and err.count("\n") == 1


def test_rbfs_ilastik_help_is_ours(capsys):
    assert main(["ilastik", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rbfs ilastik")
    for option in ("--install-hook", "--uninstall-hook", "--hook-status", "--target", "-- --help"):
        assert option in out
