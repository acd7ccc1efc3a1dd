"""Protects the command line's user errors: one clear line on stderr, exit code 2."""

from __future__ import annotations

import pytest

from flywheel_cli.main import main
from resources.lineage.store import LineageStore
from tests.support.ports import free_ports


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def test_bad_set_is_one_line(tmp_path, capsys):
    args = ["demo", "--home", str(tmp_path), "--no-serve", "--set", "training.steps_per_cycle"]
    assert main(args) == 2
    _one_line_error(capsys, "flywheel demo:", "key=value")


def test_missing_code_file_is_one_line(tmp_path, capsys):
    args = ["review", "--code", str(tmp_path / "nope.py"), "--comment", "x"]
    assert main(args) == 2
    _one_line_error(capsys, "flywheel review:", "no such file")


def test_no_server_is_one_line(tmp_path, capsys):
    code = tmp_path / "a.py"
    code.write_text("x = 1\n")
    url = f"127.0.0.1:{free_ports(1)[0]}"
    assert main(["review", "--code", str(code), "--comment", "x", "--url", url]) == 2
    _one_line_error(capsys, "flywheel review:")


@pytest.mark.parametrize(
    "command",
    [["rollback", "3"], ["audit"], ["cache", "list"], ["export-serving", "vllm", "--out", "x"]],
)
def test_a_mistyped_home_is_one_line_and_creates_nothing(tmp_path, capsys, command):
    home = tmp_path / "typo"
    assert main([*command, "--home", str(home)]) == 2
    _one_line_error(capsys, f"flywheel {command[0]}:", "no lineage store", "--home")
    assert not home.exists()


def test_rollback_to_an_unknown_version_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_DEBUG", raising=False)
    LineageStore(home=str(tmp_path)).query("SELECT 1")  # an empty store
    assert main(["rollback", "7", "--home", str(tmp_path)]) == 2
    _one_line_error(capsys, "flywheel rollback:", "no deployment")


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["demo", "--home", str(tmp_path), "--no-serve", "--set", "nonsense"])
