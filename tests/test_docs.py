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


def _exit_statuses() -> set[int]:
    """Every status suite/cli.py can return: the int constants of its return statements."""
    tree = ast.parse((ROOT / "suite" / "cli.py").read_text())
    return {
        n.value
        for r in ast.walk(tree)
        if isinstance(r, ast.Return) and r.value is not None
        for n in ast.walk(r.value)
        if isinstance(n, ast.Constant) and type(n.value) is int
    }


def test_the_readme_documents_every_exit_status():
    text = " ".join((ROOT / "README.md").read_text().split())
    documented = text[text.index("**Exit status**") :][:900]
    assert _exit_statuses() == {0, 1, 2, 130}
    for status in _exit_statuses():
        assert re.search(rf"\b{status} (when|for)\b", documented), status
    assert "1 when a `run` had a job that failed" in documented
    assert "`compare --fail-on-regression` finds" in documented


def test_a_run_with_a_failed_job_exits_1(tmp_path, capsys):
    from suite.cli import main

    plugin = tmp_path / "broken_model.py"
    plugin.write_text(
        "from suite.interfaces import ModelSpec\n\n"
        "def build(spec, width, layers):\n"
        "    raise RuntimeError('this model cannot be built')\n\n"
        "BROKEN = ModelSpec('broken', 'other', build)\n"
    )
    profile = tmp_path / "p.toml"
    profile.write_text(
        'seeds = 1\n[train]\nsteps = 2\n[[experiment]]\nmodels = ["broken"]\nwidth = 4\n'
        '[[experiment.task]]\nname = "adding"\nparams = { seq_len = 4 }\n'
    )
    out = tmp_path / "out"
    assert main(["--plugin", str(plugin), "run", "--profile", str(profile), "--out", str(out)]) == 1
    assert "1 failed" in capsys.readouterr().err


# ---- the README's command lines, parsed by the real parser -----------------------------------------

PLACEHOLDERS = {"N": "2", "T": "1"}  # what the synopsis's integer placeholders stand for


def _readme_commands() -> list[str]:
    """Every `python -m suite ...` command of the README: the lines of its sh blocks (a synopsis line's
    indented continuations joined to it) and its inline code spans; comments and env settings dropped."""
    text = (ROOT / "README.md").read_text()
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith(" ") and lines and lines[-1].startswith("python -m suite"):
                lines[-1] += " " + line.strip()
            else:
                lines.append(re.sub(r"^(\w+=\S+ )+", "", line.split("#")[0].strip()))
    lines += [
        re.sub(r"^(\w+=\S+ )+", "", span) for span in re.findall(r"`([^`\n]*python -m suite [^`\n]*)`", text)
    ]
    return [" ".join(line.split()) for line in lines if line.startswith("python -m suite")]


def _concrete(command: str) -> list[list[str]]:
    """A synopsis line -> argument lists: every [optional] part in, and for `a|b|c`, a list with each
    alternative (the i-th list takes the i-th alternative of every choice)."""
    tokens = command.replace("[", " ").replace("]", " ").split()[3:]  # after `python -m suite`
    choices = [t.split("|") for t in tokens]
    return [
        [PLACEHOLDERS.get(c[min(i, len(c) - 1)], c[min(i, len(c) - 1)]) for c in choices]
        for i in range(max(map(len, choices), default=1))
    ]


def test_every_readme_command_line_parses():
    from suite.cli import _parser

    commands = _readme_commands()
    assert len(commands) >= 10 and any("[" in c for c in commands)  # the synopsis is among them
    for command in commands:
        for argv in _concrete(command):
            try:
                _parser().parse_args(argv)
            except SystemExit:
                raise AssertionError(f"README: `{command}` does not parse as {argv}") from None


def test_the_readme_synopsis_shows_every_option():
    from suite.cli import _parser

    parser = _parser()
    synopsis = {c.split()[3]: c for c in _readme_commands() if "[" in c and not c.split()[3].startswith("-")}
    [commands] = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        options = {o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        shown = synopsis.get(name, next((c for c in _readme_commands() if c.split()[3] == name), ""))
        missing = {o for o in options if not re.search(rf"{o}\b", shown)}
        assert not missing, f"README synopsis of `{name}` lacks {sorted(missing)}"
    assert any(
        c.split()[3] == "--plugin" for c in _readme_commands()
    )  # a top-level option, before the command


def test_every_duration_the_readme_states_names_its_load():
    """A time measured on a shared machine is only true with its load: a paragraph or list item stating
    hours or days (or minutes of a run) says the load it was measured at, or that it was quiet."""
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # command blocks: their comments are limits, not runs
    parts = re.split(r"\n\s*\n|\n(?=\s*- )", text)
    duration = re.compile(r"(?<!the PTB )\b(hours?|days)\b|\d+h\d+m|\d+ min \d+ s")  # not an era
    for part in parts:
        if duration.search(part):
            assert re.search(r"\bload\b|\bquiet\b", part), " ".join(part.split())[:300]


def test_the_readme_states_the_training_flops_ratios_the_counter_gives():
    """Forward+backward over forward: 3x for a matrix product, 3.5x for attention (the fused kernels'
    backward recomputes q·kᵀ), as the README's FLOPs paragraph says; measured on the instrument."""
    import torch
    import torch.nn.functional as F

    from suite.measure.flops import _count

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            q = x * self.scale  # elementwise: not counted
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    def ratio(module, x):
        return _count(module, x, True) / _count(module, x, False)

    measured = {"attention": ratio(Attention(), torch.randn(2, 4, 16, 8))}
    measured["matrix product"] = ratio(
        torch.nn.Linear(8, 8, bias=False), torch.randn(2, 16, 8, requires_grad=True)
    )
    text = " ".join((ROOT / "README.md").read_text().split())
    flops = text[text.index("**FLOPs**") :][:1000]
    matrix = re.search(r"A matrix product's forward\+backward counts ([\d.]+)× its forward", flops)
    attention = re.search(r"attention's counts \*\*([\d.]+)×\*\* its forward", flops)
    assert matrix and attention, flops
    said = {"matrix product": float(matrix[1]), "attention": float(attention[1])}
    assert measured == said == {"matrix product": 3.0, "attention": 3.5}
