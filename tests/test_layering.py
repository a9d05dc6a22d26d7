"""Who may import whom (docs/architecture.md), checked on the source: an AST walk over every module,
imports inside functions included, so a lazy import cannot slip past.

- the core (``pq/`` outside ``pq/cli/``, the composition root) imports no wing;
- ``simulators/`` imports nothing of ours (it stands in for a plant);
- ``connectors/`` and ``models/`` import the core only; ``ui/`` the core and ``models``;
- no wing imports the composition root back (``benchmarks`` and psutil: ``tests/test_cli.py``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("pq", "connectors", "models", "ui", "simulators", "benchmarks")

# package -> the packages of ours it may import ("pq.cli" is the composition root, never allowed below)
ALLOWED = {
    "pq": {"pq"},
    "connectors": {"pq", "connectors"},
    "models": {"pq", "models"},
    "ui": {"pq", "models", "ui"},
    "simulators": {"simulators"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module))
    return found


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    owner = rel.parts[0]
    in_root = rel.parts[:2] == ("pq", "cli")
    out = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top not in OURS:
            continue
        where = f"{rel}:{line} imports {module}"
        if in_root:
            continue  # the composition root may import any package
        if module == "pq.cli" or module.startswith("pq.cli."):
            out.append(f"{where}: only the composition root's own modules import it")
        elif top not in ALLOWED[owner]:
            out.append(f"{where}: {owner}/ may import only {', '.join(sorted(ALLOWED[owner]))}")
    return out


def _product_modules():
    for package in ALLOWED:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_module_keeps_the_import_rules():
    problems = [v for path in _product_modules() for v in _violations(path)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_core_module_importing_a_wing(tmp_path, monkeypatch):
    """The rule must be able to fail: the shape of pq/edge/process.py before it moved to pq/cli/."""
    fake_root = tmp_path
    (fake_root / "pq" / "edge").mkdir(parents=True)
    module = fake_root / "pq" / "edge" / "process.py"
    module.write_text("def start():\n    from connectors.tagmap import load_tagmap\n    from models.registry import x\n"
                      "from pq.cli import get_settings\n")
    wing = fake_root / "simulators"
    wing.mkdir()
    (wing / "server.py").write_text("from pq.config import Settings\nfrom .signals import SIGNALS\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    found = _violations(module) + _violations(wing / "server.py")
    assert any("imports connectors.tagmap" in v for v in found)
    assert any("imports models.registry" in v for v in found)
    assert any("imports pq.cli" in v for v in found)
    assert any("simulators/server.py:1 imports pq.config" in v for v in found)
    assert not any("signals" in v for v in found), found  # a relative import inside the package is fine
