"""pytest plugin: make pyarrow.plasma.start_plasma_store run the store binary
named by $PLASMA_STORE_BIN instead of the wheel's plasma-store-server.

pyarrow itself is not modified: we only replace the `subprocess` name inside
the already-imported `pyarrow.plasma` module with a thin proxy whose Popen
rewrites argv[0]. Without $PLASMA_STORE_BIN nothing is changed (the real store
is used).
"""
import os
import subprocess
import types

import pyarrow.plasma

_BIN = os.environ.get("PLASMA_STORE_BIN")


def _popen(command, *args, **kwargs):
    if _BIN and command and str(command[0]).endswith("plasma-store-server"):
        command = [_BIN] + list(command[1:])
    return subprocess.Popen(command, *args, **kwargs)


_proxy = types.ModuleType("subprocess_proxy")
_proxy.__dict__.update(subprocess.__dict__)
_proxy.Popen = _popen
pyarrow.plasma.subprocess = _proxy


def pytest_report_header(config):
    return "plasma store binary: " + (_BIN or "pyarrow's plasma-store-server")


def pytest_configure(config):
    # pyarrow's own conftest (which needs hypothesis) is not loaded; register
    # the markers it would register.
    for m in ("plasma", "pandas", "large_memory"):
        config.addinivalue_line("markers", m + ": pyarrow test group")


def pytest_collection_modifyitems(config, items):
    import pytest
    try:
        import pandas  # noqa: F401
        have_pandas = True
    except ImportError:
        have_pandas = False
    for item in items:
        if "pandas" in item.keywords and not have_pandas:
            item.add_marker(pytest.mark.skip(reason="pandas not installed"))
