"""docker-compose.yml and ops/Dockerfile: the compose file is valid, wires every role of the one
image in the right order, and gives the app only settings the code reads.

`docker-compose config` (Debian's docker-compose, installed by `make tools`) parses and resolves
the file offline, without a Docker engine; the assertions run on what it resolves to.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import cli.main
from cli.main import build_parser
from service.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
#: The services that run the analytics-exports image, and the role each one runs.
APP_ROLES = {"migrate": "migrate", "api": "api", "worker": "worker", "scheduler": "scheduler"}
#: One-shot services: whoever depends on them waits until they exited 0.
ONE_SHOTS = {"migrate", "createbuckets"}
#: What the long-running app services must start after (directly or through another service).
APP_PREREQUISITES = {"postgres", "rabbitmq", "minio", "migrate", "createbuckets"}
#: Variables the Python image itself reads; they are not the service's settings.
IMAGE_VARIABLE = re.compile(r"PATH|PYTHON[A-Z0-9_]*")

Service = dict[str, Any]


#: What an operator sets before `docker compose up` (compose refuses to start without it).
OPERATOR_ENV = {"AUTH_JWT_SECRET": "Kq3v9Zr7Lm2Xw8Tn5Bd4Hs6Gf1Jc0Py-OpUeRaI"}


def run_compose_config(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` in a throwaway environment (no shell variables, no .env file)."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose is not installed: run `make tools` (ops/install-tools.sh)")
    env_file = home / "empty.env"  # instead of a developer's own .env beside the compose file
    env_file.touch()
    result = subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result


def compose_config(home: Path, **env: str) -> dict[str, Any]:
    """The resolved configuration, with the operator's variables and ``env`` set."""
    result = run_compose_config(home, **{**OPERATOR_ENV, **env})
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    # Anything it says is a warning (such as "The X variable is not set. Defaulting to a blank
    # string."), and a problem too.
    assert not result.stderr.strip(), f"docker-compose config warns:\n{result.stderr}"
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Service]:
    """The resolved services, with only what an operator must set: what `docker compose up` gets."""
    resolved: dict[str, Service] = compose_config(tmp_path_factory.mktemp("home"))["services"]
    return resolved


def environment(service: Service) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(name): "" if value is None else str(value) for name, value in raw.items()}


def port_targets(service: Service) -> set[int]:
    targets = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:
            targets.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return targets


