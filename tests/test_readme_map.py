"""tests/README.md maps every section of README.md to the tests of its promises, and names only tests
that exist."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO


def _readme_sections() -> list[str]:
    headings = re.findall(r"^#{2,3} (.+)$", (REPO / "README.md").read_text(), flags=re.MULTILINE)
    return [heading.strip() for heading in headings]


def _test_names(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    return {name for name in names if name.startswith("test_")}


def test_every_readme_section_has_an_entry() -> None:
    table = (REPO / "tests" / "README.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    missing = [section for section in _readme_sections() if section not in rows]
    assert not missing, f"README.md sections without an entry in tests/README.md: {missing}"


def test_every_test_named_in_the_map_exists() -> None:
    named = re.findall(r"`(test_[a-z_]+\.py)::(test_[a-z0-9_]+)`", (REPO / "tests" / "README.md").read_text())
    assert named
    gone = [f"{module}::{test}" for module, test in named if test not in _test_names(REPO / "tests" / module)]
    assert not gone, f"tests/README.md names tests that do not exist: {gone}"


def test_the_architecture_rule_table_names_what_each_script_calls() -> None:
    """docs/architecture.md's rule -> function table is how a reader gets from a rule to the function that does its
    work in one step: each rule names its script, and each script imports the function the table names."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `([a-z_0-9]+\.py)` \| `([a-z_0-9]+)\.([a-z_0-9]+)`", doc, re.MULTILINE)
    rules = "".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    declared = set(re.findall(r"^\s*rule ([a-z_0-9]+):", rules, flags=re.MULTILINE))  # the demo's sit in an if
    assert {rule for rule, *_ in rows} == declared - {"all"}, "every rule has one row, and every row a rule"
    for rule, script, module, function in rows:
        block = re.split(r"\n\s*rule ", rules[rules.index(f"rule {rule}:") :], maxsplit=1)[0]
        assert f"scripts/{script}" in block, f"rule {rule} does not run {script}"
        imports = ast.parse((REPO / "workflow" / "scripts" / script).read_text())
        imported = {
            (node.module, alias.name)
            for node in ast.walk(imports)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert (f"finetune_hpo.{module}", function) in imported, f"{script} does not import {module}.{function}"


def test_the_package_import_graph_has_no_cycle() -> None:
    """docs/architecture.md promises no cycle, counting the imports made inside functions."""
    graph: dict[str, set[str]] = {}
    for path in (REPO / "src" / "finetune_hpo").glob("*.py"):
        imported = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("finetune_hpo."):
                imported.add(node.module.split(".")[1])
    state: dict[str, str] = {}

    def cycle_from(module: str, path: list[str]) -> list[str]:
        if state.get(module) == "open":
            return [*path[path.index(module) :], module]
        if state.get(module) == "done":
            return []
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            found = cycle_from(other, [*path, module])
            if found:
                return found
        state[module] = "done"
        return []

    for module in sorted(graph):
        found = cycle_from(module, [])
        assert not found, f"import cycle: {' -> '.join(found)}"
