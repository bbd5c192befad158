"""OpRESTfulBlockwiseFilesetReader in a lazyflow graph, against a real cutout server on 127.0.0.1.

Runs against the real lazyflow when it is importable, else against ``tests/lazyflow_double`` (choose with
``RBFS_LAZYFLOW=real|double|auto``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lazyflow_rbfs import errors
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.testing.pytest_plugin import SAMPLE_BLOCK, SAMPLE_SHAPE
from tests import lazyflow_double
from tests.procfs import HAVE_PROC, client_sockets_to, open_fds

pytest_plugins = ("tests.lazyflow_double.fixtures",)

FAST = {"retries": 1, "timeout": (2.0, 5.0)}


@pytest.fixture
def make_op(lazyflow_env):
    """Factory for reader operators in a fresh graph; every one is cleaned up afterwards."""
    ops = []

    def make(path=None, **fileset_options):
        op = lazyflow_env.operators.OpRESTfulBlockwiseFilesetReader(
            graph=lazyflow_env.Graph(), fileset_options=fileset_options or None
        )
        ops.append(op)
        if path is not None:
            op.DescriptionFilePath.setValue(str(path))
        return op

    yield make
    for op in ops:
        op.cleanUp()


def _edit_json(path: Path, edit) -> Path:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))
    return path


def _block_starts(start, stop, block=SAMPLE_BLOCK):
    ranges = [range((a // b) * b, c, b) for a, c, b in zip(start, stop, block)]
    return {(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]}


def _random_roi(rng, shape=SAMPLE_SHAPE):
    start = [int(rng.integers(0, n)) for n in shape]
    stop = [int(rng.integers(a + 1, n + 1)) for a, n in zip(start, shape)]
    return start, stop


def _rbfs_error(exc: BaseException, kind: type = errors.RbfsError) -> BaseException | None:
    """Our error in ``exc``, its causes, contexts or first argument (however lazyflow wrapped it)."""
    seen = set()
    todo = [exc]
    found = None
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind) and (found is None or getattr(e, "url", None)):
            found = e
        todo.extend([e.__cause__, e.__context__])
        todo.extend(a for a in getattr(e, "args", ())[:1] if isinstance(a, BaseException))
    return found


# --------------------------------------------------------------------------------------------------- metadata


def test_metadata_describes_the_view(make_op, composite_description_path, sample_array):
    op = make_op(composite_description_path)
    meta = op.Output.meta
    assert meta.shape == SAMPLE_SHAPE and all(type(n) is int for n in meta.shape)
    assert np.dtype(meta.dtype) == sample_array.dtype
    assert [tag.key for tag in meta.axistags] == ["z", "y", "x"]
    assert tuple(meta.ideal_blockshape) == SAMPLE_BLOCK
    assert meta.drange is None
    assert isinstance(op.fileset, RESTfulBlockwiseFileset)


def test_metadata_follows_view_and_drange(make_op, cutout_server, tmp_path):
    path = Path(
        cutout_server.write_description(
            tmp_path / "view.json",
            block_shape=SAMPLE_BLOCK,
            cache_dir="c",
            view_origin=(8, 16, 0),
            view_shape=(12, 20, 10),
        )
    )
    _edit_json(path, lambda d: d["local_description"].update(drange=[0, 200]))
    op = make_op(path)
    assert op.Output.meta.shape == (12, 20, 10)
    assert tuple(op.Output.meta.drange) == (0, 200)
    # the block shape, clipped to the view: downstream caches ask for whole blocks
    assert tuple(op.Output.meta.ideal_blockshape) == (8, 16, 10)

    plain = cutout_server.write_description(tmp_path / "plain.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    op.DescriptionFilePath.setValue(str(plain))
    assert op.Output.meta.shape == SAMPLE_SHAPE and op.Output.meta.drange is None


# --------------------------------------------------------------------------------------------------- reading


def test_reads_equal_the_source_volume(make_op, composite_description_path, sample_array, cutout_server):
    op = make_op(composite_description_path)
    rng = np.random.default_rng(1)
    touched = set()
    for _ in range(25):
        start, stop = _random_roi(rng)
        key = tuple(slice(a, b) for a, b in zip(start, stop))
        np.testing.assert_array_equal(op.Output[key].wait(), sample_array[key])
        np.testing.assert_array_equal(op.Output(start, stop).wait(), sample_array[key])
        touched |= _block_starts(start, stop)
    np.testing.assert_array_equal(op.Output[0:10, 5:27, 10:33].wait(), sample_array[0:10, 5:27, 10:33])
    out = np.zeros(SAMPLE_SHAPE, dtype=sample_array.dtype)
    assert op.Output[...].writeInto(out).wait() is not None
    np.testing.assert_array_equal(out, sample_array)
    # every block was downloaded exactly once however often it was read
    n_blocks = len(_block_starts((0, 0, 0), SAMPLE_SHAPE))
    assert cutout_server.requests == n_blocks


def test_execute_fills_the_given_array_in_place(make_op, composite_description_path, sample_array):
    op = make_op(composite_description_path)
    # lazyflow passes TinyVector (list-like) or numpy vectors; both must work
    for start, stop in (([2, 3, 4], [9, 30, 20]), (np.array([0, 17, 1]), np.array([20, 40, 36]))):
        roi = SimpleNamespace(start=start, stop=stop)
        key = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        result = np.full(sample_array[key].shape, 99, dtype=sample_array.dtype)
        assert op.execute(op.Output, (), roi, result) is result
        np.testing.assert_array_equal(result, sample_array[key])
    # a non-contiguous result array is filled correctly too
    result = np.zeros((20, 40, 36), dtype=sample_array.dtype, order="F")
    assert (
        op.execute(op.Output, (), SimpleNamespace(start=[0, 0, 0], stop=list(SAMPLE_SHAPE)), result) is result
    )
    np.testing.assert_array_equal(result, sample_array)


def test_requests_run_execute_concurrently(lazyflow_env, make_op, composite_description_path, sample_array):
    """Whole-volume requests fan out over lazyflow's threads; data stays correct."""
    op = make_op(composite_description_path)
    seen = []
    original = op.execute

    def spy(slot, subindex, roi, result):
        seen.append(
            (threading.current_thread().name, tuple(np.asarray(roi.start)), result.flags.c_contiguous)
        )
        return original(slot, subindex, roi, result)

    op.execute = spy
    np.testing.assert_array_equal(op.Output[...].wait(), sample_array)
    assert seen
    if lazyflow_env.kind == "double":
        assert len(seen) > 1  # the double splits a big request into pieces on its worker threads


