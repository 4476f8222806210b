"""Model cards: the ``README.md`` of a checkpoint folder (the Hub shows it as the model's page). Every card the
project writes is built here: converted TF checkpoints (:mod:`constcl_zoo.convert`), exported pretraining runs
(``training.release.card``), the models shipped in the package (``training.replicate.install`` / ``ship``) and a
calibrated localizer's section (``training.tasks.localization.calibrate``).

A card is YAML front matter (library, licence, tags, the Hub's ``pipeline_tag`` for the task, ``base_model`` of a
task checkpoint on a registered encoder) and Markdown: ``ModelCard(task=...).title(...).text(...).code(...)
.section(...).table(...).render()``. :func:`replace_section` swaps one ``##`` section of a written card.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_TAGS", "PIPELINE_TAGS", "Markdown", "ModelCard", "replace_section", "table_row"]

#: the Hugging Face Hub pipeline tag of each kind of checkpoint (``None``: an encoder; the Hub has no tracking tag:
#: object detection is the nearest, as for action localization's per-person boxes)
PIPELINE_TAGS = {None: "feature-extraction", "recognition": "video-classification", "tracking": "object-detection",
                 "localization": "object-detection"}
DEFAULT_TAGS = ("video", "self-supervised-learning", "constcl")


class Markdown:
    """Markdown under construction, line by line (a card's section on its own: :func:`replace_section`)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> Markdown:
        """Lines as they are."""
        self.lines += lines
        return self

    def title(self, title: str) -> Markdown:
        """The ``#`` heading, then a blank line."""
        return self.add(f"# {title}", "")

    def section(self, heading: str) -> Markdown:
        """A ``##`` heading, then a blank line."""
        return self.add(f"## {heading}", "")

    def text(self, *paragraphs: str) -> Markdown:
        """Paragraphs, each followed by a blank line."""
        for paragraph in paragraphs:
            self.add(paragraph, "")
        return self

    def bullets(self, *items: str) -> Markdown:
        """A ``*`` list (no blank line after it)."""
        return self.add(*(f"* {item}" for item in items))

    def code(self, language: str, *lines: str) -> Markdown:
        """A fenced code block (no blank line after it)."""
        return self.add(f"```{language}", *lines, "```")

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]] = ()) -> Markdown:
        """A Markdown table: ``header`` and its rule, then one line per row (no blank line after it)."""
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        return self.add(*(table_row(row) for row in rows))

    def render(self) -> str:
        """The text (ends with one newline)."""
        return "\n".join(self.lines) + "\n"


class ModelCard(Markdown):
    """A card under construction: the front matter, then whatever the methods add."""

    def __init__(self, task: str | None = None, base_model: str | None = None,
                 tags: Sequence[str] = DEFAULT_TAGS) -> None:
        super().__init__()
        self.add("---", "library_name: constcl-zoo", "license: apache-2.0", f"tags: [{', '.join(tags)}]",
                 f"pipeline_tag: {PIPELINE_TAGS[task]}")
        if base_model:
            self.add(f"base_model: {base_model}")
        self.add("---", "")


def table_row(cells: Sequence[Any]) -> str:
    """One Markdown table line (an empty cell is ``| |``)."""
    return "|" + "".join(f" {c} |" if str(c) else " |" for c in cells)


def replace_section(card: str, heading: str, section: str) -> str:
    """``card`` with the section starting at the line ``heading`` (and everything after it) replaced by
    ``section``; appended after a blank line when the card has none."""
    head = card.split(heading, 1)[0].rstrip("\n")
    return (head + "\n\n" if head else "") + section
