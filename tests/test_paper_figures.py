"""Every paper figure the project prints or documents is the paper's: checked against the paper's text in
../shared/paper (its tables are tab-separated rows above their "Table N." caption).

Two checks. The comparisons the replication report prints (``training.replicate.report.PAPER``) and the
documentation repeats (the replication's reading in docs/benchmarks.md, the model sizes in the README's model
table) are pinned to their table, row and column. And a scan of the repository's Markdown and Python files (and
the recorded replication results) finds every figure quoted beside "paper" or "Table N" — a two-digit percentage
or size such as 78.1 or 44.6M — and requires it to appear in the table the clause names (or, where no table is
named, in the paper's text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.replicate.report import PAPER

from .conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
PAPER_TEXT = SHARED / "paper" / "constcl-cvpr2022.md"
FIGURE = re.compile(r"(?<![\d.])[1-9]\d\.\d{1,2}(?![\d.])")  # 78.1, 44.6(M), 51.46; never 0.472 or 2.0.1
CUE = re.compile(r"\bpaper\b|\bTables? \d", re.IGNORECASE)
TABLE_REF = re.compile(r"\bTables? \(?(\d+(?:\s*(?:,|and)\s*\d+)*)")
SCANNED_DIRS = ("constcl_zoo", "training", "export", "demos", "docs", "benchmarks")

# (table, row label, column index in the row's cells, words of the header cells above that column)
COLUMNS: dict[tuple[int, str], tuple[int, tuple[str, ...]]] = {
    (1, "AVA v2.2 mAP (GT)"): (6, ("AVA", "(GT)")),
    (1, "AVA v2.2 mAP (Det)"): (7, ("(Det)",)),
    (1, "OTB2015 precision"): (8, ("Precision",)),
    (1, "OTB2015 success"): (9, ("Success",)),
    (2, "K400 linear top-1"): (1, ("K400",)),
    (6, "AVA-Kinetics mAP (GT)"): (4, ("AVA-Kinetics", "(GT)")),
    (6, "OTB precision"): (7, ("OTB", "Precision")),
    (6, "OTB success"): (8, ("Success",)),
    (6, "params (M)"): (9, ("#Params (M)",)),
    (6, "FLOPs (G)"): (10, ("#FLOPs (G)",)),
}
# The comparisons stated in words: (where, table, row, column, figure).
QUOTES: tuple[tuple[str, int, str, str, str], ...] = (
    ("report", 2, "CVRL", "K400 linear top-1", "66.1"),
    ("report", 2, "ConST-CL", "K400 linear top-1", "66.6"),
    ("report", 1, "CVRL", "OTB2015 precision", "75.4"),
    ("report", 1, "CVRL", "OTB2015 success", "53.7"),
    ("report", 1, "ConST-CL", "OTB2015 precision", "78.1"),
    ("report", 1, "ConST-CL", "OTB2015 success", "55.2"),
    ("report", 1, "CVRL", "AVA v2.2 mAP (GT)", "24.9"),
    ("report", 1, "CVRL", "AVA v2.2 mAP (Det)", "18.4"),
    ("report", 1, "ConST-CL", "AVA v2.2 mAP (GT)", "31.1"),
    ("report", 1, "ConST-CL", "AVA v2.2 mAP (Det)", "24.1"),
    ("report", 6, "0", "AVA-Kinetics mAP (GT)", "35.3"),
    ("report", 6, "5", "AVA-Kinetics mAP (GT)", "37.6"),
    ("report", 6, "0", "OTB precision", "75.4"),
    ("report", 6, "5", "OTB precision", "79.0"),
    ("report", 6, "0", "OTB success", "56.6"),
    ("report", 6, "5", "OTB success", "55.4"),
    ("docs/benchmarks.md", 1, "ConST-CL", "OTB2015 success", "55.2"),
    ("docs/benchmarks.md", 1, "CVRL", "OTB2015 success", "53.7"),
    ("docs/benchmarks.md", 1, "ConST-CL", "OTB2015 precision", "78.1"),
    ("docs/benchmarks.md", 1, "CVRL", "OTB2015 precision", "75.4"),
    ("docs/benchmarks.md", 1, "ConST-CL", "AVA v2.2 mAP (GT)", "31.1"),
    ("docs/benchmarks.md", 1, "CVRL", "AVA v2.2 mAP (GT)", "24.9"),
    ("docs/benchmarks.md", 1, "ConST-CL", "AVA v2.2 mAP (Det)", "24.1"),
    ("docs/benchmarks.md", 1, "CVRL", "AVA v2.2 mAP (Det)", "18.4"),
    ("docs/benchmarks.md", 2, "ConST-CL", "K400 linear top-1", "66.6"),
    ("docs/benchmarks.md", 2, "CVRL", "K400 linear top-1", "66.1"),
    ("README.md", 6, "-", "params (M)", "44.6"),
    ("README.md", 6, "1", "params (M)", "71.7"),
    ("README.md", 6, "-", "FLOPs (G)", "45.6"),
    ("docs/official-differences.md", 6, "0", "params (M)", "77.7"),
)


def _paper() -> str:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"{PAPER_TEXT} not found: ../shared/paper (the paper's text) is not beside this checkout")
    return PAPER_TEXT.read_text(encoding="utf-8")


def _cell(text: str) -> str:
    """A table cell without HTML tags and citations: ``"<b>39.4</b>"`` -> ``"39.4"``, ``"CVRL [43]"`` -> ``"CVRL"``."""
    return re.sub(r"\s*\[[^\]]*\]", "", re.sub(r"<[^>]+>", "", text)).strip()


def paper_tables(text: str) -> dict[int, list[list[str]]]:
    """``{N: rows}`` for every "Table N." caption: the tab-separated lines just above it, header lines included."""
    lines = text.splitlines()
    tables: dict[int, list[list[str]]] = {}
    for i, line in enumerate(lines):
        m = re.match(r"Table (\d+)\.", line)
        if not m:
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        rows = []
        while j >= 0 and "\t" in lines[j]:
            rows.insert(0, [_cell(c) for c in lines[j].split("\t")])
            j -= 1
        tables[int(m.group(1))] = rows
    return tables


def _row(rows: list[list[str]], label: str) -> list[str]:
    found = [r for r in rows if r[0] == label]
    assert len(found) == 1, f"row {label!r}: {len(found)} rows of that label"
    return found[0]


def test_paper_tables_parse() -> None:
    tables = paper_tables(_paper())
    assert sorted(tables) == [1, 2, 3, 4, 5, 6, 7]
    assert _row(tables[1], "ConST-CL")[3] == "39.4" and _row(tables[3], "ConST-CL")[2] == "71.7"


@pytest.mark.parametrize(("where", "table", "row", "column", "figure"), QUOTES,
                         ids=[f"{q[0]}-T{q[1]}-{q[2]}-{q[3]}" for q in QUOTES])
def test_quoted_comparison_is_the_papers(where: str, table: int, row: str, column: str, figure: str) -> None:
    rows = paper_tables(_paper())[table]
    index, header_words = COLUMNS[(table, column)]
    header = " ".join(" ".join(r[max(0, index - 1):index + 2]) for r in rows if not FIGURE.search(r[index]))
    assert all(w in header for w in header_words), f"Table {table} column {index} is not {column!r}: {header!r}"
    assert _row(rows, row)[index] == figure, f"Table {table}, {row}, {column}: the paper prints " \
                                             f"{_row(rows, row)[index]}, we quote {figure}"
    text = PAPER if where == "report" else (ROOT / where).read_text(encoding="utf-8")
    assert re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d])", text), f"{figure} is no longer quoted in {where}"


def _documents() -> list[tuple[str, str]]:
    """(name, text) of every file that may quote the paper: Markdown and Python outside the tests, the recorded
    replication results' "paper" line, and the report's PAPER constant."""
    docs = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8")), ("report.PAPER", PAPER)]
    for d in SCANNED_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.suffix in (".md", ".py") and p.is_file():
                docs.append((str(p.relative_to(ROOT)), p.read_text(encoding="utf-8", errors="replace")))
    record = ROOT / "benchmarks" / "results" / "replicate" / "results.json"
    docs.append((str(record.relative_to(ROOT)), json.loads(record.read_text(encoding="utf-8"))["paper"]))
    return docs


def _tables_named(text: str) -> set[int]:
    return {int(n) for m in TABLE_REF.finditer(text) for n in re.findall(r"\d+", m.group(1))}


def quoted_figures(text: str) -> list[tuple[str, set[int], str]]:
    """``(figure, tables named, clause)`` for every figure in a paragraph that mentions the paper or a table; the
    tables are those the figure's clause (the text between ";" and sentence ends) names: none means "the paper's
    text" (a recipe figure such as the learning rate)."""
    found = []
    for block in re.split(r"\n\s*\n", text):
        if not CUE.search(block):
            continue
        for clause in re.split(r";|\.\s", block):
            found += [(f, _tables_named(clause), " ".join(clause.split())) for f in FIGURE.findall(clause)]
    return found


