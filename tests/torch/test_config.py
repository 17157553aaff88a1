"""sfo train configurations: the authors' settings in configs/, overrides, and one-line errors."""

from __future__ import annotations

import glob
import os

import pytest

from sfotheory.cli import main
from sfotheory.paper import PAPER_ADAPTIVE, PAPER_CONSTANT, PAPER_PERIODIC
from sfotheory.validation import ParameterError
from sfotorch.config import (SCHEMA, apply_overrides, config_to_toml, flatten_config, load_config,
                             load_config_text, parse_override)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml")))
MINIMAL = """
[run]
name = "t"
[data]
dataset = "fashion_mnist"
[model]
name = "small_cnn"
[schedule]
policy = "adaptive_exponential"
b0 = 8
eta0 = 0.1
eps0 = 0.5
delta = 2.0
gamma = 1.4
tau = 10
[train]
max_steps = 5
"""


def test_every_shipped_config_loads_and_round_trips_through_the_resolved_toml():
    assert len(CONFIGS) >= 12
    for path in CONFIGS:
        cfg = load_config(path)
        again = load_config_text(config_to_toml(cfg), path)
        assert again == cfg, path


@pytest.mark.parametrize("path", [p for p in CONFIGS if os.path.basename(p).startswith("cifar")],
                         ids=lambda p: os.path.basename(p))