def test_execute_gets_lazyflows_roi_vectors(make_op, composite_description_path, sample_array):
    """lazyflow hands execute TinyVector lists (not numpy arrays); keys and start/stop both work."""
    op = make_op(composite_description_path)
    rois = []
    original = op.execute

    def spy(slot, subindex, roi, result):
        rois.append((roi.start, roi.stop))
        return original(slot, subindex, roi, result)

    op.execute = spy
    np.testing.assert_array_equal(op.Output[3, 5:9, ...].wait(), sample_array[3:4, 5:9, :])
    np.testing.assert_array_equal(op.Output([1, 2, 3], [4, 5, 6]).wait(), sample_array[1:4, 2:5, 3:6])
    assert rois and all(isinstance(a, list) and isinstance(b, list) for a, b in rois)


@pytest.mark.parametrize(
    "key",
    [np.s_[-2:, 0:4, 0:4], np.s_[0:4, 0:4, 30:99], np.s_[0:4, -1, 0:4]],
    ids=["negative-start", "past-the-end", "negative-int"],
)
def test_keys_lazyflow_does_not_clip_raise_out_of_bounds(make_op, composite_description_path, key):
    """lazyflow passes negative and out-of-range keys through unchanged: an error, never wrong data."""
    op = make_op(composite_description_path)
    with pytest.raises(Exception) as info:
        op.Output[key].wait()
    assert _rbfs_error(info.value, errors.OutOfBoundsError) is not None, repr(info.value)


