"""constcl_zoo.card: the one model-card builder (front matter, headings, tables, section replacement); nothing else
in the repository writes a card's front matter."""

from __future__ import annotations

from pathlib import Path

from constcl_zoo.card import Markdown, ModelCard, replace_section

ROOT = Path(__file__).resolve().parents[1]


def test_front_matter_and_markdown():
    card = ModelCard("tracking", base_model="constcl_r3d14_w16.real_cpu").title("T").text("Para.")
    card.code("python", "x = 1").add("").section("Numbers").table(("a", "b", "c"), [(1, "x", ""), ("y", 2.5, "z")])
    assert card.render() == (
        "---\nlibrary_name: constcl-zoo\nlicense: apache-2.0\ntags: [video, self-supervised-learning, constcl]\n"
        "pipeline_tag: object-detection\nbase_model: constcl_r3d14_w16.real_cpu\n---\n\n# T\n\nPara.\n\n"
        "```python\nx = 1\n```\n\n## Numbers\n\n| a | b | c |\n|---|---|---|\n| 1 | x | |\n| y | 2.5 | z |\n")
    assert ModelCard(tags=("video", "r3d")).render().startswith("---\nlibrary_name: constcl-zoo\nlicense: apache-2.0\n"
                                                               "tags: [video, r3d]\npipeline_tag: feature-extraction\n")


def test_replace_section():
    section = Markdown().section("What it recognises").bullets("walk").render()
    assert replace_section("# card\n", "## What it recognises", section) == "# card\n\n" + section
    twice = replace_section("# card\n\n" + section, "## What it recognises", section)
    assert twice == "# card\n\n" + section
    assert replace_section("", "## What it recognises", section) == section


def test_no_other_module_writes_a_cards_front_matter():
    offenders = [str(p.relative_to(ROOT)) for folder in ("constcl_zoo", "training", "export", "demos")
                 for p in (ROOT / folder).rglob("*.py")
                 if p.name != "card.py" and "pipeline_tag:" in p.read_text()]
    assert not offenders, f"model cards are built by constcl_zoo.card only: {offenders}"
