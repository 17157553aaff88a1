"""The layering theory → torch → checks has no way back up: ``sfotheory`` imports and names nothing above it.

Layers above: ``sfotorch`` (and torch), ``paper_checks``. They plug their ``sfo`` subcommands in
through the ``sfo.commands`` entry points of ``pyproject.toml``; the dispatcher discovers them.
"""

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import sfotheory
from sfotheory import cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(sfotheory.__file__).resolve().parent
ABOVE = ("sfotorch", "paper_checks", "torch", "torchvision")


def test_importing_every_sfotheory_module_loads_nothing_above_it():
    # a fresh interpreter: this test process has imported torch and sfotorch through other tests
    code = (
        "import json, pkgutil, sys, importlib, sfotheory\n"
        "names = [m.name for m in pkgutil.walk_packages(sfotheory.__path__, 'sfotheory.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps({'imported': names, 'loaded': sorted(sys.modules)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"sfotheory.rule", "sfotheory.cli", "sfotheory.problems.quadratic"} <= set(out["imported"])
    above = [m for m in out["loaded"] if m.split(".")[0] in ABOVE]
    assert above == [], f"sfotheory pulled in modules of the layers above it: {above}"


def test_sfotheory_source_names_no_package_above_it():
    # docstrings and comments included: the bottom layer does not know who builds on it
    pattern = re.compile(r"\b(sfotorch|paper_checks)\b")
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for path in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
            if pattern.search(line)]
    assert hits == []


def _declared_commands() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["entry-points"][cli.ENTRY_POINT_GROUP]


def test_pyproject_registers_every_subcommand_of_every_layer():
    declared = _declared_commands()
    assert declared == {"theory": "sfotheory.theory_cli:register", "cbs": "sfotheory.cbs_cli:register",
                        "compare": "sfotheory.compare_cli:register",
                        "train": "sfotorch.train_cli:register", "plot": "sfotorch.plot_cli:register",
                        "reproduce": "paper_checks.reproduce_cli:register"}
    for name, value in cli.OWN_COMMANDS.items():
        assert declared[name] == value


def test_the_installed_metadata_matches_pyproject():
    installed = {name: ep.value for name, ep in cli.command_entry_points()}
    assert installed == _declared_commands(), (
        "the installed entry points are stale: run  pip install --no-deps -e .  again")


def test_the_parser_has_one_subcommand_per_entry_point():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [name for name, _ in cli.command_entry_points()]
    assert list(sub.choices)[:2] == ["theory", "cbs"]


def _fake_register(subparsers):
    p = subparsers.add_parser("fake", help="a subcommand of a package built on sfotheory")
    p.set_defaults(handler=lambda args: 3)


def _group(*eps):
    return lambda group: [ep for ep in eps if ep.group == group]


def test_a_package_above_plugs_in_a_subcommand_without_sfotheory_naming_it(monkeypatch):
    fake = EntryPoint("fake", f"{__name__}:_fake_register", cli.ENTRY_POINT_GROUP)
    other_group = EntryPoint("ignored", f"{__name__}:_no_such_function", "other.group")
    monkeypatch.setattr(cli, "entry_points", _group(fake, other_group))
    assert [name for name, _ in cli.command_entry_points()] == ["theory", "cbs", "compare", "fake"]
    assert cli.main(["fake"]) == 3


def test_own_commands_work_without_installed_metadata(monkeypatch, capsys):
    monkeypatch.setattr(cli, "entry_points", _group())
    assert [name for name, _ in cli.command_entry_points()] == ["theory", "cbs", "compare"]
    assert cli.main(["theory", "--paper", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"][0]["b"] == 8


def test_a_name_registered_twice_keeps_the_first_registration(monkeypatch):
    first = EntryPoint("fake", f"{__name__}:_fake_register", cli.ENTRY_POINT_GROUP)
    second = EntryPoint("fake", f"{__name__}:_no_such_function", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", _group(first, second))
    assert dict(cli.command_entry_points())["fake"] is first


def _needs_torch(subparsers):
    def handler(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    subparsers.add_parser("needs").set_defaults(handler=handler)


def test_a_command_whose_layer_needs_torch_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(cli, "entry_points", _group(EntryPoint("needs", f"{__name__}:_needs_torch",
                                                               cli.ENTRY_POINT_GROUP)))
    assert cli.main(["needs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sfo needs: error: this command needs torch; install it with pip install -e '.[torch]'"]