def test_write_into_non_contiguous_arrays(make_op, composite_description_path, sample_array):
    """Caches and exporters writeInto slices of bigger arrays: execute then gets a non-contiguous view."""
    op = make_op(composite_description_path)
    contiguous = []
    original = op.execute

    def spy(slot, subindex, roi, result):
        contiguous.append(result.flags.c_contiguous)
        return original(slot, subindex, roi, result)

    op.execute = spy
    fortran = np.zeros(SAMPLE_SHAPE, dtype=sample_array.dtype, order="F")
    op.Output[...].writeInto(fortran).wait()
    np.testing.assert_array_equal(fortran, sample_array)

    big = np.zeros((*SAMPLE_SHAPE, 3), dtype=sample_array.dtype)
    op.Output[2:18, 0:40, 3:30].writeInto(big[2:18, :, 3:30, 1]).wait()
    np.testing.assert_array_equal(big[2:18, :, 3:30, 1], sample_array[2:18, :, 3:30])
    assert not big[..., 0].any() and not big[..., 2].any(), "wrote outside the destination view"
    assert not all(contiguous), "the check can fail: some execute call must have seen a strided array"


def test_metadata_is_what_ilastik_computes_with(make_op, composite_description_path, sample_array):
    """OpInputDataReader calls meta.dtype().nbytes and getTaggedShape(); MetaDict compares values with !=."""
    op = make_op(composite_description_path)
    meta = op.Output.meta
    assert isinstance(meta.dtype, type) and meta.dtype().nbytes == sample_array.dtype.itemsize
    assert dict(meta.getTaggedShape()) == dict(zip("zyx", SAMPLE_SHAPE))
    for key, value in dict(meta).items():
        assert not isinstance(value, np.ndarray), f"meta.{key} is a numpy array: lazyflow cannot compare it"