def test_the_authors_configs_hold_the_papers_settings(path):
    cfg = load_config(path)
    name = os.path.basename(path)
    sched = cfg["schedule"]
    expected = {"adaptive": PAPER_ADAPTIVE, "periodic": PAPER_PERIODIC, "constant": PAPER_CONSTANT}[
        name.rsplit("_", 1)[1].removesuffix(".toml")]
    for key, value in expected.items():
        assert sched[key] == value, (name, key)
    assert cfg["optimizer"] == {"name": "sgd", "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}
    assert cfg["train"]["epochs"] == 200
    assert cfg["data"]["augment"] is True
    assert cfg["monitor"]["kind"] == "exact"
    model = {"densenet": "densenet", "resnet18": "resnet18"}[name.split("_")[1]]
    assert cfg["model"]["name"] == model
    assert cfg["data"]["dataset"] == name.split("_")[0]


def test_the_cifar_configs_cover_densenet_cifar100_and_resnet18_on_both_cifars():
    names = {os.path.basename(p) for p in CONFIGS}
    for stem in ("cifar100_densenet", "cifar10_resnet18", "cifar100_resnet18"):
        for policy in ("adaptive", "periodic", "constant"):
            assert f"{stem}_{policy}.toml" in names
    for policy in ("adaptive", "periodic", "constant"):
        assert f"fashion_mnist_{policy}_cpu.toml" in names


def test_defaults_are_filled_and_overrides_parse_toml_values():
    cfg = load_config_text(MINIMAL)
    assert cfg["optimizer"]["momentum"] == 0.0 and cfg["monitor"]["kind"] == "exact"
    assert cfg["schedule"]["b_max"] is None          # left to the rule constructor's default
    cfg2 = apply_overrides(cfg, ["schedule.tau=200", "data.root=/data/fm", "run.seeds=[0, 1, 2]",
                                 "schedule.eta0=1", "monitor.kind=subsampled", "monitor.sample_size=64"])
    assert cfg2["schedule"]["tau"] == 200 and cfg2["data"]["root"] == "/data/fm"
    assert cfg2["run"]["seeds"] == [0, 1, 2]
    assert cfg2["schedule"]["eta0"] == 1.0 and isinstance(cfg2["schedule"]["eta0"], float)
    assert cfg["schedule"]["tau"] == 10               # the original is not changed
    assert flatten_config(cfg2)["run.seeds"] == "[0, 1, 2]"


def test_changing_the_policy_by_override_drops_the_old_policys_keys():
    cfg = apply_overrides(load_config_text(MINIMAL), ["schedule.policy=constant"])
    assert cfg["schedule"]["policy"] == "constant" and cfg["schedule"]["delta"] is None
    assert cfg["schedule"]["tau"] == 10


@pytest.mark.parametrize("override, words", [
    ("schedule.b0=0", ["'schedule.b0'", ">= 1", "schedule.b0=0"]),
    ("schedule.tua=5", ["'schedule.tua'", "known keys", "tau"]),
    ("schedule.gamma=1.5", ["'gamma'", "sqrt(delta)", "gamma=1.5", "[schedule]"]),
    ("schedule.period=100", ["'schedule.period'", "left out for policy 'adaptive_exponential'", "100"]),
    ("run.device=gpu", ["'run.device'", "'cuda'", "'gpu'"]),
    ("train.max_steps=2.5", ["'train.max_steps'", "an integer", "2.5"]),
    ("run.seeds=[1, 1]", ["'run.seeds'", "without repeats"]),
    ("nosuch.key=1", ["'nosuch.key'", "[run]"]),
    ("schedule.tau", ["'--set'", "table.key=value"]),
    ("train.on_nonfinite=rollback", ["'run.checkpoint_every'", "rollback"]),
])
def test_errors_name_the_key_the_rule_and_the_value(override, words):
    with pytest.raises(ParameterError) as err:
        apply_overrides(load_config_text(MINIMAL), [override])
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, (w, message)


def test_missing_keys_tables_and_bad_toml_are_named():
    with pytest.raises(ParameterError, match="'model.name' parameter .* must be given"):
        load_config_text(MINIMAL.replace('name = "small_cnn"', ""))
    with pytest.raises(ParameterError, match="'train' parameter .* must be present"):
        load_config_text(MINIMAL.split("[train]")[0])
    with pytest.raises(ParameterError, match="'schedule.eps0' parameter .* given for policy"):
        load_config_text(MINIMAL.replace("eps0 = 0.5", ""))
    with pytest.raises(ParameterError, match="valid TOML"):
        load_config_text(MINIMAL + "\n[oops\n")
    with pytest.raises(ParameterError, match="must be given for policy 'constant'.*Got schedule.tau=None"):
        load_config_text(MINIMAL.replace('"adaptive_exponential"', '"constant"').replace("tau = 10", "")
                         .replace("eps0 = 0.5", "").replace("delta = 2.0", "").replace("gamma = 1.4", ""))
    with pytest.raises(ParameterError, match="'train.epochs'.*needs an end"):
        load_config_text(MINIMAL.replace("max_steps = 5", ""))


def test_parse_override_reads_toml_and_falls_back_to_strings():
    assert parse_override("eval.every=check") == ("eval", "every", "check")
    assert parse_override('data.root="a b"') == ("data", "root", "a b")
    assert parse_override("run.compile=true") == ("run", "compile", True)


def test_every_schema_key_has_a_help_line_or_is_self_explaining():
    for table, keys in SCHEMA.items():
        for name, key in keys.items():
            assert key.kind in {"int", "float", "bool", "str", "choice", "ints", "table"}, (table, name)


def test_sfo_train_prints_a_bad_override_as_one_line_and_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(MINIMAL)
    assert main(["train", "--config", str(cfg), "--set", "schedule.b0=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sfo train: error: The 'schedule.b0' parameter")
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "an existing TOML file" in capsys.readouterr().err


def test_show_config_prints_the_resolved_configuration(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(MINIMAL)
    assert main(["train", "--config", str(cfg), "--set", "schedule.tau=7", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert load_config_text(out)["schedule"]["tau"] == 7
    assert main(["train", "--keys"]) == 0
    assert "schedule.tau" in capsys.readouterr().out


def test_a_debiased_window_without_a_statistics_step_is_refused():
    cfg = load_config_text(MINIMAL)
    tau = cfg["schedule"]["tau"]
    with pytest.raises(ParameterError) as err:
        apply_overrides(cfg, ["monitor.kind=debiased", f"monitor.stats_every={tau + 1}"])
    for w in ("'monitor.stats_every'", f"schedule.tau = {tau}", f"stats_every={tau + 1}", "statistics step"):
        assert w in str(err.value), (w, str(err.value))
    assert apply_overrides(cfg, ["monitor.kind=debiased", f"monitor.stats_every={tau}"])["monitor"]["stats_every"] == tau
