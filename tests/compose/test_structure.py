"""compose.yaml read as YAML: services, health, start order, ports, addresses, mounts, secrets.

No Docker engine is needed: these check what the file says against the repository it runs from.
"""

from __future__ import annotations

import configparser
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.stack_files import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    DOCKERFILE,
    EMULATOR,
    REPO_ROOT,
    SECRETS_DIR,
    argv,
    copy_sources_and_targets,
    dockerfile_instructions,
    in_build_context,
    interpolate_defaults,
    interpolations,
    load_compose,
    mounts,
    namespace,
    option,
    secret_targets,
    services,
    settings_env_names,
    unescape,
)
from tests.prometheus.config_files import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG, RULES_DIR, load_yaml

PYTHON_IMAGE = "remediator:local"
# How each long-running service is probed (the command for PostgreSQL, the URL for the others).
HEALTH_PROBES = {
    "postgres": "pg_isready",
    "prometheus": "http://127.0.0.1:9090/-/ready",
    "alertmanager": "http://127.0.0.1:9093/-/ready",
    "grafana": "http://127.0.0.1:3000/api/health",
    "emulator": "http://127.0.0.1:8090/healthz",
    "remediator": "http://127.0.0.1:8080/readyz",
    "loadgen": "http://127.0.0.1:8089/healthz",
}
# Jobs that run once and exit; what waits for them waits for a successful exit.
ONE_SHOT = {"migrate", "demo-service"}
# Third-party images whose own entrypoint is the program meant to run, on its default port.
IMAGE_DEFAULTS = {"postgres": 5432, "grafana": 3000}
# The probe program each image has: python:3.11-slim has no curl or wget, the Prometheus, Alertmanager
# and Grafana images have busybox's wget.
PROBE_PROGRAMS = {
    "remediator:local": "python",
    "prom/prometheus": "wget",
    "prom/alertmanager": "wget",
    "grafana/grafana": "wget",
    "postgres": "pg_isready",
}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)
LOCAL_ONLY_DEFAULT = re.compile(r"^[a-z-]+-local-only$")
ADDRESS = re.compile(r"^(?:[a-z+]+://)?(?:[^@/]*@)?(?P<host>[A-Za-z0-9_.-]+):(?P<port>\d+)(?:/.*)?$")


def uses_python_image(service: dict[str, Any]) -> bool:
    return service.get("image") == PYTHON_IMAGE


def container_argv(service: dict[str, Any]) -> list[str]:
    """The command, with an `sh -c SCRIPT` script split into words as well."""
    words = argv(service)
    if words[:2] == ["sh", "-c"]:
        return words[:2] + unescape(words[2]).split()
    return words


def listeners(name: str, service: dict[str, Any]) -> dict[int, str]:
    """Port -> bind address of what the service's process listens on, read from its command."""
    if name in IMAGE_DEFAULTS:
        return {IMAGE_DEFAULTS[name]: "0.0.0.0"}
    words = container_argv(service)
    found: dict[int, str] = {}
    for host_option, port_option in (("--host", "--port"), ("--control-host", "--control-port")):
        port = option(words, port_option)
        if port is not None:
            found[int(port)] = option(words, host_option) or "127.0.0.1"
    listen = option(words, "--web.listen-address")
    if listen is not None:
        host, _, port = listen.rpartition(":")
        found[int(port)] = host or "0.0.0.0"
    return found


def namespace_listeners(every: dict[str, dict[str, Any]]) -> dict[str, dict[int, tuple[str, str]]]:
    """Namespace -> port -> (service, bind address)."""
    table: dict[str, dict[int, tuple[str, str]]] = {}
    for name, service in every.items():
        for port, host in listeners(name, service).items():
            space = table.setdefault(namespace(name, every), {})
            assert port not in space, f"{name} and {space.get(port)} both listen on {port}"
            space[port] = (name, host)
    return table


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    found = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append((str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"])))
            continue
        match = re.fullmatch(
            r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+):)?(?P<target>\d+)(?:/tcp)?", str(entry)
        )
        assert match, f"unreadable port entry {entry!r}"
        host_port = match.group("host") or match.group("target")
        found.append((match.group("ip") or "", int(host_port), int(match.group("target"))))
    return found


