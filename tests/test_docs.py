"""docs/formulation.md agrees with the code, and the Markdown files link only inside the repo."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from sflam_opt import Scenario

ROOT = Path(__file__).resolve().parents[1]
FORMULATION = ROOT / "docs" / "formulation.md"
SECTIONS = ("system", "model", "training", "convergence", "objective", "constraints")


def _section(text: str, number: int) -> str:
    start = text.index(f'<a id="s{number}"></a>')
    nxt = text.find(f'<a id="s{number + 1}"></a>', start)
    return text[start : nxt if nxt >= 0 else len(text)]


def _key_table() -> dict[str, dict[str, str]]:
    """§7's table as {toml table: {key: default cell}}."""
    rows: dict[str, dict[str, str]] = {}
    table = ""
    for line in _section(FORMULATION.read_text(encoding="utf-8"), 7).splitlines():
        if not line.startswith("| ") or line.startswith("| table"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0]:
            table = cells[0].strip("`[]")
        for key in re.findall(r"`([a-z_0-9]+)", cells[1]):
            rows.setdefault(table, {})[key] = cells[-1]
    return rows


def test_every_scenario_key_is_documented() -> None:
    rows = _key_table()
    scn = Scenario.default(devices=2, seed=0)
    for name in SECTIONS:
        keys = {f.name for f in dataclasses.fields(type(getattr(scn, name)))}
        assert keys == set(rows[name]), name
    assert set(rows["bits"]) == {"levels", "min", "max"}
    device_keys = set(scn.to_dict()["device"][0]) | {"gain_db"}
    assert device_keys == set(rows["device"])


def test_documented_defaults_are_the_code_defaults() -> None:
    params = inspect.signature(Scenario.default).parameters
    assert (params["devices"].default, params["seed"].default) == (10, 0)
    doc = Scenario.default().to_dict()
    rows = _key_table()
    for name in ("system", "model", "training", "convergence", "objective"):
        for key, cell in rows[name].items():
            assert float(cell.strip("`")) == doc[name][key], f"[{name}] {key}"
    bits = dict(re.findall(r"`(min|max) = (\d+)`", rows["bits"]["min"]))
    assert {k: int(v) for k, v in bits.items()} == doc["bits"]
    assert "constraints" not in doc
    assert all(cell.startswith("absent") for cell in rows["constraints"].values())
    pmax = float(rows["device"]["max_power_w"].strip("`"))
    assert all(d["max_power_w"] == pmax for d in doc["device"])


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    ids |= {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    return ids


MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_stay_inside_the_repo(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{path.name}: link to missing file {target}"
        assert ROOT in dest.parents, f"{path.name}: link leaves the repository: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: no anchor #{anchor} in {file_part}"


def test_formulation_anchors_match_section_numbers() -> None:
    """Docstrings cite §N and §N.M: every numbered heading has the matching stable anchor."""
    text = FORMULATION.read_text(encoding="utf-8")
    pairs = re.findall(r'<a id="s([\d-]+)"></a>\n#+ §([\d.]+) ', text)
    heads = re.findall(r"^#+ §([\d.]+) ", text, flags=re.M)
    assert len(pairs) == len(heads)
    assert all(anchor == number.replace(".", "-") for anchor, number in pairs)
    top = [int(n) for n in heads if "." not in n]
    assert top == list(range(1, len(top) + 1))
