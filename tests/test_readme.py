"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_code_block(text):
    lines = text.split("```", 2)[1].splitlines()
    return [line.strip() for line in lines[1:] if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = first_code_block((ROOT / "README.md").read_text())
    test_commands = [c for c in commands if c.endswith("pytest")]
    assert len(test_commands) == 1
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_the_python_examples_run_in_order():
    # The tour first: later examples use its imports.
    blocks = (ROOT / "README.md").read_text().split("```python")[1:]
    assert len(blocks) >= 2
    namespace = {}
    for number, block in enumerate(blocks):
        code = block.split("```", 1)[0]
        exec(compile(code, f"README.md (python example {number + 1})", "exec"), namespace)
