"""Golden screens: what a command shows, kept under tests/screens/ and copied into the README.

A test compares the real output with `tests/screens/NAME`, and the README's code block
after the marker `<!-- screen: tests/screens/NAME -->` with the text it should show.
`UPDATE_SCREENS=1 python -m pytest tests/test_screens_*.py` writes both again from the
real output (review the diff); `UPDATE_SCREENS=log` also rewrites the history audit log
first (see tests/test_screens_history.py).
"""

from __future__ import annotations

import os
import re

from tests.terminal import ROOT

SCREENS = ROOT / "tests" / "screens"
README = ROOT / "README.md"
UPDATE = os.environ.get("UPDATE_SCREENS") in ("1", "log")


def assert_screen(name: str, actual: str) -> None:
    """`actual` is `tests/screens/NAME` (written first under UPDATE_SCREENS)."""
    path = SCREENS / name
    if UPDATE:
        path.write_text(actual)
    assert actual == path.read_text()


def assert_readme_copy(name: str, wanted: str) -> None:
    """The README's block for `tests/screens/NAME` is `wanted` (written first under
    UPDATE_SCREENS)."""
    found = _readme_block(name)
    if UPDATE:
        text = README.read_text()
        README.write_text(text[: found.start(1)] + wanted + text[found.end(1) :])
        found = _readme_block(name)
    assert found.group(1) == wanted


def _readme_block(name: str) -> re.Match[str]:
    """The code block after the screen's marker comment."""
    marker = re.escape(f"<!-- screen: tests/screens/{name} -->")
    found = re.search(rf"{marker}\n```text\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no block after <!-- screen: tests/screens/{name} -->"
    return found
