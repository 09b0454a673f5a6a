"""Every python block of docs/tutorial.md runs, each in a fresh ``__main__`` namespace."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_tutorial_has_blocks():
    assert len(BLOCKS) >= 10


@pytest.fixture
def celeryconfig(tmp_path, monkeypatch):
    (tmp_path / "celeryconfig.py").write_text("enable_utc = True\ntimezone = 'Europe/London'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "celeryconfig", raising=False)
    monkeypatch.delenv("CELERY_CONFIG_MODULE", raising=False)
    yield
    sys.modules.pop("celeryconfig", None)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_tutorial_block(index, celeryconfig):
    code = compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec")
    exec(code, {"__name__": "__main__"})
