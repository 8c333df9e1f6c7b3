"""The repository's promises: README's two set-up commands, CI running the same one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands_demo_then_tests():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each set-up command is one line"
    assert commands[0].endswith("lipkit demo"), commands[0]
    assert "pytest" in commands[1] and '".[dev]"' in commands[1], commands[1]
    for command in commands:
        assert "-c constraints.txt" in command, "installs must keep the CPU torch pin"


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_constraints_pin_the_cpu_torch_on_disk():
    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert "torch==2.13.0" in pins
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()
