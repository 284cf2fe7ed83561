"""Run workers are forked from a server that imported the run code once (nopeek.workers)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from nopeek.workers import RUN_MODULES, imported, warm, worker_context

forkserver = pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver here"
)


@forkserver
def test_a_worker_starts_with_the_run_code_imported():
    warm()
    with ProcessPoolExecutor(max_workers=1, mp_context=worker_context()) as pool:
        pid, loaded = pool.submit(os.getpid).result(), pool.submit(imported).result()
    assert pid != os.getpid()
    assert loaded == list(RUN_MODULES)  # none imported by the task itself: they came with the fork


@forkserver
def test_the_context_is_a_fork_server():
    assert worker_context().get_start_method() == "forkserver"


def test_imported_names_what_this_process_holds():
    assert imported(("sys", "no_such_module_here")) == ["sys"]
    assert "sys" in sys.modules


def test_workers_are_spawned_where_no_fork_server_starts(monkeypatch):
    """A fork server needs a Unix socket in the temporary folder: where it cannot start, the
    runs still go to spawned workers."""
    from multiprocessing import forkserver

    def refuse():
        raise PermissionError("no sockets here")

    monkeypatch.setattr(forkserver, "ensure_running", refuse)
    assert worker_context().get_start_method() == "spawn"


def test_the_server_preload_leaves_out_a_module_that_fails_to_import(tmp_path, monkeypatch):
    """A broken module (a plug-in raising at import) is named and skipped, not a traceback from
    the fork server; the modules after it are still imported."""
    from nopeek.workers import preload

    (tmp_path / "nopeek_broken_plugin.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "nopeek_fine_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nopeek_fine_module", raising=False)
    failed = preload(["nopeek_broken_plugin", "no_such_module_here", "nopeek_fine_module"])
    assert failed == {
        "nopeek_broken_plugin": "RuntimeError: broken at import",
        "no_such_module_here": "ModuleNotFoundError: No module named 'no_such_module_here'",
    }
    assert sys.modules["nopeek_fine_module"].VALUE == 1
