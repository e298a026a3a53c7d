"""Restart permissions: the shipped polkit rule and RBAC, and what `restart --dry-run` says."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from market_agent.actions import permissions
from market_agent.actions.backends import build_plan
from market_agent.actions.permissions import Host, check_plan
from market_agent.settings import BackendSpec
from tests.cli_helpers import run_cli
from tests.conftest import ROOT

POLKIT_RULE = ROOT / "examples" / "polkit" / "50-market-agent.rules"
RBAC = ROOT / "examples" / "kubernetes" / "rbac.yaml"

# The shipped polkit rule ---------------------------------------------------------------

#: Evaluates the rule file with a stand-in `polkit` object; prints one verdict per case.
POLKIT_HARNESS = """
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", AUTH_ADMIN: "auth_admin"},
                addRule: (f) => rules.push(f)};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([id, user, unit, verb]) => {
  const action = {id, lookup: (key) => ({unit, verb})[key]};
  for (const rule of rules) {
    const result = rule(action, {user});
    if (result !== undefined) return result;
  }
  return "not_handled";
})));
"""
MANAGE = "org.freedesktop.systemd1.manage-units"
POLKIT_CASES = [
    ([MANAGE, "market-agent", "market-predictor.service", "restart"], "yes"),
    ([MANAGE, "market-agent", "market-predictor.service", "stop"], "not_handled"),
    ([MANAGE, "market-agent", "market-predictor.service", "start"], "not_handled"),
    ([MANAGE, "market-agent", "sshd.service", "restart"], "not_handled"),
    ([MANAGE, "market-agent", "market-predictor.service.d", "restart"], "not_handled"),
    ([MANAGE, "someone-else", "market-predictor.service", "restart"], "not_handled"),
    (["org.freedesktop.systemd1.manage-unit-files", "market-agent", "", ""], "not_handled"),
]


def test_the_polkit_rule_grants_exactly_one_verb_on_one_unit_to_one_user() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed; the structural test below still runs")
    cases = json.dumps([case for case, _ in POLKIT_CASES])
    done = subprocess.run(
        [node, "-e", POLKIT_HARNESS, str(POLKIT_RULE), cases],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(done.stdout) == [expected for _, expected in POLKIT_CASES]


def test_the_polkit_rule_names_the_action_unit_verb_and_user() -> None:
    code = "\n".join(
        line for line in POLKIT_RULE.read_text().splitlines() if not line.startswith("//")
    )
    assert code.count("polkit.addRule(") == 1
    compared = dict(re.findall(r'(action\.id|subject\.user|lookup\("\w+"\)) === "([^"]+)"', code))
    assert compared == {
        "action.id": MANAGE,
        "subject.user": "market-agent",
        'lookup("unit")': "market-predictor.service",
        'lookup("verb")': "restart",
    }
    assert code.count("polkit.Result.") == 1 and "polkit.Result.YES" in code
    assert code.count("(") == code.count(")") and code.count("{") == code.count("}")


# The shipped RBAC --------------------------------------------------------------------


def test_the_rbac_allows_only_what_rollout_restart_and_status_need() -> None:
    documents = {d["kind"]: d for d in yaml.safe_load_all(RBAC.read_text())}
    assert set(documents) == {"ServiceAccount", "Role", "RoleBinding"}  # no ClusterRole
    (rule,) = documents["Role"]["rules"]
    assert rule == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": ["market-predictor"],
        "verbs": ["get", "patch", "list", "watch"],
    }
    binding = documents["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": documents["Role"]["metadata"]["name"],
    }
    account = documents["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    namespaces = {d["metadata"]["namespace"] for d in documents.values()}
    assert namespaces == {account["namespace"]}


# What the dry run says, per backend ----------------------------------------------------


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH for argv-recording stand-ins."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def stand_in(bin_dir: Path, name: str, body: str = "") -> Path:
    """`name` on PATH: records its argv (one JSON line per call), then runs `body`."""
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        f"with open({str(bin_dir / (name + '.calls'))!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"{body}\n"
    )
    path.chmod(0o755)
    return path


def calls(bin_dir: Path, name: str) -> list[list[str]]:
    log = bin_dir / f"{name}.calls"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def plan_for(**fields: object):
    return build_plan(BackendSpec.model_validate(fields), {"action_id": "a1"})


def host(euid: int = 1000, user: str = "market-agent", **kwargs: object) -> Host:
    return Host(euid, user, dict(os.environ), **kwargs)  # type: ignore[arg-type]


def test_systemd_as_root_has_it(bin_dir: Path) -> None:
    stand_in(bin_dir, "systemctl")
    permission = check_plan("action", plan_for(backend="systemd", unit="x.service"), host(0))
    assert (permission.has, permission.detail) == ("yes", "running as root")
    assert "manage-units on x.service" in permission.needs
    assert calls(bin_dir, "systemctl") == []  # a check never restarts anything


def test_systemd_finds_the_shipped_polkit_rule(bin_dir: Path, tmp_path: Path) -> None:
    stand_in(bin_dir, "systemctl")
    rules = tmp_path / "rules.d"
    rules.mkdir()
    plan = plan_for(backend="systemd", unit="market-predictor.service")
    assert check_plan("action", plan, host(polkit_dirs=[rules])).has == "no"
    shutil.copy(POLKIT_RULE, rules)
    permission = check_plan("action", plan, host(polkit_dirs=[rules]))
    assert permission.has == "yes" and "50-market-agent.rules" in permission.detail
    for other in ("nobody", "market", "agent"):  # not a substring match
        assert check_plan("action", plan, host(user=other, polkit_dirs=[rules])).has == "no"
    other_unit = plan_for(backend="systemd", unit="market-predictor.s")
    assert check_plan("action", other_unit, host(polkit_dirs=[rules])).has == "no"


def test_systemd_unreadable_rules_are_unknown(bin_dir: Path, tmp_path: Path) -> None:
    stand_in(bin_dir, "systemctl")
    rules = tmp_path / "rules.d"
    (rules / "odd.rules").mkdir(parents=True)  # reading it fails, as a 0700 dir would
    plan = plan_for(backend="systemd", unit="market-predictor.service")
    assert check_plan("action", plan, host(polkit_dirs=[rules])).has == "unknown"


def test_systemd_user_units_need_nothing(bin_dir: Path) -> None:
    stand_in(bin_dir, "systemctl")
    plan = plan_for(backend="systemd", unit="p.service", user=True)
    assert check_plan("action", plan, host()).has == "yes"


def test_docker_needs_the_socket(bin_dir: Path, tmp_path: Path) -> None:
    stand_in(bin_dir, "docker")
    path = tmp_path / "docker.sock"
    plan = plan_for(backend="docker", container="market-predictor", env={})
    with_socket = plan_for(
        backend="docker", container="market-predictor", env={"DOCKER_HOST": f"unix://{path}"}
    )
    assert check_plan("action", with_socket, host()).has == "no"  # no socket yet
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        permission = check_plan("action", with_socket, host())
    assert permission.has == "yes" and str(path) in permission.detail
    assert "root-equivalent" in permission.needs
    remote = plan_for(backend="docker", container="c", env={"DOCKER_HOST": "tcp://10.0.0.1:2376"})
    assert check_plan("action", remote, host()).has == "unknown"
    assert calls(bin_dir, "docker") == []
    assert plan.backend == "docker"


#: Answers what the test wrote to `kubectl.answer` beside it (the environment is not passed).
KUBECTL = """
answer = open(os.path.join(os.path.dirname(sys.argv[0]), "kubectl.answer")).read()
if answer == "hang":
    time.sleep(30)
