"""Static checks of the production deployment draft (docker-compose.yml, Dockerfile, Temporal config).

No Docker engine exists on the dev machines, so the compose file cannot be started here. These tests parse
it and check what would otherwise only break on the first `docker compose up`: services that run code
that is not in the repository, mounts of files that do not exist, search attributes that drift from the
ones kaskad uses, unescaped `$` in shell snippets, and wiring between services.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from temporalio.common import SearchAttributeKey

from runtime.settings import Settings
from workflows import search_attributes

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DYNAMIC_CONFIG = ROOT / "deploy" / "temporal" / "dynamicconfig.yaml"

EXPECTED_SERVICES = {
    "postgresql",
    "temporal",
    "temporal-setup",
    "temporal-ui",
    "ledger-setup",
    "worker",
    "gateway",
    "sandbox",
    "cli",
}
# kaskad's custom search attributes and their Temporal types.
EXPECTED_SEARCH_ATTRIBUTES = {
    "MailingId": "Keyword",
    "MailingStatus": "Keyword",
    "CascadeStatus": "Keyword",
    "DeliveredChannel": "Keyword",
    "StepMilestones": "KeywordList",
}
# Variables the compose file may read from the shell/.env, and those it must refuse to start without.
KNOWN_VARIABLES = {
    "POSTGRES_PASSWORD",
    "KASKAD_WEBHOOK_SECRET",
    "KASKAD_GATEWAY_PUBLIC_URL",
    "KASKAD_TEMPORAL_ADDRESS",
    "KASKAD_TEMPORAL_UI_URL",
}
REQUIRED_VARIABLES = {"POSTGRES_PASSWORD", "KASKAD_WEBHOOK_SECRET"}
# Values for the required variables when resolving the file in tests.
TEST_ENV = {"POSTGRES_PASSWORD": "pg-secret", "KASKAD_WEBHOOK_SECRET": "hook-secret"}
# Where the auto-setup image resolves a relative DYNAMIC_CONFIG_FILE_PATH from (its working directory).
TEMPORAL_WORKDIR = PurePosixPath("/etc/temporal")


# --- helpers ------------------------------------------------------------------------------------------

# $$ (escaped dollar), ${NAME[:-|-|:?|?]word}, or $NAME — the forms Compose interpolates.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class MissingVariableError(Exception):
    pass


def _interpolate_str(text: str, env: dict[str, str], seen: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise ValueError(f"invalid interpolation in {text!r}")
        name = match["braced"] or match["named"]
        seen.add(name)
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        if value is None or (value == "" and op is not None and op.startswith(":")):
            if op in (":?", "?"):
                raise MissingVariableError(f"{name}: {arg}")
            return arg if op in (":-", "-") else ""
        return value

    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: dict[str, str], seen: set[str] | None = None) -> Any:
    """Resolve variables in every string of a parsed compose document, like `docker compose config`."""
    seen = set() if seen is None else seen
    if isinstance(node, str):
        return _interpolate_str(node, env, seen)
    if isinstance(node, dict):
        return {key: interpolate(value, env, seen) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env, seen) for item in node]
    return node


def load_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    resolved = interpolate(load_raw(), TEST_ENV)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever of the two compose syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.partition("=") for item in env]
        return {key: value if sep else None for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def env_value(service: dict[str, Any], key: str) -> str:
    value = environment(service).get(key)
    assert value is not None, f"{key} is not set"
    return value


def command_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: its entrypoint (when the file sets one) followed by its command."""
    command = service.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    assert isinstance(command, list), f"no command: {service}"
    entrypoint = service.get("entrypoint") or []
    return [str(arg) for arg in [*entrypoint, *command]]


