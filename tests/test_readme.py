"""The README's API examples run as written (the blocks of "The API in ten lines", in order, one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def _api_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## The API in ten lines"):text.index("### Training your own network")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_api_examples_run():
    blocks = _api_blocks()
    assert len(blocks) >= 3
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the project's own documentation
    # what the comments promise
    assert ns["res"].nfe == 15 and ns["ll"].log_prob.shape == (256,)
    exact = ns["target"].marginal_log_prob(ns["trig"], ns["x"].double(), ns["torch"].full((256,), 1e-5, dtype=ns["torch"].float64))
    assert (ns["ll"].log_prob - exact).abs().mean() / 2 < 1e-4  # measured 1.1e-5