def test_concurrent_reads_from_many_threads(make_op, composite_description_path, sample_array, cutout_server):
    op = make_op(composite_description_path)
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    failures: list[BaseException] = []
    touched: list[set] = [set() for _ in range(n_threads)]

    def reader(i: int) -> None:
        rng = np.random.default_rng(100 + i)
        try:
            barrier.wait(timeout=30)
            for _ in range(6):
                start, stop = _random_roi(rng)
                key = tuple(slice(a, b) for a, b in zip(start, stop))
                np.testing.assert_array_equal(op.Output[key].wait(), sample_array[key])
                touched[i] |= _block_starts(start, stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert not failures, failures[0]
    assert cutout_server.requests == len(set().union(*touched))


# ------------------------------------------------------------------------------------------------- lifecycle


def _our_threads() -> set[int]:
    return {
        t.ident
        for t in threading.enumerate()
        if not t.name.startswith("cutout-server") and "process_request_thread" not in t.name
    }


@pytest.mark.skipif(not HAVE_PROC, reason="needs /proc")
def test_resetting_the_path_leaks_no_files_sockets_or_threads(make_op, cutout_server, tmp_path, sample_array):
    paths = [
        cutout_server.write_description(tmp_path / f"v{i}.json", block_shape=SAMPLE_BLOCK, cache_dir=f"c{i}")
        for i in range(2)
    ]
    warm = make_op(paths[0])  # start whatever lazyflow starts once (its thread pool)
    warm.Output[...].wait()
    warm.cleanUp()
    files_before, _ = open_fds()
    threads_before = _our_threads()

    op = make_op()
    filesets = []
    for i in range(6):
        op.DescriptionFilePath.setValue(str(paths[i % 2]))
        filesets.append(op.fileset)
        np.testing.assert_array_equal(op.Output[2:18, 0:40, 3:30].wait(), sample_array[2:18, 0:40, 3:30])
        assert all(f.closed for f in filesets[:-1]), "re-setting the path must close the previous fileset"
    op.cleanUp()

    assert filesets[-1].closed and op.fileset is None
    assert len(set(map(id, filesets))) == 6
    files_after, _ = open_fds()
    assert sorted(files_after) == sorted(files_before)
    assert client_sockets_to(cutout_server.port) == 0
    assert _our_threads() == threads_before


def test_cleanup_closes_the_fileset(make_op, composite_description_path):
    op = make_op(composite_description_path)
    op.Output[0:4, 0:4, 0:4].wait()
    fileset = op.fileset
    op.cleanUp()
    assert fileset.closed and op.fileset is None
    op.cleanUp()  # idempotent for our part


def test_new_path_marks_the_output_dirty(make_op, cutout_server, tmp_path):
    a = cutout_server.write_description(tmp_path / "a.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    b = cutout_server.write_description(tmp_path / "b.json", block_shape=(4, 8, 8), cache_dir="d")
    op = make_op(a)
    dirty = []
    op.Output.notifyDirty(lambda slot, roi: dirty.append((tuple(roi.start), tuple(roi.stop))))
    op.DescriptionFilePath.setValue(str(b))
    assert ((0, 0, 0), SAMPLE_SHAPE) in dirty
    assert tuple(op.Output.meta.ideal_blockshape) == (4, 8, 8)


def test_operator_builds_as_a_child_and_is_cleaned_up_with_its_parent(
    lazyflow_env, composite_description_path
):
    """Op(parent=...) with our keyword (as OpInputDataReader and OperatorWrapper build readers)."""
    operators = lazyflow_env.operators
    parent = operators.OpRESTfulBlockwiseFilesetReader(graph=lazyflow_env.Graph())
    child = operators.OpRESTfulBlockwiseFilesetReader(parent=parent, fileset_options={"max_parallel": 3})
    assert child.parent is parent and child.graph is parent.graph
    child.DescriptionFilePath.setValue(str(composite_description_path))
    assert child.fileset.max_parallel == 3
    fileset = child.fileset
    parent.cleanUp()
    assert fileset.closed and child.fileset is None


def test_failed_resetup_fails_requests_fast_instead_of_hanging(make_op, composite_description_path, tmp_path):
    """lazyflow leaves an operator whose setupOutputs raised flagged "setting up": requests would wait
    for ever on a stale, ready Output. Ours is made unready, so they fail at once until a good path."""
    op = make_op(composite_description_path)
    op.Output[0:2, 0:2, 0:2].wait()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"_schema_name": "tiled-volume-description", "_schema_version": 1.0}))
    with pytest.raises(errors.SchemaError):
        op.DescriptionFilePath.setValue(str(other))
    assert op.fileset is None and not op.Output.ready()

    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            op.Output[0:2, 0:2, 0:2].wait()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)  # deadlock guard only
    assert not reader.is_alive(), "a request on the failed operator hung"
    assert outcome and outcome[0] is not None and "ready" in str(outcome[0]).lower(), outcome

    op.DescriptionFilePath.setValue(str(composite_description_path))  # recovers
    assert op.Output[0:2, 0:2, 0:2].wait().shape == (2, 2, 2)


# --------------------------------------------------------------------------------------------------- errors


def test_missing_description_raises_missing_dataset_error(lazyflow_env, make_op, tmp_path):
    op = make_op()
    with pytest.raises(
        lazyflow_env.operators.OpRESTfulBlockwiseFilesetReader.MissingDatasetError, match="nope"
    ):
        op.DescriptionFilePath.setValue(str(tmp_path / "nope.json"))