def container_ports(service: dict[str, Any]) -> dict[int, int]:
    """Published ports as {container port: host port} (short syntax HOST:CONTAINER)."""
    ports: dict[int, int] = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 1)
        ports[int(container)] = int(host.rsplit(":", 1)[-1])
    return ports


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount of a local path."""
    mounts: list[tuple[str, str]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def setup_commands(service: dict[str, Any]) -> list[list[str]]:
    """argv of every `temporal operator search-attribute create` in the temporal-setup script."""
    script = "\n".join(command_argv(service))  # entrypoint `sh -c`, command = [script]
    found = []
    for line in script.splitlines():
        if "search-attribute" not in line:
            continue
        argv = shlex.split(line, comments=True)
        if argv[argv.index("temporal") :][1:4] == ["operator", "search-attribute", "create"]:
            found.append(argv[argv.index("temporal") :])
    return found


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# --- the compose file ---------------------------------------------------------------------------------


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= EXPECTED_SERVICES, f"missing: {EXPECTED_SERVICES - set(services)}"


def test_only_the_sandbox_and_the_cli_are_behind_a_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["sandbox"].get("profiles") == ["sandbox"]
    assert services["cli"].get("profiles") == ["cli"]  # run on demand: `docker compose run --rm cli …`
    profiled = {name for name, service in services.items() if service.get("profiles")}
    assert profiled == {"sandbox", "cli"}


def test_variables_are_known_and_shell_dollars_escaped() -> None:
    """Every `$` compose would interpolate is a documented variable; a shell `$x` must be written `$$x`."""
    seen: set[str] = set()
    interpolate(load_raw(), TEST_ENV, seen)
    assert seen <= KNOWN_VARIABLES, f"unexpected variables (unescaped shell $?): {seen - KNOWN_VARIABLES}"


@pytest.mark.parametrize("missing", sorted(REQUIRED_VARIABLES))
def test_required_secrets_have_no_default(missing: str) -> None:
    env = {name: value for name, value in TEST_ENV.items() if name != missing}
    with pytest.raises(MissingVariableError, match=missing):
        interpolate(load_raw(), env)


BUILT_SERVICES = ["worker", "gateway", "sandbox", "cli"]


def test_kaskad_services_are_built_from_this_repo(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(name for name, service in services.items() if "build" in service) == sorted(BUILT_SERVICES)
    for name in BUILT_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build["context"]
        assert (ROOT / context / "Dockerfile").is_file(), f"{name}: no Dockerfile in build context {context!r}"


@pytest.mark.parametrize("name", BUILT_SERVICES)
def test_built_service_runs_code_present_in_repo(services: dict[str, dict[str, Any]], name: str) -> None:
    argv = command_argv(services[name])
    assert argv[0] == "python", argv
    if argv[1] == "-m":
        module = argv[2]
        package = ROOT / module.replace(".", "/")
        assert (package / "__main__.py").is_file() or package.with_suffix(".py").is_file(), (
            f"`python -m {module}` needs {module}/__main__.py or {module}.py in the repo root"
        )
    else:
        assert (ROOT / argv[1]).is_file(), f"script {argv[1]} not found in the repo root"


def test_mounted_local_files_exist(services: dict[str, dict[str, Any]]) -> None:
    mounts = [(name, source) for name, service in services.items() for source, _ in bind_mounts(service)]
    assert ("temporal", "./deploy/temporal/dynamicconfig.yaml") in mounts
    for name, source in mounts:
        assert (ROOT / source).exists(), f"{name}: mounted path {source} does not exist"


def test_temporal_reads_the_mounted_dynamic_config(services: dict[str, dict[str, Any]]) -> None:
    temporal = services["temporal"]
    assert env_value(temporal, "DB") == "postgres12"
    assert env_value(temporal, "POSTGRES_SEEDS") in services
    config_path = TEMPORAL_WORKDIR / env_value(temporal, "DYNAMIC_CONFIG_FILE_PATH")
    targets = {PurePosixPath(target): source for source, target in bind_mounts(temporal)}
    assert config_path in targets, f"DYNAMIC_CONFIG_FILE_PATH {config_path} is not a mounted file"
    assert (ROOT / targets[config_path]).resolve() == DYNAMIC_CONFIG.resolve()


def test_setup_registers_exactly_kaskads_search_attributes(services: dict[str, dict[str, Any]]) -> None:
    commands = setup_commands(services["temporal-setup"])
    registered = {option(argv, "--name"): option(argv, "--type") for argv in commands}
    assert len(registered) == len(commands), "a search attribute is registered twice"
    assert set(registered) == set(EXPECTED_SEARCH_ATTRIBUTES)
    assert registered == EXPECTED_SEARCH_ATTRIBUTES
    for argv in commands:
        assert option(argv, "--address") == "temporal:7233", argv


def test_expected_search_attributes_are_the_ones_the_code_uses() -> None:
    def cli_type(key: SearchAttributeKey[Any]) -> str:
        # KEYWORD_LIST -> KeywordList, as `temporal operator search-attribute create --type` spells it
        words = key.indexed_value_type.name.split("_")
        return "".join(word.capitalize() for word in words)

    assert {key.name: cli_type(key) for key in search_attributes.ALL} == EXPECTED_SEARCH_ATTRIBUTES


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    def depends_on(name: str) -> dict[str, str]:
        deps = services[name].get("depends_on", {})
        if isinstance(deps, list):
            return {dep: "service_started" for dep in deps}
        return {dep: spec.get("condition", "service_started") for dep, spec in deps.items()}

    for name in services:
        assert set(depends_on(name)) <= set(services), f"{name} depends on an unknown service"
    assert "pg_isready" in str(services["postgresql"]["healthcheck"]["test"])
    assert depends_on("temporal") == {"postgresql": "service_healthy"}
    for name in ("worker", "gateway"):
        assert depends_on(name).get("temporal-setup") == "service_completed_successfully", name
    for name in ("worker", "gateway", "cli"):
        assert depends_on(name).get("ledger-setup") == "service_completed_successfully", name
    assert depends_on("ledger-setup") == {"postgresql": "service_healthy"}


def test_the_ledger_is_its_own_database_on_the_bundled_postgresql(services: dict[str, dict[str, Any]]) -> None:
    """Worker, gateway and CLI share one ledger URL: the database `ledger-setup` creates, on `postgresql`."""
    urls = {name: env_value(services[name], "KASKAD_DATABASE_URL") for name in ("worker", "gateway", "cli")}
    assert len(set(urls.values())) == 1, urls
    url = urls["worker"]
    assert url.startswith("postgresql://temporal:") and url.endswith("@postgresql:5432/kaskad")
    assert "CREATE DATABASE kaskad" in str(services["ledger-setup"]["command"])


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "image" in service:
            image = service["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert tag and tag != "latest", f"{name}: image {image} is not pinned"


def test_kaskad_settings_exist(services: dict[str, dict[str, Any]]) -> None:
    """Every KASKAD_* variable given to a container is a field of runtime/settings.py (catches typos)."""
    for name, service in services.items():
        for key in environment(service):
            if key.startswith("KASKAD_"):
                field = key.removeprefix("KASKAD_").lower()
                assert field in Settings.model_fields, f"{name}: {key} is not a kaskad setting"


def test_kaskad_services_point_at_the_bundled_temporal(services: dict[str, dict[str, Any]]) -> None:
    address = env_value(services["worker"], "KASKAD_TEMPORAL_ADDRESS")
    host, port = address.split(":")
    assert host == "temporal" and int(port) in container_ports(services[host])
    assert env_value(services["gateway"], "KASKAD_TEMPORAL_ADDRESS") == address
    assert env_value(services["temporal-ui"], "TEMPORAL_ADDRESS") == address
    assert container_ports(services["temporal-ui"]) == {8080: 8233}


def test_workers_scale_and_share_data(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    # A fixed container name or a published host port would make `--scale worker=N` fail.
    assert "container_name" not in worker and not worker.get("ports")
    data_dir = env_value(worker, "KASKAD_DATA_DIR")
    volumes = [str(v).split(":") for v in worker.get("volumes", [])]
    assert [name for name, target, *_ in volumes if target == data_dir] == ["kaskad-data"]


def test_gateway_and_sandbox_listen_where_published(services: dict[str, dict[str, Any]]) -> None:
    gateway, sandbox = services["gateway"], services["sandbox"]
    assert env_value(gateway, "KASKAD_GATEWAY_HOST") == "0.0.0.0"
    assert container_ports(gateway) == {int(env_value(gateway, "KASKAD_GATEWAY_PORT")): 8080}
    assert env_value(sandbox, "KASKAD_SANDBOX_HOST") == "0.0.0.0"
    assert int(env_value(sandbox, "KASKAD_SANDBOX_PORT")) in container_ports(sandbox)


def test_services_reach_each_other_over_the_compose_network(services: dict[str, dict[str, Any]]) -> None:
    gateway_url = f"http://gateway:{env_value(services['gateway'], 'KASKAD_GATEWAY_PORT')}"
    sandbox_url = f"http://sandbox:{env_value(services['sandbox'], 'KASKAD_SANDBOX_PORT')}"
    worker = services["worker"]
    # Workers send to the sandbox and tell it to report to the gateway; the sandbox calls the gateway back.
    assert env_value(worker, "KASKAD_SANDBOX_URL") == sandbox_url
    assert env_value(worker, "KASKAD_GATEWAY_PUBLIC_URL") == gateway_url  # default when not set in .env
    assert env_value(services["sandbox"], "KASKAD_GATEWAY_PUBLIC_URL") == gateway_url


def test_webhook_secret_is_shared(services: dict[str, dict[str, Any]]) -> None:
    """The sandbox signs reports with the secret the gateway verifies them with."""
    for name in ("gateway", "worker", "sandbox"):
        assert env_value(services[name], "KASKAD_WEBHOOK_SECRET") == TEST_ENV["KASKAD_WEBHOOK_SECRET"], name


# --- Temporal dynamic config --------------------------------------------------------------------------


def test_dynamic_config_parses() -> None:
    config = yaml.safe_load(DYNAMIC_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(config, dict) and config
    for key, entries in config.items():
        assert isinstance(key, str) and "." in key, key
        assert isinstance(entries, list) and entries, f"{key}: expected a list of {{value, constraints}}"
        for entry in entries:
            assert isinstance(entry, dict) and "value" in entry, f"{key}: {entry!r}"
            assert set(entry) <= {"value", "constraints"}, f"{key}: {entry!r}"
            assert isinstance(entry.get("constraints", {}), dict), f"{key}: {entry!r}"
    assert config["limit.maxIDLength"][0]["value"] == 255


# --- image --------------------------------------------------------------------------------------------


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert [line for line in instructions if line.startswith("CMD ")][-1] == 'CMD ["python", "worker.py"]'
    assert any(re.match(r"RUN pip install \.(\s|$)", line) for line in instructions)


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".kaskad", ".git", "__pycache__", ".pytest_cache", "*.db"} <= patterns
    # The build needs these.
    assert not patterns & {"pyproject.toml", "README.md", "worker.py", "*.py"}