def depends_on(service: Service) -> dict[str, str]:
    """Dependency -> condition (a short-form list means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def started_after(services: Mapping[str, Service], name: str) -> set[str]:
    """Every service `name` waits for, directly or through other services."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dependency in depends_on(services[todo.pop()]):
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """ops/Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def runtime_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_stages()[-1]:
        if keyword != "ENV":
            continue
        words = shlex.split(arguments)
        if "=" not in words[0]:  # legacy form: ENV NAME value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_compose_file_is_valid(services: dict[str, Service]) -> None:
    # The fixture ran `docker-compose config`, which exited 0 without warnings.
    expected = {"postgres", "rabbitmq", "minio", "createbuckets", *APP_ROLES}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"


def test_backing_services_are_the_documented_ones(services: dict[str, Service]) -> None:
    assert services["postgres"]["image"].startswith("postgres:15")
    assert re.fullmatch(r"rabbitmq:[\w.-]*management[\w.-]*", services["rabbitmq"]["image"])
    assert 15672 in port_targets(services["rabbitmq"]), "the RabbitMQ console is not published"
    assert services["minio"]["image"].split(":")[0] == "minio/minio"


@pytest.mark.parametrize("name", ["postgres", "rabbitmq", "minio", "api", "worker"])
def test_long_running_services_have_a_healthcheck(services: dict[str, Service], name: str) -> None:
    healthcheck = services[name].get("healthcheck") or {}
    assert healthcheck.get("test"), f"{name} has no healthcheck"
    assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
    assert healthcheck["test"] != ["NONE"], f"{name} disables its healthcheck"


def test_every_dependency_waits_for_health_or_completion(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on an unknown service {dependency}"
            if dependency in ONE_SHOTS:
                assert condition == "service_completed_successfully", (name, dependency, condition)
            else:
                assert condition == "service_healthy", (name, dependency, condition)
                assert services[dependency].get("healthcheck"), f"{dependency} has no healthcheck"


@pytest.mark.parametrize("name", ["api", "worker", "scheduler"])
def test_app_starts_after_migrations_and_buckets(services: dict[str, Service], name: str) -> None:
    waits_for = started_after(services, name)
    missing = APP_PREREQUISITES - waits_for
    assert not missing, f"{name} does not wait for {sorted(missing)}"
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert depends_on(services["createbuckets"]).get("minio") == "service_healthy"


def test_one_shots_run_once(services: dict[str, Service]) -> None:
    for name in ONE_SHOTS:
        assert services[name].get("restart", "no") == "no", f"{name} restarts"
    assert services["migrate"]["command"] == ["migrate", "up", "--with-rollups"]


def test_worker_scales_out_and_the_scheduler_does_not(services: dict[str, Service]) -> None:
    assert services["worker"].get("deploy", {}).get("replicas", 1) >= 2
    assert services["scheduler"].get("deploy", {}).get("replicas", 1) == 1


def test_every_app_service_runs_the_one_image(services: dict[str, Service]) -> None:
    images = {services[name].get("image") for name in APP_ROLES}
    builds = {json.dumps(services[name].get("build"), sort_keys=True) for name in APP_ROLES}
    assert len(images) == 1, images
    assert None not in images
    assert len(builds) == 1, builds
    build = services["api"]["build"]
    assert Path(build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name in APP_ROLES:
        assert "entrypoint" not in services[name], f"{name} overrides the image's entrypoint"


@pytest.mark.parametrize("name", list(APP_ROLES))
def test_app_environment_names_only_settings_the_code_reads(services: dict[str, Service], name: str) -> None:
    env = {**runtime_env(), **environment(services[name])}
    read = {variable.name for variable in VARIABLES}
    unknown = {variable for variable in env.keys() - read if not IMAGE_VARIABLE.fullmatch(variable)}
    assert not unknown, f"{name} is given variables no setting reads: {sorted(unknown)}"
    # And the values are valid: the process would start, not exit 2 on its configuration.
    Settings.from_env(env)


def test_createbuckets_makes_every_bucket_the_app_uses(services: dict[str, Service]) -> None:
    command = services["createbuckets"].get("command") or []
    script = command if isinstance(command, str) else " ".join(command)
    created = set(re.findall(r"\bmc mb\b[^\n]*?\s\S+/([a-z0-9.-]+)\s*$", script, flags=re.MULTILINE))
    for name in APP_ROLES:
        settings = Settings.from_env(environment(services[name]))
        used = set(settings.buckets)
        assert used <= created, f"{name} uses buckets createbuckets does not make: {used - created}"


def test_api_listens_where_compose_publishes_and_probes_it(services: dict[str, Service]) -> None:
    settings = Settings.from_env({**runtime_env(), **environment(services["api"])})
    assert settings.http_host == "0.0.0.0"  # noqa: S104 (in a container, to be reachable)
    assert settings.http_port in port_targets(services["api"])
    probe = " ".join(services["api"]["healthcheck"]["test"])
    assert f":{settings.http_port}/healthz" in probe


def test_the_worker_probe_asks_its_metrics_port(services: dict[str, Service]) -> None:
    settings = Settings.from_env({**runtime_env(), **environment(services["worker"])})
    assert settings.metrics_port, "the worker's probe needs METRICS_PORT on"
    probe = " ".join(services["worker"]["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.metrics_port}/healthz" in probe


def test_compose_refuses_to_start_without_a_signing_secret(tmp_path: Path) -> None:
    # Given no AUTH_JWT_SECRET in the shell or .env, when compose resolves the file
    result = run_compose_config(tmp_path)
    # Then it stops, saying what to set and how to make one (no secret written in the file is used)
    assert result.returncode != 0
    assert "AUTH_JWT_SECRET" in result.stderr
    assert "openssl rand" in result.stderr


def test_a_secret_from_the_shell_reaches_every_app_service(tmp_path: Path) -> None:
    secret = "a-test-secret-of-more-than-thirty-two-bytes"
    resolved = compose_config(tmp_path, AUTH_JWT_SECRET=secret)["services"]
    for name in APP_ROLES:
        assert environment(resolved[name])["AUTH_JWT_SECRET"] == secret


@pytest.mark.parametrize("name", list(APP_ROLES))
def test_each_app_command_is_a_role_of_the_cli(services: dict[str, Service], name: str) -> None:
    command = services[name].get("command")
    assert isinstance(command, list), f"{name}: command must be a list (exec form)"
    try:
        args = build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"{name}: `analytics-exports {shlex.join(command)}` is not a valid command")
    assert args.command == APP_ROLES[name]


def test_the_commands_in_the_compose_comments_are_valid() -> None:
    # The header shows `docker compose run --rm api <command>   <what it does>`: the entrypoint
    # must accept each command.
    pattern = r"^#\s+docker compose run --rm \S+ (.+?)(?:\s{2,}.*)?$"
    examples = re.findall(pattern, COMPOSE.read_text(), re.MULTILINE)
    assert len(examples) >= 2, examples
    for example in examples:
        try:
            build_parser().parse_args(shlex.split(example))
        except SystemExit:
            pytest.fail(f"docker-compose.yml shows an invalid command: {example}")


def test_dockerfile_builds_in_stages_and_runs_as_a_user() -> None:
    stages = dockerfile_stages()
    froms = [stage[0][1] for stage in stages]
    assert any(re.search(r"\sAS\s+builder$", line, re.IGNORECASE) for line in froms), froms
    runtime = stages[-1]
    assert not re.search(r"\sAS\s+builder$", runtime[0][1], re.IGNORECASE), "the image is the builder"
    assert any(k == "COPY" and "--from=builder" in a for k, a in runtime), "runtime copies nothing built"
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"the image runs as {users[-1]}"


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    runtime = dockerfile_stages()[-1]
    entrypoints = [json.loads(arguments) for keyword, arguments in runtime if keyword == "ENTRYPOINT"]
    assert entrypoints[-1:] == [["analytics-exports"]]
    # pyproject installs that console script, and it runs the CLI whose parser the tests use.
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts.get(entrypoints[-1][0]) == f"{build_parser.__module__}:main"
    assert callable(cli.main.main)
    # The default command is a role too.
    commands = [json.loads(arguments) for keyword, arguments in runtime if keyword == "CMD"]
    assert build_parser().parse_args(commands[-1]).command == "api"


#: Services that only run with a profile, and the profile.
PROFILED = {
    "demo": "demo",
    "prometheus": "observability",
    "alertmanager": "observability",
    "grafana": "observability",
}


def test_optional_services_run_only_in_their_profile(services: dict[str, Service]) -> None:
    for name, service in services.items():
        assert service.get("profiles", []) == ([PROFILED[name]] if name in PROFILED else []), name


def test_every_image_is_pinned(services: dict[str, Service]) -> None:
    for name, service in services.items():
        image = str(service["image"])
        if name in APP_ROLES or name == "demo":
            assert image == "analytics-exports:local"
            continue
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert tag not in ("", "latest"), f"{name} runs an unpinned image: {image}"
        assert "/" not in tag, f"{name} runs an unpinned image: {image}"


@pytest.mark.parametrize("name", ["prometheus", "alertmanager", "grafana"])
def test_observability_services_have_a_healthcheck(services: dict[str, Service], name: str) -> None:
    assert services[name]["healthcheck"]["test"][:2] == ["CMD", "wget"]


def mounts(service: Service) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("type") == "bind":
            found[str(volume["target"])] = Path(volume["source"])
        elif isinstance(volume, str) and volume.startswith(("/", ".")):
            source, target = volume.split(":")[:2]
            found[target] = Path(source)
    return found


def test_demo_seeds_the_demo_org_and_prints_a_token_after_the_migrations(
    services: dict[str, Service],
) -> None:
    demo = services["demo"]
    assert demo["entrypoint"] == ["/bin/sh", "-c"]
    assert demo.get("restart") == "no"
    assert depends_on(demo) == {"migrate": "service_completed_successfully"}
    [script] = demo["command"]
    steps = [shlex.split(step) for step in script.split("&&")]
    assert [step[0] for step in steps] == ["analytics-exports", "analytics-exports"]
    parsed = [build_parser().parse_args(step[1:]) for step in steps]
    assert [args.command for args in parsed] == ["seed-demo", "token"]
    assert parsed[0].org == parsed[1].org[0]  # the token is for the seeded org


def test_the_observability_profile_is_provisioned_from_ops(services: dict[str, Service]) -> None:
    # Prometheus loads this repository's scrape config and alert rules and sends to Alertmanager
    prometheus_dir = mounts(services["prometheus"])["/etc/prometheus"]
    assert prometheus_dir.resolve() == ROOT / "ops" / "prometheus"
    scrape = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    [manager] = scrape["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    # Alertmanager routes every alert to a documented receiver
    alertmanager_dir = mounts(services["alertmanager"])["/etc/alertmanager"]
    routes = yaml.safe_load((alertmanager_dir / "alertmanager.yml").read_text())
    receivers = {receiver["name"]: receiver for receiver in routes["receivers"]}
    assert routes["route"]["receiver"] in receivers
    assert all(receiver["webhook_configs"][0]["url"] for receiver in receivers.values())
    # Grafana has Prometheus as its data source and the dashboard where its provider looks
    grafana = mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "exports.yml").read_text())["providers"]
    dashboard_mount = next(target for target in grafana if target.endswith(".json"))
    assert Path(dashboard_mount).parent == Path(provider["options"]["path"])
    assert grafana[dashboard_mount].resolve() == ROOT / "ops" / "grafana" / "exports-dashboard.json"
