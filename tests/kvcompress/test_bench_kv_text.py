"""The bench-kv-text suite: seeded, answerable from its document, sized to its target, scored per item."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from kv_text.run import Prompt, item_accuracy  # noqa: E402
from kv_text.tasks import TASKS, make_sample  # noqa: E402


def _count(text: str) -> int:
    """A stand-in tokenizer: about one token per 4 characters."""
    return max(1, len(text) // 4)


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("target", [1024, 4096])
def test_samples_are_seeded_sized_and_answerable(task, target) -> None:
    sample = make_sample(task, target, 3, _count)
    again = make_sample(task, target, 3, _count)
    other = make_sample(task, target, 4, _count)
    assert sample == again and sample != other
    total = _count(sample.instruction) + _count(sample.document) + _count(sample.question)
    assert 0.8 * target <= total <= target
    assert sample.answers and sample.question.endswith(("is", "are", "in", ":"))
    if task == "frequent_words":
        words = sample.document.split()
        counts = {w: words.count(w) for w in set(words)}
        ranked = sorted(counts.values(), reverse=True)
        assert [counts[w] for w in sample.answers] == ranked[:3]
    else:
        positions = [sample.document.index(a) for a in sample.answers]
        assert positions == sorted(positions)  # items in the order the document gives them
    if task == "niah_multivalue":
        assert len(sample.answers) == 4 and len(set(sample.answers)) == 4
    if task == "variable_tracking":
        value = re.search(r"assigned the value (\d+)", sample.question).group(1)
        assert f"VAR {sample.answers[0]} = {value}." in sample.document
        for before, after in zip(sample.answers, sample.answers[1:]):
            assert f"VAR {after} = VAR {before}." in sample.document


def test_item_accuracy_counts_an_item_only_when_every_token_matches() -> None:
    prompt = Prompt("t", 8, [1, 2, 3], 2, [1, 1, 1], answer_ids=[5, 6, 7, 8, 9], item_spans=[(0, 2), (2, 5)])
    assert item_accuracy(torch.tensor([5, 6, 7, 8, 9]), prompt) == 1.0
    assert item_accuracy(torch.tensor([5, 6, 7, 0, 9]), prompt) == 0.5
    assert item_accuracy(torch.tensor([0, 6, 0, 8, 9]), prompt) == 0.0
    layout = prompt.layout(2)
    assert len(layout) == 2 and layout.segment.tolist() == [0, 1]