def test_other_json_is_a_schema_error_lazyflow_understands(lazyflow_env, make_op, tmp_path, cutout_server):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"_schema_name": "tiled-volume-description", "_schema_version": 1.0}))
    op = make_op()
    with pytest.raises(errors.SchemaError) as info:
        op.DescriptionFilePath.setValue(str(other))
    assert isinstance(info.value, lazyflow_env.json_config.JsonConfigParser.SchemaError)
    assert op.fileset is None
    # the operator recovers with a good description
    good = cutout_server.write_description(tmp_path / "good.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    op.DescriptionFilePath.setValue(str(good))
    assert op.Output[0:2, 0:2, 0:2].wait().shape == (2, 2, 2)


def test_broken_composite_description_names_the_field(make_op, composite_description_path):
    _edit_json(composite_description_path, lambda d: d["local_description"].update(block_shape=[0, 16, 16]))
    op = make_op()
    with pytest.raises(errors.DescriptionError) as info:
        op.DescriptionFilePath.setValue(str(composite_description_path))
    assert "block_shape" in (info.value.field or "")


@pytest.mark.parametrize("key", [np.s_[...], np.s_[0:3, 0:4, 0:5]], ids=["split", "direct"])
def test_download_errors_reach_the_requester(make_op, make_cutout_server, tmp_path, sample_array, key):
    server = make_cutout_server()
    path = server.write_description(tmp_path / "v.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    op = make_op(path, **FAST)
    server.faults.fail_matching("/", status=503)
    with pytest.raises(Exception) as info:
        op.Output[key].wait()
    ours = _rbfs_error(info.value, errors.DownloadError)
    assert ours is not None, f"expected our DownloadError in {info.value!r}"
    assert ours.status == 503 and ours.url.startswith(server.url)
    assert not list((tmp_path / "c").rglob("STATUS.txt")), "a failed download must leave no trusted block"

    server.faults.clear()  # the server recovers: the same request now returns the data, not zeros
    np.testing.assert_array_equal(op.Output[key].wait(), sample_array[key])


def test_errors_survive_lazyflows_re_raise_from_inside_a_request(
    lazyflow_env, make_op, make_cutout_server, tmp_path
):
    """A request that waits on an already-failed request gets ``type(exc)(exc)`` from lazyflow: our error
    types must be constructible that way, and ours stays reachable (as the first argument)."""
    server = make_cutout_server()
    path = server.write_description(tmp_path / "v.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    op = make_op(path, **FAST)
    server.faults.fail_matching("/", status=503)
    failing = op.Output[0:3, 0:4, 0:5]
    with pytest.raises(errors.DownloadError) as first:
        failing.wait()
    Request = lazyflow_env.request_module.Request
    outer = Request(failing.wait)
    outer.submit()
    with pytest.raises(errors.DownloadError) as second:
        outer.wait()
    ours = _rbfs_error(second.value, errors.DownloadError)
    assert ours is not None and ours.status == 503 and ours.url == first.value.url


@pytest.mark.parametrize(
    "error",
    [
        errors.DownloadError("m", url="http://127.0.0.1/x", status=503),
        errors.RemoteTimeoutError("m", url="http://127.0.0.1/x"),
        errors.InvalidResponseError("m", url="http://127.0.0.1/x", status=200),
        errors.OutOfBoundsError("m"),
        errors.ClosedError("m"),
        errors.LockTimeoutError("m", path="/tmp/x.lock"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_execute_errors_can_be_re_created_by_lazyflow(error):
    """``exc_type(exc_value)`` (lazyflow's re-raise) must build an error of the same type, not a TypeError."""
    again = type(error)(error)
    assert type(again) is type(error) and again.args[0] is error


def test_reading_a_closed_fileset_is_an_error(make_op, composite_description_path):
    """A request on a ready Output whose fileset was closed under it fails with our ClosedError."""
    op = make_op(composite_description_path)
    op.fileset.close()
    with pytest.raises(Exception) as info:
        op.Output[0:2, 0:2, 0:2].wait()
    assert _rbfs_error(info.value, errors.ClosedError) is not None


def test_execute_after_cleanup_is_an_error(make_op, composite_description_path):
    """execute on a cleaned-up operator (no fileset) raises ClosedError, not AttributeError."""
    op = make_op(composite_description_path)
    result = np.zeros((2, 2, 2), dtype=op.Output.meta.dtype)
    op.cleanUp()
    roi = SimpleNamespace(start=[0, 0, 0], stop=[2, 2, 2])
    with pytest.raises(errors.ClosedError, match="no fileset is open"):
        op.execute(op.Output, (), roi, result)


# --------------------------------------------------------------------------------------------------- factory


class _OrderedSet(set):
    """A set whose iteration order is fixed (to force each order on lazyflow's factory)."""

    def __init__(self, items):
        super().__init__(items)
        self._order = list(items)

    def __iter__(self):
        return iter(
            [x for x in self._order if x in self] + [x for x in set.__iter__(self) if x not in self._order]
        )

    def add(self, item):
        if item not in self:
            self._order.append(item)
        super().add(item)


def test_lazyflow_factory_returns_our_filesets_first(lazyflow_env, cutout_server, tmp_path, monkeypatch):
    factory = lazyflow_env.factory_module.BlockwiseFilesetFactory
    sentinel = object()

    def competitor(path, mode):  # an older class that claims every file
        return sentinel

    composite = cutout_server.write_description(tmp_path / "v.json", block_shape=SAMPLE_BLOCK, cache_dir="c")
    local = tmp_path / "local.json"
    local.write_text(json.dumps(json.loads(Path(composite).read_text())["local_description"]))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"_schema_name": "something-else", "_schema_version": 1.0}))

    original = list(factory.creationFns)
    for order in (lambda fns: [competitor, *fns], lambda fns: [*fns, competitor]):
        monkeypatch.setattr(factory, "creationFns", _OrderedSet(order(original)))
        made = factory.create(str(composite), "r")
        try:
            assert type(made) is RESTfulBlockwiseFileset
        finally:
            made.close()
        made = factory.create(str(local), "r")
        try:
            assert type(made) is BlockwiseFileset
        finally:
            made.close()
        assert factory.create(str(other), "r") is sentinel  # not ours: lazyflow's own chain decides


def test_factory_registration_is_idempotent_and_reversible(lazyflow_env, composite_description_path):
    operators = lazyflow_env.operators
    factory = lazyflow_env.factory_module.BlockwiseFilesetFactory
    assert operators.register_with_lazyflow() is True
    patched_create = factory.__dict__["create"]
    n_fns = len(factory.creationFns)
    assert operators.register_with_lazyflow() is True
    assert factory.__dict__["create"] is patched_create and len(factory.creationFns) == n_fns

    operators.unregister_from_lazyflow()
    operators.unregister_from_lazyflow()
    try:
        assert len(factory.creationFns) == n_fns - 1
        made = factory.create(str(composite_description_path), "r")
        assert not isinstance(made, RESTfulBlockwiseFileset)  # lazyflow's own class again
        made.close()
    finally:
        operators.register_with_lazyflow()
    made = factory.create(str(composite_description_path), "r")
    assert type(made) is RESTfulBlockwiseFileset
    made.close()


# --------------------------------------------------------------------------------------------------- imports


def test_importing_the_package_never_imports_lazyflow_or_vigra():
    """Even where lazyflow and vigra are importable (the double is put on the path here)."""
    code = (
        "import sys\n"
        "import lazyflow_rbfs\n"
        "import lazyflow_rbfs.store, lazyflow_rbfs.cache, lazyflow_rbfs.remote, lazyflow_rbfs.factory\n"
        "import lazyflow_rbfs.ilastik\n"
        "from lazyflow_rbfs import BlockwiseFileset, RESTfulBlockwiseFileset, BlockwiseFilesetFactory\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lazyflow', 'vigra', 'ilastik'))\n"
        "print('before', bad)\n"
        "import lazyflow_rbfs.operators\n"
        "print('after', 'lazyflow' in sys.modules and 'vigra' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([lazyflow_double.SITE, str(root)]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "before []" in done.stdout, done.stdout
    assert "after True" in done.stdout, done.stdout  # the check itself can fail: operators does import them
