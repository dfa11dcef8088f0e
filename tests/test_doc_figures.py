"""A log behind every figure: the results files the docs cite exist, and their tables quote those files.

The rule, applied to README*.md and docs/*.md (not the tutorials, which are the notebook's own rendered output):
a *section* is the text between two headings. A section that cites a file under benchmarks/results/ is a
measurement section: every number in its markdown tables (the first column, the row's label, aside) and in its
printed-output blocks (fenced blocks with no language or `text`) must appear in one of the files it cites. A
table with a number in a section that cites no results file fails, unless it is listed in SETTINGS below with
the reason it holds settings, not measurements. No section is exempt: a figure whose run has not been logged
is deleted until it is.

A number matches when the log holds it to the doc's precision: 1,118 is 1118, 0.413 matches 0.4130 and 0.4127
(rounding), and a percentage may stand for a fraction in the log (8.3% for 0.083).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "README.zh-CN.md",
        *sorted(p for p in (ROOT / "docs").glob("*.md") if not p.name.startswith("tutorial"))]
# a results file; a name with YYYY-MM-DD in it is the pattern of one yet to be written, not a citation
CITATION = re.compile(r"benchmarks/results/(?![\w.+-]*YYYY)[\w.+-]+")
# a number not glued to a word before it (fp32, iter_0002) or a letter after it (2e-4, 5s); x and % may follow
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w.]*?[A-Za-wyz_])(?!\.\d)")
PERCENT = re.compile(r"\s?(?:[-–/]\s?\d+(?:\.\d+)?\s?)*%")

# Tables with numbers in sections that cite no results file, as (doc, its first two header cells): each holds
# settings, limits or descriptions, not measurements, for the reason given.
SETTINGS = {
    ("README.md", "preset | what it is"): "what each preset is; its FID figures are the benchmarks doc's logged tables",
    ("README.zh-CN.md", "教程中的现象 | 重现它的命令"): "commands and the tutorial's own reported figures",
    ("docs/architecture.md", "room | owns"): "the package's layout",
    ("docs/architecture.md", "to add or change | open"): "the package's layout",
    ("docs/diagnose.md", "field | what it holds"): "what the probes log, on how many images (constants in probes.py)",
    ("docs/diagnose.md", "check | fires when"): "the detectors' thresholds (named constants in diagnosis/detectors.py)",
    ("docs/guide.md", "path | what"): "the files of a run directory",
    ("docs/guide.md", "`--data` | images (train + test)"): "the named data sets and their sizes",
    ("docs/guide.md", "warning | what it sees"): "the warnings' thresholds",
    ("docs/metrics.md", "figure | meaning"): "what each metric means (k, subsets: the metrics' definitions)",
    ("docs/reliability.md", "path | written by"): "the files of a run directory",
    ("docs/reliability.md", "constant | value"): "limits: constants in the code",
    ("docs/reliability.md", "Constant | Value"): "limits: constants in the code",
    ("docs/reliability.md", "input | check"): "input checks and their limits",
    ("docs/reliability.md", "Input | Check"): "input checks and their limits",
    ("docs/reliability.md", "case | what happens"): "what each hostile case does and the limit that stops it",
    ("docs/reliability.md", "case | check"): "what each hostile case does and the limit that stops it",
    ("docs/serve.md", "request | parameters"): "the web API's parameters and bounds",
}

def sections(text: str) -> list[list[str]]:
    """The lines between two headings (a `#` line outside a fenced block), heading first."""
    found, fenced = [[]], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("#") and not fenced:
            found.append([])
        found[-1].append(line)
    return found


def tables(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """Each markdown table as (header cells, its data rows less their first column), and each fenced block as
    ([```TAG], its lines)."""
    found, table, fence = [], [], None
    for line in [*lines, ""]:
        if fence is not None:
            if not line.startswith("```"):
                table.append(line)
                continue
            found.append(([f"```{fence}"], table))
            fence, table = None, []
            continue
        if table and not line.startswith("|"):
            cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]
            found.append((cells[0], [" | ".join(row[1:]) for row in cells[2:]]))
            table = []
        if line.startswith("```"):
            fence = line[3:].strip()
        elif line.startswith("|"):
            table.append(line)
    return found


def numbers(text: str) -> list[tuple[Decimal, bool]]:
    """Each number in text as (value, written as a percentage)."""
    return [(Decimal(m.group(1).replace(",", "") + (m.group(2) or "")), bool(PERCENT.match(text, m.end())))
            for m in NUMBER.finditer(text)]


def in_log(value: Decimal, percent: bool, logged: set[Decimal]) -> bool:
    """value is in the log to its own precision (a percentage also as a fraction)."""
    half = Decimal(5).scaleb(value.as_tuple().exponent - 1)
    candidates = [value] + ([value / 100] if percent else [])
    return any(abs(v - x) <= half * (Decimal(1) if v is value else Decimal("0.01"))
               for v in candidates for x in logged)


def unlogged(doc_text: str, root: Path = ROOT, name: str = "") -> list[str]:
    """Every complaint about one document's text (named `name` in SETTINGS): figures not in the
    results files its sections cite, tables of figures in sections citing none, cited files missing."""
    complaints = []
    for section in sections(doc_text):
        heading = section[0] if section and section[0].startswith("#") else "(top)"
        cited = sorted(set(CITATION.findall("\n".join(section))))
        missing = [c for c in cited if not (root / c).is_file()]
        complaints += [f"{heading}: cites {c}, which does not exist" for c in missing]
        logged = {v for c in cited if c not in missing
                  for v, _ in numbers((root / c).read_text(encoding="utf-8", errors="replace"))}
        for header, rows in tables(section[1:]):
            code = header[0].startswith("```") and header[0] not in ("```", "```text")
            if (name, " | ".join(header[:2])) in SETTINGS or code or (header[0] == "```" and not cited):
                continue  # settings; a command or code; a drawing (untagged, where no log is cited)
            figures = [(row, v, p) for row in rows for v, p in numbers(row)]
            if figures and not cited:
                complaints.append(f"{heading}: a table of figures ({' | '.join(header)[:60]}) cites no "
                                  "benchmarks/results/ file")
            elif figures:
                complaints += [f"{heading}: {value}{'%' if percent else ''} (in '{row[:80]}') is in none of "
                               f"{cited}" for row, value, percent in figures if not in_log(value, percent, logged)]
    return complaints


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_results_file_exists(doc):
    text = doc.read_text(encoding="utf-8")
    missing = sorted({c for c in CITATION.findall(text) if not (ROOT / c).is_file()})
    assert not missing, f"{doc.name} cites results files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_figure_is_in_the_results_file_its_section_cites(doc):
    complaints = unlogged(doc.read_text(encoding="utf-8"), ROOT, doc.relative_to(ROOT).as_posix())
    assert not complaints, f"{doc.name}:\n" + "\n".join(complaints)


def test_exemptions_name_tables_and_sections_that_exist():
    seen = set()
    for doc in DOCS:
        name = doc.relative_to(ROOT).as_posix()
        for section in filter(None, sections(doc.read_text(encoding="utf-8"))):
            seen.add((name, section[0]))
            seen |= {(name, " | ".join(header[:2])) for header, _ in tables(section[1:])}
    assert not set(SETTINGS) - seen


def test_the_checker_catches_a_changed_figure(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x_cpu.txt").write_text(
        "# header\nrun      iterations  FID     share\nrecommended  13400  25.6341  0.083\nlabelled 1118 0.4130 2\n")
    doc = ("# Title\n\n## Figures\n\nLog: `benchmarks/results/x_cpu.txt`.\n\n"
           "| run | iterations | classifier-FID | smallest class |\n|---|---|---|---|\n"
           "| recommended (100 clusters) | 13,400 | 25.63 | 8.3% |\n| labelled | 1,118 | 0.413 | 2x |\n")
    assert unlogged(doc, tmp_path) == []
    for changed in ("25.64", "13,401", "9.3%", "0.412"):
        original = {"25.64": "25.63", "13,401": "13,400", "9.3%": "8.3%", "0.412": "0.413"}[changed]
        complaints = unlogged(doc.replace(original, changed), tmp_path)
        assert len(complaints) == 1 and changed.rstrip("%").replace(",", "") in complaints[0], complaints
    # 83% is not 8.3%, and a figure in a table whose section cites no log fails
    assert unlogged(doc.replace("8.3%", "83%"), tmp_path)
    assert unlogged(doc.replace("Log: `benchmarks/results/x_cpu.txt`.", ""), tmp_path)
    assert unlogged(doc.replace("x_cpu.txt", "y_cpu.txt"), tmp_path)[0].endswith("does not exist")
    assert unlogged(doc.replace("x_cpu.txt", "x_cpu_YYYY-MM-DD.txt"), tmp_path)  # a pattern cites no file
    # printed-output blocks are checked like tables; commands are not
    block = "\n```\nrecommended  13400  25.63\n```\n\n```bash\npython -m benchmarks.x --minutes 7\n```\n"
    assert unlogged(doc + block, tmp_path) == []
    assert unlogged(doc + block.replace("25.63", "26.63"), tmp_path)
