"""What the project says about itself agrees with what it does: pyproject's Python versions, the README's
command lines and statements (exit statuses, the FLOPs rule, reading records.jsonl)."""

import ast
import json
import re
import tomllib

from conftest import ROOT

# standard-library modules newer than the oldest Python a project might allow: (module, first version)
NEW_IN = {"tomllib": (3, 11)}


def _version(text: str) -> tuple[int, int]:
    """Versions as pyproject spells them (>=3.11, py311, 3.11) -> (3, 11)."""
    digits = re.search(r"(\d)\.?(\d+)", text)
    assert digits, text
    return int(digits[1]), int(digits[2])


def _imported_modules() -> set[str]:
    names = set()
    for path in [*(ROOT / "suite").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_the_python_versions_agree_with_the_code():
    """requires-python admits no Python the code cannot run on, and the linters check that same Python."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = _version(re.search(r">=\s*([\d.]+)", config["project"]["requires-python"]).group(1))
    needed = max([NEW_IN[m] for m in _imported_modules() if m in NEW_IN], default=(3, 0))
    assert floor >= needed, f"requires-python allows {floor}, but the code imports a module of {needed}"
    assert _version(config["tool"]["ruff"]["target-version"]) == floor
    assert _version(config["tool"]["mypy"]["python_version"]) == floor


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_reads_records_the_way_the_report_does(tmp_path):
    """Its way to read records.jsonl keeps the last line of a key, as the report does: run as shown."""
    text = (ROOT / "README.md").read_text()
    assert "the last line of a key wins" in text
    [block] = [b for b in _python_blocks(text) if "records.jsonl" not in b and "read_records(" in b]
    out = tmp_path / "quick"
    out.mkdir()
    lines = [
        {"key": "a", "kind": "train", "status": "failed"},
        {"key": "a", "kind": "train", "status": "ok"},  # the same job, after --retry-failed
    ]
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    names: dict = {}
    exec(block.replace('"results/quick"', repr(str(out))), names)
    assert list(names["df"]["status"]) == ["ok"] and list(names["train"]["status"]) == ["ok"]
