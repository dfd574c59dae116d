"""Every rule id the project cites (test names such as ``test_r5_2_...``,
``R5.2`` in docstrings, docs and code) resolves to an anchor on the contract
page, docs/contract.md, so someone with only the repository can look it up."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract.md"

#: ``R5.2`` in prose, ``r5_2`` in test names; not inside a longer word or number.
_CITED = re.compile(r"(?<![A-Za-z0-9])[Rr](\d{1,2})[._](\d{1,2})(?![0-9])")
_ANCHOR = re.compile(r"^#### (R\d+\.\d+) .+ \{ #(R\d+\.\d+) \}$", re.MULTILINE)


def _anchors() -> list[str]:
    found = _ANCHOR.findall(CONTRACT.read_text(encoding="utf-8"))
    assert all(title == anchor for title, anchor in found), "a heading's id differs from its title"
    return [anchor for _, anchor in found]


def _citing_files() -> list[Path]:
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "proxima").rglob("*.py")]
    files += [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "CHANGELOG.md"]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def _key(rule: str) -> tuple[int, int]:
    group, number = rule.removeprefix("R").split(".")
    return int(group), int(number)


def test_every_cited_rule_has_an_anchor_on_the_contract_page() -> None:
    anchors = set(_anchors())
    missing: dict[str, list[str]] = {}
    for path in _citing_files():
        for group, number in _CITED.findall(path.read_text(encoding="utf-8")):
            rule = f"R{group}.{number}"
            if rule not in anchors:
                missing.setdefault(rule, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"cited but not on docs/contract.md: {missing}"


def test_the_contract_page_states_each_rule_once_in_order() -> None:
    anchors = _anchors()
    assert anchors, "docs/contract.md has no rule headings"
    assert len(anchors) == len(set(anchors)), "a rule is stated twice"
    assert anchors == sorted(anchors, key=_key)
    groups = sorted({_key(a)[0] for a in anchors})
    assert groups == list(range(1, 15)), "R1 to R14, none missing"
    for group in groups:
        numbers = [n for g, n in map(_key, anchors) if g == group]
        assert numbers == list(range(1, len(numbers) + 1)), f"R{group} skips a number"


def test_the_cited_ids_are_found() -> None:
    """The pattern finds test names and prose alike (a guard for the check above)."""
    text = "def test_r5_2_stop(): ...  # see R11.5, not r2d2 or 2R1.1x or var1_2"
    assert _CITED.findall(text) == [("5", "2"), ("11", "5")]


def test_the_contract_page_is_linked_from_the_design_notes_and_the_nav() -> None:
    assert "(contract.md)" in (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    assert "contract.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
