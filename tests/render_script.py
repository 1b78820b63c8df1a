"""A coding conversation turn by turn (user messages, reasoning, parallel tool calls, real source files as
tool outputs, developer messages) and the check that the local engine's incremental render of every turn
equals a full render of the same conversation. Shared by tests/test_render_cache.py and the real tier."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from loopwire.engines.base import ToolSpec
from loopwire.engines.local.render_cache import IncrementalRenderer, RenderedPrefix
from loopwire.engines.local.template import Template
from loopwire.protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message, Reasoning

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "src" / "loopwire" / "engines" / "local").glob("*.py"))
READ_FILE = ToolSpec(
    "read_file",
    "Read a file of the repository.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def call(n: int, path: str) -> FunctionCall:
    return FunctionCall(
        call_id=f"call_{n}", name="read_file", arguments=f'{{"path": "{path}"}}', id=f"fc_{n}"
    )


def output(n: int, path: Path) -> FunctionCallOutput:
    return FunctionCallOutput(call_id=f"call_{n}", output=path.read_text())


def reasoning(n: int) -> Reasoning:
    return Reasoning(id=f"rs_{n}", summary=[{"type": "summary_text", "text": "Read the code first."}])


def script() -> list[list[InputItem]]:
    """The items each turn adds to the lane (the previous turn's output and the new input together)."""
    files = SOURCES
    return [
        [Message(role="user", content="The tests in tests/test_local_engine.py fail. Fix them.")],
        [reasoning(1), Message(role="assistant", content="Let me read it."), call(1, "engine.py")],
        [output(1, files[0])],
        [reasoning(2), call(2, "kv_pool.py"), call(3, "loader.py")],
        [output(2, files[1]), output(3, files[2])],
        [Message(role="assistant", content="Found it."), Message(role="user", content="Good, go on.")],
        [call(4, "template.py"), output(4, files[3])],
        [Message(role="developer", content="Keep answers short.")],
        [Message(role="assistant", content="I will check one more.")],
        [call(5, "decoding.py")],  # joins the assistant message the previous turn ended with
        [output(5, files[4]), call(6, "a.py"), call(7, "b.py"), output(6, files[5])],
        [output(7, files[6])],  # a second tool output after one the previous turn ended with
        [
            reasoning(3),
            Message(role="assistant", content="Done: the fix is in."),
            Message(role="user", content="Thanks."),
        ],
    ]


def run_script(
    template: Template, *, tools: tuple[ToolSpec, ...], instructions: str | None
) -> Counter[tuple[str, str]]:
    """Every turn rendered incrementally from the previous turn's state and in full; asserts the ids are
    equal (with and without the generation prompt) and returns the renderer's counts."""
    renderer = IncrementalRenderer(template)
    reference = IncrementalRenderer(template, enabled=False)
    history: list[InputItem] = []
    parent: RenderedPrefix | None = None
    parent_ids: list[int] = []
    for turn, items in enumerate(script()):
        history.extend(items)
        for generate in (False, True):
            full = reference.render(history, instructions, tools, generate=generate, parent=None)
            step = renderer.render(
                history,
                instructions,
                tools,
                generate=generate,
                parent=parent,
                parent_ids=parent_ids,
                count=generate,
            )
            assert step.prompt == full.prompt, f"turn {turn} (generate={generate}): the ids differ"
        assert step.prefix is not None, f"turn {turn}: nothing to extend next turn"
        parent, parent_ids = step.prefix, step.prompt
    return renderer.counts


def summary(counts: Counter[tuple[str, str]]) -> dict[str, Any]:
    return {f"{path}:{reason}" if reason else path: n for (path, reason), n in sorted(counts.items())}
