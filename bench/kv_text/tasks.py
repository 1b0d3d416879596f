"""A long-context text suite in RULER's style (Hsieh et al., arXiv 2404.06654), generated from a seed.

Six tasks, each a document, a question and a reference answer made of one or more *items* (a number,
a word, a variable name), built to a target length in the model's tokens:

* ``niah_single``: one "special magic number" needle in a haystack of RULER's repeated noise
  sentences ("The grass is green. The sky is blue. ...").
* ``niah_multikey``: four needles with different keys; the question asks for one.
* ``niah_multivalue``: four needles with the same key; the answer is all four numbers, in the order
  they appear.
* ``variable_tracking``: a chain of four assignments (``VAR AAAAA = 12345``, ``VAR BBBBB = VAR
  AAAAA``, ...) among two distractor chains and noise; the answer is the chain's variables, in order.
* ``frequent_words``: a coded text of random nonsense words drawn from a Zipf law; the answer is the
  three most frequent words, most frequent first (RULER's "fwe").
* ``qa``: a synthetic document of one-line biographies ("Harlan Voss was born in Quillmoor and works
  as a glassblower."); the question asks for one person's birthplace.

Every prompt is split into three segments, so that a :class:`~trillium.kvcompress.TokenLayout` can
treat the document's parts as segments: the instruction (after the chat template's user header),
the document, and the question (which ends with the chat template's assistant header and an answer
prefix, as RULER's templates do). Generated with ``numpy``'s ``default_rng(seed)``; never tuned on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LENGTHS", "TASKS", "TextSample", "make_sample"]

LENGTHS = (1024, 2048, 4096, 8192)
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "dra", "fen", "gol", "hir", "jun")
_CITIES = (
    "Quillmoor",
    "Brackenford",
    "Ashwick",
    "Dunmere",
    "Corvale",
    "Elmshade",
    "Fallowmere",
    "Greyhaven",
    "Holloway",
    "Ironbridge",
    "Juniper Bay",
    "Kestrel Point",
    "Larkspur",
    "Marrowby",
    "Northcliff",
    "Oakhurst",
    "Pellingham",
    "Ravensdale",
    "Stonebury",
    "Thornwick",
)
_JOBS = (
    "glassblower",
    "cartographer",
    "beekeeper",
    "luthier",
    "archivist",
    "ferryman",
    "chemist",
    "stonemason",
    "weaver",
    "astronomer",
    "baker",
    "clockmaker",
)
_FIRST = (
    "Harlan",
    "Mirela",
    "Osric",
    "Tamsin",
    "Bertil",
    "Ysolde",
    "Caspian",
    "Linnea",
    "Evander",
    "Sunniva",
    "Thaddeus",
    "Rosalind",
    "Ivo",
    "Petra",
    "Alaric",
    "Wren",
    "Soren",
    "Greta",
)
_LAST = (
    "Voss",
    "Halloran",
    "Kestrel",
    "Marsh",
    "Duvall",
    "Okafor",
    "Lindqvist",
    "Ferro",
    "Ashby",
    "Quade",
    "Ibarra",
    "Nakamura",
    "Thorne",
    "Wexler",
    "Brandt",
    "Solberg",
)
TEMPLATE_USER = "<|im_start|>user\n"
TEMPLATE_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class TextSample:
    """One prompt: ``instruction + document`` is the context, ``question`` ends in the answer
    prefix; ``answers`` are the items of the reference answer, each to follow a space."""

    task: str
    target_tokens: int
    instruction: str
    document: str
    question: str
    answers: tuple[str, ...]


Counter = Callable[[str], int]


def _number(rng: np.random.Generator) -> str:
    return str(int(rng.integers(1_000_000, 10_000_000)))


def _word(rng: np.random.Generator, syllables: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES, size=syllables))


def _variable(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), size=5))


def _fill(units: Callable[[], str], budget: int, count: Counter) -> list[str]:
    """Haystack pieces from ``units()`` until ``budget`` tokens (estimated by ``count``)."""
    pieces: list[str] = []
    used = 0
    while True:
        piece = units()
        cost = count(piece)
        if used + cost > budget:
            return pieces
        pieces.append(piece)
        used += cost


def _insert(pieces: list[str], needles: list[str], rng: np.random.Generator) -> str:
    """Insert ``needles`` at random depths, in their order."""
    depths = sorted(int(d) for d in rng.integers(0, len(pieces) + 1, size=len(needles)))
    out = list(pieces)
    for offset, (depth, needle) in enumerate(zip(depths, needles)):
        out.insert(depth + offset, needle)
    return "".join(out)


def _niah(rng, budget, count, *, keys: int, values: int) -> tuple[str, str, str, tuple[str, ...]]:
    names = list(dict.fromkeys(_word(rng) for _ in range(keys * 3)))[:keys]
    asked = names[int(rng.integers(0, keys))]
    pairs = [(name, _number(rng)) for name in names for _ in range(values if name == asked else 1)]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    needles = [f"One of the special magic numbers for {name} is: {value}. " for name, value in pairs]
    answers = [value for name, value in pairs if name == asked]  # needles keep their order in the text
    pieces = _fill(lambda: NOISE, budget - sum(count(n) for n in needles), count)
    document = _insert(pieces, needles, rng)
    instruction = (
        "Some special magic numbers are hidden within the following text. Make sure to memorize them.\n"
    )
    if values > 1:
        question = f"What are all the special magic numbers for {asked} mentioned in the provided text?"
        prefix = f"The special magic numbers for {asked} mentioned in the provided text are"
    else:
        question = f"What is the special magic number for {asked} mentioned in the provided text?"
        prefix = f"The special magic number for {asked} mentioned in the provided text is"
    return instruction, document, f"{question}{TEMPLATE_ASSISTANT}{prefix}", tuple(answers)


def _variable_tracking(rng, budget, count) -> tuple[str, str, str, tuple[str, ...]]:
    chains = []
    for _ in range(3):
        names = [_variable(rng) for _ in range(4)]
        value = str(int(rng.integers(10_000, 100_000)))
        lines = [f"VAR {names[0]} = {value}. "] + [f"VAR {b} = VAR {a}. " for a, b in zip(names, names[1:])]
        chains.append((value, names, lines))
    needles = [line for step in range(4) for _, _, lines in chains for line in [lines[step]]]
    pieces = _fill(lambda: NOISE, budget - sum(count(n) for n in needles), count)
    document = _insert(pieces, needles, rng)
    value, names, _ = chains[0]
    instruction = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
    question = (
        f"Find all variables that are assigned the value {value} in the text above.{TEMPLATE_ASSISTANT}"
        f"According to the chain(s) of variable assignment in the text above, 4 variables are assigned "
        f"the value {value}, they are:"
    )
    return instruction, document, question, tuple(names)


def _frequent_words(rng, budget, count) -> tuple[str, str, str, tuple[str, ...]]:
    vocabulary = list(dict.fromkeys(_word(rng, 2) for _ in range(400)))[:120]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.2
    weights /= weights.sum()
    words: list[str] = []
    used = 0
    while used < budget:
        chunk = list(rng.choice(vocabulary, size=32, p=weights))
        words += chunk
        used += count(" " + " ".join(chunk))
    document = " ".join(words) + "\n"
    frequency = {w: words.count(w) for w in set(words)}
    top = sorted(frequency, key=lambda w: (-frequency[w], vocabulary.index(w)))[:3]
    instruction = "Read the following coded text and track the frequency of each coded word.\n"
    question = (
        "What are the three most frequently appeared words in the coded text above?"
        f"{TEMPLATE_ASSISTANT}According to the coded text above, the three most frequently appeared "
        "words are:"
    )
    return instruction, document, question, tuple(top)


def _qa(rng, budget, count) -> tuple[str, str, str, tuple[str, ...]]:
    people: dict[str, str] = {}

    def biography() -> str:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        while name in people:
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)} {rng.choice(_LAST)}"
        city = str(rng.choice(_CITIES))
        people[name] = city
        return f"{name} was born in {city} and works as a {rng.choice(_JOBS)}. "

    document = "".join(_fill(biography, budget, count))
    asked = list(people)[int(rng.integers(0, len(people)))]
    # _fill may have drawn one biography it then dropped: keep only names present in the document
    while asked not in document:
        asked = list(people)[int(rng.integers(0, len(people)))]
    instruction = "Answer the question based on the given documents.\n"
    question = f"In which town was {asked} born?{TEMPLATE_ASSISTANT}{asked} was born in"
    return instruction, document, question, (people[asked],)


TASKS: dict[str, Callable[..., tuple[str, str, str, tuple[str, ...]]]] = {
    "niah_single": lambda rng, b, c: _niah(rng, b, c, keys=1, values=1),
    "niah_multikey": lambda rng, b, c: _niah(rng, b, c, keys=4, values=1),
    "niah_multivalue": lambda rng, b, c: _niah(rng, b, c, keys=1, values=4),
    "variable_tracking": _variable_tracking,
    "frequent_words": _frequent_words,
    "qa": _qa,
}


def make_sample(task: str, target_tokens: int, seed: int, count: Counter) -> TextSample:
    """The ``seed``-th sample of ``task`` at about ``target_tokens`` prompt tokens (``count``
    counts a string's tokens; the document gets what the instruction and question leave)."""
    budget = target_tokens - 96  # the chat template, instruction, question and answer prefix
    for _ in range(4):  # shrink the document until the whole prompt fits the target
        rng = np.random.default_rng([seed, target_tokens, list(TASKS).index(task)])
        instruction, document, question, answers = TASKS[task](rng, budget, count)
        sample = TextSample(
            task, target_tokens, TEMPLATE_USER + instruction, document, "\n" + question, answers
        )
        total = sum(count(part) for part in (sample.instruction, sample.document, sample.question))
        if total <= target_tokens:
            return sample
        budget -= total - target_tokens + 8
    raise ValueError(f"{task} does not fit {target_tokens} tokens")