def test_every_quoted_figure_is_in_the_named_table() -> None:
    paper = _paper()
    tables = paper_tables(paper)
    wrong, count = [], 0
    for name, text in _documents():
        for figure, named, clause in quoted_figures(text):
            count += 1
            if named:
                cells = {c for n in named for r in tables.get(n, []) for c in r}
                ok = figure in cells
            else:
                ok = re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d])", paper) is not None
            if not ok:
                where = f"Table {', '.join(map(str, sorted(named)))}" if named else "the paper's text"
                wrong.append(f"{name}: {figure} is not in {where}: {clause[:160]!r}")
    assert not wrong, "\n".join(wrong)
    assert count >= 30  # the scan sees the quotes (README, report, results, docs)


def test_the_scan_catches_a_misquote() -> None:
    """The old quote (OTB2015 CVRL 52.5 / 39.6 vs ConST-CL 78.1 / 58.1 "Table 5") is caught figure by figure."""
    tables = paper_tables(_paper())
    old = "OTB2015 tracking precision / success CVRL 52.5 / 39.6 vs ConST-CL 78.1 / 58.1 (Table 5); paper"
    found = quoted_figures(old)
    assert [f for f, _, _ in found] == ["52.5", "39.6", "78.1", "58.1"]
    cells = {c for r in tables[5] for c in r}
    assert all(named == {5} for _, named, _ in found) and not any(f in cells for f, _, _ in found)
