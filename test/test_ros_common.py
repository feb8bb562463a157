"""shut_down_while_spinning: a spin error after a SIGINT is a normal end, any other is a fault."""

from __future__ import annotations

import pytest

from posenet_ros.ros_common import shut_down_while_spinning


class _Context:
    def __init__(self, ok: bool) -> None:
        self._ok = ok

    def ok(self) -> bool:
        return self._ok


class _Node:
    def __init__(self, ok: bool) -> None:
        self.context = _Context(ok)


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (_Node(ok=False), True),  # the context was shut down under the executor: SIGINT race
        (_Node(ok=True), False),  # the context is fine: a real error, re-raised
        (None, False),  # no node yet: nothing was spinning
        (object(), False),  # no context at all
    ],
)
def test_shut_down_while_spinning(node, expected):
    assert shut_down_while_spinning(node) is expected