def resolve(address: str, from_service: str, every: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Which service answers `host:port` when `from_service` connects to it, and its bind address."""
    match = ADDRESS.match(address)
    assert match, f"not an address: {address}"
    host, port = match.group("host"), int(match.group("port"))
    table = namespace_listeners(every)
    if host in ("127.0.0.1", "localhost"):
        space = namespace(from_service, every)
    else:
        assert host in every, f"{from_service} connects to {address}: no service {host!r}"
        space = namespace(host, every)
        assert space == host, f"{host} has no address of its own (it runs in {space}'s namespace)"
    assert port in table.get(space, {}), f"{from_service} connects to {address}: nothing listens there"
    answering, bind = table[space][port]
    if space != namespace(from_service, every):
        assert bind == "0.0.0.0", f"{answering} listens on {bind}:{port}, unreachable from {from_service}"
    return answering, bind


def string_values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [value for item in node.values() for value in string_values(item)]
    if isinstance(node, list):
        return [value for item in node for value in string_values(item)]
    return [node] if isinstance(node, str) else []


# what runs


def test_every_service_is_classified() -> None:
    assert set(services()) == set(HEALTH_PROBES) | ONE_SHOT


def test_python_services_build_the_one_dockerfile() -> None:
    built = {name: service for name, service in services().items() if "build" in service}
    assert set(built) == {name for name, service in services().items() if uses_python_image(service)}
    assert {"emulator", "remediator", "loadgen", "migrate"} <= set(built)
    for name, service in built.items():
        build = service["build"]
        context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context.resolve() == REPO_ROOT, name
        assert dockerfile.resolve() == DOCKERFILE, name
        assert dockerfile.is_file(), name


def test_third_party_images_are_pinned() -> None:
    for name, service in services().items():
        if uses_python_image(service):
            continue
        repository, _, tag = str(service["image"]).rpartition(":")
        assert repository and "/" not in tag, f"{name}: {service['image']} names no tag"
        assert tag != "latest" and re.match(r"v?\d+(\.\d+)+", tag), f"{name}: {tag} is not a version"


def test_every_service_says_what_it_runs() -> None:
    for name, service in services().items():
        if name in IMAGE_DEFAULTS:
            assert "command" not in service and "entrypoint" not in service, name
            continue
        assert argv(service), f"{name} has no command"


def test_remediator_commands_parse_with_the_real_cli() -> None:
    from remediator.cli import build_parser

    commands = {name: argv(s) for name, s in services().items() if argv(s)[:1] == ["remediator"]}
    assert set(commands) == {"migrate", "remediator"}
    assert commands["migrate"][1:] == ["db", "upgrade"]
    parsed = build_parser().parse_args(commands["remediator"][1:])
    assert parsed.command == "serve"
    assert not parsed.no_actuator, "compose runs the analyzer and the actuator in one process"


def test_module_commands_parse_with_their_own_parsers() -> None:
    from demo_apps.cloudrun.__main__ import parse_args as emulator_args
    from demo_apps.loadgen.__main__ import build_parser as loadgen_parser

    emulator = argv(services()["emulator"])
    assert emulator[:3] == ["python", "-m", "demo_apps.cloudrun"]
    parsed = emulator_args(emulator[3:])
    assert (parsed.host, parsed.port) == ("0.0.0.0", 8090)

    loadgen = services()["loadgen"]
    words = container_argv(loadgen)
    start = words.index("demo_apps.loadgen") + 1
    # The shell fills in the router's URL and the service's variables (as Compose resolves them).
    shell = {"target": "http://127.0.0.1:1"} | {
        key: interpolate_defaults(str(value)) for key, value in loadgen["environment"].items()
    }
    arguments = [re.sub(r"^\$(\w+)$", lambda m: shell[m.group(1)], w.strip('"')) for w in words[start:]]
    options = loadgen_parser().parse_args(arguments)
    assert (options.control_host, options.control_port) == ("0.0.0.0", 8089)
    assert options.rate == 20, "the local stack's steady load"


def test_commands_that_run_files_find_them_in_the_image() -> None:
    copied = {copy_sources_and_targets(i)[1] for i in dockerfile_instructions() if i.keyword == "COPY"}
    for name, service in services().items():
        for word in container_argv(service):
            if word.startswith("/opt/"):
                assert word in copied, f"{name} runs {word}, which the Dockerfile does not copy"


# health and start order


def test_long_running_services_have_the_expected_health_check() -> None:
    for name, probe in HEALTH_PROBES.items():
        service = services()[name]
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name
        assert probe in test, f"{name} is not probed with {probe}: {test}"
        program = test[1]
        expected = next(p for prefix, p in PROBE_PROGRAMS.items() if service["image"].startswith(prefix))
        assert program == expected, f"{name}'s image runs {expected} for probes, not {program}"
        assert check.get("interval") and check.get("timeout") and check.get("retries"), name


def test_http_probes_hit_the_port_the_service_listens_on() -> None:
    every = services()
    for name, probe in HEALTH_PROBES.items():
        if probe.startswith("http://"):
            port = urllib.parse.urlsplit(probe).port
            assert port in listeners(name, every[name]), f"{name} probes {port}, listens on another port"


def test_one_shot_jobs_run_once_and_are_waited_for() -> None:
    every = services()
    for name in ONE_SHOT:
        job = every[name]
        assert job.get("restart") == "no", name
        assert "healthcheck" not in job and "ports" not in job, name
        waiters = [
            other
            for other, service in every.items()
            if service.get("depends_on", {}).get(name, {}).get("condition")
            == "service_completed_successfully"
        ]
        assert waiters, f"nothing waits for {name} to finish"


def test_depends_on_waits_for_health_or_completion() -> None:
    every = services()
    for name, service in every.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: a depends_on list only waits for containers to start"
        for target, spec in depends.items():
            assert target in every, f"{name} depends on an unknown service {target}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in every[target], f"{name} waits for {target}, which has no health check"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit, but it keeps running"
            else:
                pytest.fail(f"{name} depends on {target} with condition {condition!r}")


def test_start_order_has_no_cycle_and_starts_after_what_it_talks_to() -> None:
    every = services()

    def upstream(name: str, seen: tuple[str, ...] = ()) -> set[str]:
        assert name not in seen, f"dependency cycle: {' -> '.join((*seen, name))}"
        found = set()
        for target in every[name].get("depends_on", {}):
            found |= {target} | upstream(target, (*seen, name))
        return found

    for name, service in every.items():
        before = upstream(name)
        if namespace(name, every) != name:
            assert namespace(name, every) in before, f"{name} joins a namespace it does not wait for"
        environment = service.get("environment") or {}
        if "DATABASE_URL" in environment:
            assert {"postgres", "migrate"} <= before | {name}, f"{name} may start before the schema exists"
    assert {"postgres", "migrate", "prometheus"} <= upstream("grafana")
    assert {"demo-service", "remediator"} <= upstream("loadgen")


# network


def test_ports_are_published_on_loopback_only() -> None:
    seen: dict[int, str] = {}
    for name, service in services().items():
        for host_ip, host_port, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} on {host_ip or 'every interface'}"
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name


def test_the_namespace_publishes_every_listener_of_its_members() -> None:
    every = services()
    table = namespace_listeners(every)
    for name, service in every.items():
        if namespace(name, every) != name:
            assert "ports" not in service, (
                f"{name} shares {namespace(name, every)}'s network: it cannot publish"
            )
            assert "networks" not in service, name
    members = {name for name in every if namespace(name, every) == EMULATOR}
    assert members == {EMULATOR, "demo-service", "prometheus", "alertmanager", "remediator", "loadgen"}
    published_ports = {container: host for _, host, container in published(every[EMULATOR])}
    assert set(published_ports) == set(table[EMULATOR]), "each listener of the namespace is published"
    for port, (owner, bind) in table[EMULATOR].items():
        # Published traffic arrives on the namespace's interface: a loopback-only listener misses it.
        assert bind == "0.0.0.0", f"{owner} listens on {bind}:{port}; its published port would not reach it"
        assert published_ports[port] == port, "published on the same port as in the local stack"


def test_repository_configs_address_services_of_their_namespace() -> None:
    every = services()
    for name, service in every.items():
        for mount in mounts(service):
            if mount.kind != "bind" or not mount.source.startswith("./prometheus/"):
                continue
            path = REPO_ROOT / mount.source
            if path.suffix != ".yml":
                continue
            addresses = [v for v in string_values(yaml.safe_load(path.read_text())) if ADDRESS.match(v)]
            assert addresses, f"{path} names no address"
            for address in addresses:
                resolve(address, name, every)


def test_prometheus_and_alertmanager_reach_each_other_and_remediator() -> None:
    every = services()
    prometheus = load_yaml(PROMETHEUS_CONFIG)
    alertmanager_target = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert resolve(alertmanager_target, "prometheus", every)[0] == "alertmanager"
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert (
        resolve(jobs["remediator"]["static_configs"][0]["targets"][0], "prometheus", every)[0] == "remediator"
    )
    assert (
        resolve(jobs["cloudrun-revisions"]["http_sd_configs"][0]["url"], "prometheus", every)[0] == EMULATOR
    )
    receivers = {receiver["name"]: receiver for receiver in load_yaml(ALERTMANAGER_CONFIG)["receivers"]}
    webhook = receivers["remediator"]["webhook_configs"][0]["url"]
    assert resolve(webhook, "alertmanager", every)[0] == "remediator"
    assert urllib.parse.urlsplit(webhook).path == "/api/v1/alerts"


def test_addresses_in_the_environment_reach_a_listener() -> None:
    every = services()
    checked = 0
    for name, service in every.items():
        for value in (service.get("environment") or {}).values():
            if not isinstance(value, str) or "://" not in value:
                continue
            resolve(re.sub(r"\$\{[^}]*\}", "x", value), name, every)
            checked += 1
    assert checked >= 5
    remediator = every["remediator"]["environment"]
    assert resolve(remediator["PROMETHEUS_URL"], "remediator", every)[0] == "prometheus"
    assert resolve(remediator["CLOUD_RUN_ENDPOINT"], "remediator", every)[0] == EMULATOR
    assert resolve(every["grafana"]["environment"]["PROMETHEUS_URL"], "grafana", every)[0] == "prometheus"


def test_demo_service_job_and_load_generator_use_the_emulators_loopback_api() -> None:
    every = services()
    for name in ("demo-service", "loadgen"):
        endpoint = option(container_argv(every[name]), "--endpoint")
        assert endpoint is not None, name
        assert resolve(endpoint.rstrip(")"), name, every)[0] == EMULATOR


# files


def test_bind_mounts_exist_in_the_repository_and_are_read_only() -> None:
    document = load_compose()
    declared = set(document.get("volumes") or {})
    used = set()
    for name, service in document["services"].items():
        for mount in mounts(service):
            if mount.kind == "volume":
                assert mount.source in declared, f"{name} mounts an undeclared volume {mount.source}"
                used.add(mount.source)
                continue
            path = (COMPOSE_FILE.parent / mount.source).resolve()
            assert path.is_relative_to(REPO_ROOT), f"{name} mounts {mount.source}, outside the repository"
            assert path.exists(), f"{name} mounts {mount.source}, which does not exist"
            assert mount.read_only, f"{name} may write to {mount.source}"
    assert used == declared, "every declared volume is used"


def test_configs_and_secrets_name_existing_sources() -> None:
    document = load_compose()
    for kind in ("configs", "secrets"):
        declared = document.get(kind) or {}
        for name, service in document["services"].items():
            for entry in service.get(kind, []):
                source = entry if isinstance(entry, str) else entry["source"]
                assert source in declared, f"{name} uses an undeclared {kind[:-1]} {source}"
        for name, spec in declared.items():
            assert set(spec) == {"file"}, f"{kind} {name}: only files, never inline or environment values"
            if kind == "configs":
                assert (COMPOSE_FILE.parent / spec["file"]).is_file(), (
                    f"config {name}: {spec['file']} missing"
                )


def test_secret_files_live_outside_git_and_the_image() -> None:
    secrets = load_compose()["secrets"]
    assert secrets, "the tokens reach the containers as compose secrets"
    ignore = (SECRETS_DIR / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore, "compose/secrets/ keeps every token out of git"
    script = (COMPOSE_DIR / "init-secrets.sh").read_text()
    for name, spec in secrets.items():
        path = (COMPOSE_FILE.parent / spec["file"]).resolve()
        assert path.parent == SECRETS_DIR, f"secret {name} is read from {spec['file']}, not compose/secrets/"
        relative = path.relative_to(REPO_ROOT).as_posix()
        assert not in_build_context(relative), f"{relative} would be sent to the image build"
        assert path.name in script, f"compose/init-secrets.sh does not create {path.name}"


def test_webhook_token_reaches_alertmanager_and_remediator_from_one_secret() -> None:
    every = services()
    alertmanager = every["alertmanager"]
    config_path = option(argv(alertmanager), "--config.file")
    assert config_path is not None
    receivers = {receiver["name"]: receiver for receiver in load_yaml(ALERTMANAGER_CONFIG)["receivers"]}
    credentials = receivers["remediator"]["webhook_configs"][0]["http_config"]["authorization"]
    # Alertmanager resolves a relative credentials_file against the directory of its config file.
    token_path = (Path(config_path).parent / credentials["credentials_file"]).as_posix()
    alertmanager_secret = secret_targets(alertmanager).get(token_path)
    assert alertmanager_secret, f"nothing is mounted at {token_path}, where Alertmanager reads the token"

    remediator = every["remediator"]
    token_file = remediator["environment"]["WEBHOOK_TOKEN_FILE"]
    assert secret_targets(remediator).get(token_file) == alertmanager_secret
    mounted_config = {m.target: m.source for m in mounts(alertmanager)}
    assert (REPO_ROOT / mounted_config[config_path]).resolve() == ALERTMANAGER_CONFIG


def test_every_file_setting_points_at_a_mounted_secret() -> None:
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE"):
                assert value in secret_targets(service), f"{name}: {key}={value} is not a mounted secret"


def test_prometheus_and_alertmanager_run_the_repository_configs() -> None:
    every = services()
    for name, config in (("prometheus", PROMETHEUS_CONFIG), ("alertmanager", ALERTMANAGER_CONFIG)):
        service = every[name]
        path = option(argv(service), "--config.file")
        targets = {m.target: m for m in mounts(service)}
        assert path in targets, f"{name} runs {path}, which is not mounted"
        source = (REPO_ROOT / targets[path].source).resolve()
        assert source == config, f"{name} runs {source}, not the repository's {config.name}"
    prometheus = every["prometheus"]
    config_dir = Path(option(argv(prometheus), "--config.file") or "").parent
    for pattern in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        folder = (config_dir / pattern).parent.as_posix()
        mounted = {m.target: m.source for m in mounts(prometheus)}
        assert folder in mounted, f"rule_files {pattern} resolves to {folder}, which is not mounted"
        assert (REPO_ROOT / mounted[folder]).resolve() == RULES_DIR


def grafana_expand(text: str) -> str:
    """A provisioning value as Grafana reads it: $NAME and ${NAME} from its environment."""
    environment = services()["grafana"].get("environment") or {}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: interpolate_defaults(str(environment[m.group(1)])), text)


def provisioning_values() -> list[str]:
    files = sorted((REPO_ROOT / "grafana" / "provisioning").rglob("*.y*ml"))
    assert files, "grafana/provisioning has no provisioning file"
    return [value for path in files for value in string_values(yaml.safe_load(path.read_text()))]


def test_grafana_mounts_the_repository_provisioning_and_dashboards() -> None:
    grafana = services()["grafana"]
    mounted = {m.target: (REPO_ROOT / m.source).resolve() for m in mounts(grafana) if m.kind == "bind"}
    assert mounted.get("/etc/grafana/provisioning") == REPO_ROOT / "grafana" / "provisioning"
    providers = sorted((REPO_ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
    assert providers, "grafana/provisioning/dashboards has no dashboard provider"
    for provider_file in providers:
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = grafana_expand(provider["options"]["path"])
            assert path in mounted, f"{provider_file.name} loads dashboards from {path}, which is not mounted"
            assert mounted[path] == REPO_ROOT / "grafana" / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, name = home.rpartition("/")
    assert (mounted[folder] / name).is_file(), f"the home dashboard {home} is not a mounted file"


def test_grafana_gets_every_variable_its_provisioning_reads() -> None:
    environment = services()["grafana"].get("environment") or {}
    referenced = set()
    for value in provisioning_values():
        # Grafana expands $NAME and ${NAME} in provisioning values from its own environment; an
        # unset one silently becomes "".
        referenced |= set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value))
    assert {"PROMETHEUS_URL", "GRAFANA_DB_PASSWORD"} <= referenced
    missing = referenced - set(environment)
    assert not missing, f"Grafana's provisioning reads {sorted(missing)}, which compose.yaml does not set"


def test_grafana_datasources_point_at_the_stack() -> None:
    every = services()
    datasources = {}
    for path in sorted((REPO_ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            datasources[source["uid"]] = source
    assert set(datasources) >= {"prometheus", "remediator-postgres"}
    prometheus = grafana_expand(datasources["prometheus"]["url"])
    assert resolve(prometheus, "grafana", every)[0] == "prometheus"
    store = datasources["remediator-postgres"]
    assert resolve(grafana_expand(store["url"]), "grafana", every)[0] == "postgres"
    postgres = every["postgres"]["environment"]
    assert grafana_expand(store["jsonData"]["database"]) == postgres["POSTGRES_DB"]
    # The read-only login that compose/postgres-init creates, never the owner of the tables.
    user = grafana_expand(store["user"])
    assert user == interpolate_defaults(postgres["GRAFANA_DB_USER"]) != postgres["POSTGRES_USER"]


# What compose sets differently from `remediator up`'s grafana.ini, and why: the container has its
# own paths and logs to stdout by default, listens on every interface of its network (the published
# port needs it), and takes the admin password from the environment instead of a file.
GRAFANA_INI_DIFFERENCES = {
    ("server", "protocol"),
    ("server", "http_addr"),
    ("server", "http_port"),
    ("security", "admin_password"),
    ("dashboards", "default_home_dashboard_path"),
}


def test_grafana_is_set_up_like_the_local_stacks() -> None:
    from remediator.grafana import HOME_DASHBOARDS, grafana_ini

    home = Path("/dashboards") / HOME_DASHBOARDS[0]
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(
        grafana_ini(state_dir=Path("/state"), port=3000, password_file=Path("/pw"), home_dashboard=home)
    )
    environment = services()["grafana"]["environment"]
    compared = 0
    for section in ini.sections():
        if section in ("paths", "log"):
            continue
        for key, value in ini.items(section):
            if (section, key) in GRAFANA_INI_DIFFERENCES:
                continue
            variable = f"GF_{section.upper().replace('.', '_')}_{key.upper()}"
            assert variable in environment, (
                f"grafana.ini sets [{section}] {key}; compose.yaml has no {variable}"
            )
            assert str(environment[variable]) == value, variable
            compared += 1
    assert compared >= 10
    configured = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(configured).name == home.name, "the same home dashboard"
    assert urllib.parse.urlsplit(environment["GF_SERVER_ROOT_URL"]).port == published_port("grafana", 3000)


def published_port(name: str, container_port: int) -> int:
    return next(host for _, host, target in published(services()[name]) if target == container_port)


# settings and secrets


def test_settings_parser_finds_what_remediator_reads() -> None:
    names = settings_env_names()
    assert {
        "DATABASE_URL",
        "PROMETHEUS_URL",
        "WEBHOOK_TOKEN",
        "WEBHOOK_TOKEN_FILE",
        "REMEDIATOR_MODE",
    } <= names


def test_remediator_environment_uses_only_names_remediator_reads() -> None:
    names = settings_env_names()
    checked = 0
    for name, service in services().items():
        if argv(service)[:1] != ["remediator"]:
            continue
        unknown = set(service.get("environment") or {}) - names
        assert not unknown, f"{name} sets {sorted(unknown)}, which remediator/settings.py never reads"
        checked += 1
    assert checked == 2


def test_remediator_and_migration_share_one_database_and_the_postgres_account() -> None:
    every = services()
    url = every["remediator"]["environment"]["DATABASE_URL"]
    assert every["migrate"]["environment"]["DATABASE_URL"] == url
    parsed = urllib.parse.urlsplit(url)
    postgres = every["postgres"]["environment"]
    assert parsed.scheme == "postgresql" and parsed.hostname == "postgres"
    assert parsed.username == postgres["POSTGRES_USER"]
    assert parsed.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert parsed.password == postgres["POSTGRES_PASSWORD"], "the URL's password is the server's"
    grafana = every["grafana"]["environment"]
    for key in ("GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD"):
        assert grafana[key] == postgres[key], f"{key} differs between postgres' init script and Grafana"


def test_no_secret_value_is_written_inline() -> None:
    checked = 0
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and "://" in value and "@" in value:
                # Credentials in a URL: the password part is the secret.
                value = urllib.parse.urlsplit(value).password
                assert value is not None, f"{name}: {key} has a user but no password"
            elif not SECRET_NAME.search(key) or key.endswith(("_FILE", "_USER")):
                continue
            checked += 1
            if value is None:
                continue  # passed through from the environment of `docker compose`, when set there
            found = interpolations(str(value))
            assert len(found) == 1 and found[0].group(0) == value, f"{name}: {key} is written inline"
            if found[0].group("op") in (":-", "-"):
                default = found[0].group("arg")
                assert LOCAL_ONLY_DEFAULT.match(default), f"{name}: {key}'s default is not marked local-only"
    assert checked >= 6


def test_no_token_or_password_text_in_the_stack_files() -> None:
    texts = {path: path.read_text() for path in (COMPOSE_FILE, DOCKERFILE)}
    for secret in SECRETS_DIR.glob("*"):
        if secret.name != ".gitignore" and secret.is_file() and secret.read_text().strip():
            for path, text in texts.items():
                assert secret.read_text().strip() not in text, f"{path.name} contains {secret.name}"
    for path, text in texts.items():
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), f"{path.name} contains a token-like string"
