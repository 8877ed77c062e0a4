"""The README's Python example, run as written against a store found the way Client() finds it
($CIDCACHE_STORE and the default socket under $XDG_RUNTIME_DIR)."""

from __future__ import annotations

import tempfile
from typing import Any, Callable

import pytest

from conftest import REPO, Daemon


def test_readme_python_example_runs(
    make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (REPO / "README.md").read_text()
    start = text.index("From Python")
    block = text[text.index("```python\n", start) + len("```python\n") :]
    block = block[: block.index("```")]
    with tempfile.TemporaryDirectory() as run:
        d = make_daemon(runtime_dir=run)
        monkeypatch.setenv("XDG_RUNTIME_DIR", run)
        monkeypatch.setenv("CIDCACHE_STORE", d.store)
        scope: dict[str, Any] = {}
        exec(compile(block, "README.md", "exec"), scope)
        assert bytes(scope["obj"]) == b"hello world"
        assert scope["t"].column("id").to_pylist() == [2, 3]
        assert scope["later"] is None
        assert scope["rows"].num_rows >= 1