print(answer)
sys.exit(0 if answer == "yes" else 1)
"""


@pytest.mark.parametrize(
    ("answer", "has"),
    [("yes", "yes"), ("no", "no"), ("error: the server is unreachable", "unknown")],
)
def test_kubernetes_asks_kubectl_auth_can_i(bin_dir: Path, answer: str, has: str) -> None:
    stand_in(bin_dir, "kubectl", KUBECTL)
    (bin_dir / "kubectl.answer").write_text(answer)
    plan = plan_for(
        backend="kubernetes",
        deployment="market-predictor",
        namespace="market",
        kube_context="restart",  # a context may have any name
    )
    permission = check_plan("action", plan, host())
    assert permission.has == has
    assert calls(bin_dir, "kubectl") == [
        [
            "--context",
            "restart",
            "auth",
            "can-i",
            "patch",
            "deployment/market-predictor",
            "-n",
            "market",
        ]
    ]
    assert "deployment/market-predictor in namespace market" in permission.needs


def test_kubernetes_check_that_hangs_is_unknown(
    bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in(bin_dir, "kubectl", KUBECTL)
    (bin_dir / "kubectl.answer").write_text("hang")
    monkeypatch.setattr(permissions, "CAN_I_TIMEOUT", 0.5)
    plan = plan_for(backend="kubernetes", deployment="market-predictor")
    permission = check_plan("action", plan, host())
    assert permission.has == "unknown" and "timed out" in permission.detail


def test_command_needs_an_executable(bin_dir: Path, tmp_path: Path) -> None:
    restart = stand_in(bin_dir, "restart-predictor")
    assert check_plan("action", plan_for(argv=["restart-predictor"]), host()).has == "yes"
    restart.chmod(0o644)
    assert check_plan("action", plan_for(argv=[str(restart)]), host()).has == "no"
    assert check_plan("action", plan_for(argv=["no-such-program-x"]), host()).has == "no"
    assert calls(bin_dir, "restart-predictor") == []


def test_a_systemctl_command_is_checked_as_systemd(bin_dir: Path, tmp_path: Path) -> None:
    stand_in(bin_dir, "systemctl")
    plan = plan_for(argv=["systemctl", "restart", "market-predictor.service"])
    permission = check_plan("action", plan, host(polkit_dirs=[tmp_path]))
    assert permission.has == "no" and "manage-units on market-predictor.service" in (
        permission.needs
    )


def test_the_dry_run_reports_it_and_never_fails_on_it(bin_dir: Path, tmp_path: Path) -> None:
    stand_in(bin_dir, "kubectl", KUBECTL)
    (bin_dir / "kubectl.answer").write_text("error: no cluster")
    config = tmp_path / "agent.toml"
    config.write_text(
        "[actions.restart]\n"
        'backend = "kubernetes"\ndeployment = "market-predictor"\nnamespace = "market"\n'
        '[actions.restart.rollback]\nbackend = "http"\nurl = "http://127.0.0.1:9/rollback"\n'
    )
    result = run_cli("--config", str(config), "restart", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    (action, rollback) = json.loads(result.stdout)["permissions"]
    assert (action["for"], action["backend"], action["has"]) == ("action", "kubernetes", "unknown")
    assert (rollback["for"], rollback["has"]) == ("rollback", "unknown")
    (bin_dir / "kubectl.answer").write_text("no")
    shown = run_cli("--config", str(config), "restart", "--dry-run")
    assert shown.exit_code == 0, shown.stderr
    assert "Permission:" in shown.stdout and "no: `kubectl auth can-i" in shown.stdout
