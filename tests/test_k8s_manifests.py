"""The manifests in k8s/ and the Dockerfiles of the images they run, checked offline.

Each manifest is validated against the Kubernetes API schemas that ``kubernetes_validate``
bundles (strict: an unknown or misspelt field fails), the node config in the ConfigMap is
loaded with pycluster's own loader, and the pieces are checked against each other: what
one manifest names, another must provide. No cluster and no container engine run here;
.ci/image builds the images and runs them.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from pycluster import ConfigError, load_config
from pycluster.app import resolve
from pycluster.cli import COOKIE_ENV, cookie_from

ROOT = Path(__file__).parent.parent
K8S = ROOT / "k8s"
COUNTER = ROOT / "examples" / "counter"

# The oldest Kubernetes the docs promise (the restricted Pod Security level is GA there),
# and the newest whose schemas kubernetes_validate bundles.
KUBERNETES_VERSIONS = ("1.25", latest_version())

CONFIG_KEY = "topologies.yaml"
API_ALTERNATIVE = re.compile(
    r"^( *)# BEGIN kubernetes API alternative\n(?P<body>.*?)^ *# END kubernetes API alternative",
    re.MULTILINE | re.DOTALL,
)
# The API resource each ip_lookup_mode of the `kubernetes` strategy reads: (group, resource).
LOOKUP_RESOURCES = {
    "endpointslices": ("discovery.k8s.io", "endpointslices"),
    "endpoints": ("", "endpoints"),
    "pods": ("", "pods"),
}
POD_IP = "10.244.1.7"
COOKIE = "test-cookie-not-a-secret"


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def documents(path: Path) -> tuple[dict[str, Any], ...]:
    """The manifests of one file, parsed once (tests read them, never change them)."""
    return tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)


def resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in manifest_files():
        for doc in documents(path):
            yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


def only(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in resources() if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind} in k8s/, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers = only("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def container_port(port: int | str) -> int:
    """A container port given by number or by name, as probes and Services may give it."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return by_name[port]


def config_text() -> str:
    text: str = only("ConfigMap")["data"][CONFIG_KEY]
    return text


def env() -> dict[str, str]:
    """What the Deployment's environment gives the config, with stand-in values."""
    return {
        "POD_IP": POD_IP,
        "POD_NAMESPACE": kustomization()["namespace"],
        COOKIE_ENV: COOKIE,
    }


def load(text: str, tmp_path: Path, environment: dict[str, str] | None = None) -> Any:
    path = tmp_path / CONFIG_KEY
    path.write_text(text)
    return load_config(path, env=env() if environment is None else environment)


# -- schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("label", "resource"), [pytest.param(label, doc, id=label) for label, doc in resources()]
)
def test_manifest_matches_the_api_schema(
    label: str, resource: dict[str, Any], version: str
) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{label} is invalid for Kubernetes {version}: {where}: {exc.message}")


def test_schema_validation_catches_a_misspelt_field() -> None:
    # Guards the test above: strict mode must refuse what a real API server would reject.
    deployment = only("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# -- kustomization -----------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    missing = [name for name in listed if not (K8S / name).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_every_manifest_is_in_the_kustomization_namespace() -> None:
    namespace = kustomization()["namespace"]
    assert only("Namespace")["metadata"]["name"] == namespace
    for label, doc in resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, label


def test_kustomize_labels_leave_selectors_alone() -> None:
    # A Deployment's selector is immutable: labels added to it would break the next apply.
    for entry in kustomization()["labels"]:
        assert entry.get("includeSelectors") is False


def test_kustomization_names_the_deployments_image() -> None:
    # The Deployment runs the Counter service's image (examples/counter/Dockerfile), at
    # the version its pyproject gives.
    images = {image["name"]: image for image in kustomization()["images"]}
    image = images[container()["image"]]
    project = tomllib.loads((COUNTER / "pyproject.toml").read_text())["project"]
    assert image["newName"] == project["name"] == container()["image"]
    assert image["newTag"] == project["version"]


# -- the node config in the ConfigMap ----------------------------------------------------


def test_configmap_config_loads(tmp_path: Path) -> None:
    # Needs the built-in kubernetes.dns strategy: an unknown strategy fails the load.
    config = load(config_text(), tmp_path)
    assert config.node.name == f"app@{POD_IP}"
    assert config.node.cookie == COOKIE
    topology = config.topologies["k8s"]
    assert topology.strategy == "kubernetes.dns"
    service = only("Service")["metadata"]["name"]
    namespace = kustomization()["namespace"]
    assert topology.config.service == f"{service}.{namespace}.svc.cluster.local"
    assert topology.config.application_name == config.node.name.split("@")[0]


def test_configmap_runs_the_counter_service_once_its_peers_are_there(tmp_path: Path) -> None:
    config = load(config_text(), tmp_path)
    assert config.app == "pycluster_counter.service:app"
    app = resolve_counter_app(config.app)
    assert app.__module__ == "pycluster_counter.service"
    # The app starts the Counter once min_peers peers merged; fewer pods than that would
    # never turn ready.
    replicas = only("Deployment")["spec"]["replicas"]
    assert 0 < config.node.ready.min_peers < replicas


def resolve_counter_app(spec: str) -> Any:
    """The app ``spec`` names, imported from the Counter service's sources."""
    path = str(COUNTER / "src")
    try:
        return resolve(spec, path)
    finally:
        if path in sys.path:
            sys.path.remove(path)


def test_the_api_alternative_loads_and_matches_the_role(tmp_path: Path) -> None:
    # Needs the built-in kubernetes (API) strategy: an unknown strategy fails the load.
    match = API_ALTERNATIVE.search(config_text())
    assert match is not None, "the commented kubernetes API alternative is missing"
    indent = match.group(1)
    lines = match.group("body").splitlines()
    assert all(line.startswith(f"{indent}# ") for line in lines)
    uncommented = "\n".join(indent + line[len(indent) + 2 :] for line in lines)
    alternative = yaml.safe_load(uncommented)
    raw = yaml.safe_load(config_text())
    assert set(alternative) == set(raw["topologies"]), "the alternative replaces the topology"
    raw["topologies"] = alternative
    config = load(yaml.safe_dump(raw), tmp_path)
    topology = config.topologies["k8s"]
    assert topology.strategy == "kubernetes"
    assert topology.config.node_basename == config.node.name.split("@")[0]
    # The selector is matched against the labels of the objects the lookup mode reads.
    service = only("Service")["metadata"]
    labels_read = {
        "endpointslices": {**service["labels"], "kubernetes.io/service-name": service["name"]},
        "endpoints": service["labels"],
        "pods": only("Deployment")["spec"]["template"]["metadata"]["labels"],
    }[topology.config.ip_lookup_mode]
    selector = dict(term.split("=", 1) for term in topology.config.selector.split(","))
    assert selector.items() <= labels_read.items()
    group, resource = LOOKUP_RESOURCES[topology.config.ip_lookup_mode]
    rules = only("Role")["rules"]
    assert rules == [{"apiGroups": [group], "resources": [resource], "verbs": ["list", "watch"]}]


def cookie_generator() -> dict[str, Any]:
    """The kustomization's secretGenerator entry for the cookie Secret."""
    generators = kustomization()["secretGenerator"]
    assert len(generators) == 1
    found: dict[str, Any] = generators[0]
    return found


def generated_keys(generator: dict[str, Any]) -> dict[str, str]:
    """Key -> file of a secretGenerator's ``files`` (``key=path``, or the path's name)."""
    keys = {}
    for entry in generator["files"]:
        key, _, path = entry.rpartition("=")
        keys[key or Path(path).name] = path
    return keys


def test_the_cookie_secret_is_generated_from_a_file_never_committed() -> None:
    # No manifest holds a Secret, so `kubectl apply -k` cannot overwrite a real cookie with
    # a placeholder: the only Secret is generated from k8s/cookie, which git ignores.
    assert not [label for label, doc in resources() if doc["kind"] == "Secret"]
    generator = cookie_generator()
    assert generated_keys(generator) == {"cookie": "cookie"}
    # A fixed name: a new cookie must not roll pods one by one onto two cookies.
    assert generator["options"]["disableNameSuffixHash"] is True
    assert "cookie" in (K8S / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("content", ["", "\n"], ids=["empty", "a newline"])
def test_an_empty_cookie_file_keeps_nodes_from_starting(
    content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an empty k8s/cookie, `pycluster run` finds no cookie and exits with a config
    # error instead of joining anyone.
    monkeypatch.setenv(COOKIE_ENV, content)
    raw = yaml.safe_load(config_text())
    raw["topologies"] = {}  # the cookie is what is checked here, not the strategies
    raw.pop("app")  # and not the app
    config = load(yaml.safe_dump(raw), tmp_path, {**env(), COOKIE_ENV: content})
    args = argparse.Namespace(cookie=None, cookie_file=None)
    with pytest.raises(ConfigError) as caught:
        cookie_from(args, config.node.cookie)
    assert [issue.path for issue in caught.value.issues] in (["node.cookie"], [COOKIE_ENV])


# -- consistency between manifests -------------------------------------------------------


def test_the_service_is_headless_and_publishes_unready_pods() -> None:
    spec = only("Service")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True


def test_selectors_match_the_pod_labels() -> None:
    deployment = only("Deployment")["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    selectors = {
        "Service": only("Service")["spec"]["selector"],
        "Deployment": deployment["selector"]["matchLabels"],
        "PodDisruptionBudget": only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, kind
        assert selector.items() <= pod_labels.items(), kind


def test_ports_match_the_node_config() -> None:
    node = yaml.safe_load(config_text())["node"]
    probes = {
        "/readyz": container()["readinessProbe"]["httpGet"],
        "/healthz": container()["livenessProbe"]["httpGet"],
    }
    for path, probe in probes.items():
        assert probe["path"] == path
        assert container_port(probe["port"]) == node["http"]["port"]
    assert container_port("cluster") == node["port"]
    service_ports = {
        p["port"]: container_port(p["targetPort"]) for p in only("Service")["spec"]["ports"]
    }
    assert service_ports == {node["port"]: node["port"], node["http"]["port"]: node["http"]["port"]}


def test_the_deployment_sets_every_variable_the_config_uses() -> None:
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", config_text()))
    assert used == set(env())
    variables = {var["name"]: var for var in container()["env"]}
    assert used <= set(variables)
    assert variables["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert variables["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    reference = variables["PYCLUSTER_COOKIE"]["valueFrom"]["secretKeyRef"]
    assert reference["name"] == cookie_generator()["name"]
    assert reference["key"] in generated_keys(cookie_generator())


def test_the_role_is_bound_to_the_deployments_service_account() -> None:
    account = only("ServiceAccount")["metadata"]
    pod = only("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    binding = only("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": only("Role")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_pods_of_the_dns_strategy_hold_no_api_token() -> None:
    topology = yaml.safe_load(config_text())["topologies"]["k8s"]
    assert topology["strategy"] == "kubernetes.dns"
    pod = only("Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_the_network_policy_admits_the_cluster_port_only_from_its_pods() -> None:
    policy = only("NetworkPolicy")["spec"]
    pod_labels = only("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    node = yaml.safe_load(config_text())["node"]
    cluster_port, http_port = node["port"], node["http"]["port"]
    admitted: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            admitted.setdefault(container_port(port["port"]), []).extend(rule["from"])
    assert set(admitted) == {cluster_port, http_port}
    # 9100 only from the cluster's own pods (the selector of the pods the policy covers).
    assert admitted[cluster_port] == [{"podSelector": policy["podSelector"]}]
    assert {"podSelector": policy["podSelector"]} in admitted[http_port]


def test_the_pod_runs_locked_down_and_leaves_gracefully() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    hardening = container()["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    # A rolling update starts a new pod before stopping an old one, and waits for the new
    # one to find its peers.
    rolling = only("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}
    polling_interval = yaml.safe_load(config_text())["topologies"]["k8s"]["config"][
        "polling_interval"
    ]
    assert only("Deployment")["spec"]["minReadySeconds"] * 1000 >= polling_interval
    # A node's graceful leave takes up to 5 s (Node.stop); SIGKILL must not cut it short.
    assert pod["terminationGracePeriodSeconds"] >= 15
    for limited in ("cpu", "memory"):
        assert limited in container()["resources"]["requests"]
        assert limited in container()["resources"]["limits"]


def test_the_config_is_mounted_where_the_image_reads_it() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    config_volumes = [v for v in pod["volumes"] if "configMap" in v]
    assert len(config_volumes) == 1
    volume = config_volumes[0]
    assert volume["configMap"]["name"] == only("ConfigMap")["metadata"]["name"]
    mounted = f"{mounts[volume['name']]['mountPath']}/{CONFIG_KEY}"
    entrypoint = json.loads(dockerfile_instructions()["ENTRYPOINT"][-1])
    assert entrypoint == ["pycluster", "run", mounted]


# -- Dockerfile --------------------------------------------------------------------------


PYCLUSTER_DOCKERFILE = K8S / "Dockerfile"
COUNTER_DOCKERFILE = COUNTER / "Dockerfile"
DOCKERFILES = [PYCLUSTER_DOCKERFILE, COUNTER_DOCKERFILE]


def dockerfile_lines(path: Path = PYCLUSTER_DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_instructions(path: Path = PYCLUSTER_DOCKERFILE) -> dict[str, list[str]]:
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in dockerfile_lines(path):
        by_keyword.setdefault(keyword, []).append(rest)
    return by_keyword


def test_dockerfile_builds_in_stages_and_runs_as_the_pods_user() -> None:
    found = dockerfile_instructions()
    assert len(found["FROM"]) >= 2
    base = dict(arg.split("=", 1) for arg in found["ARG"] if "=" in arg)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    assert all(line.startswith("${PYTHON_IMAGE}") for line in found["FROM"])
    user = found["USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert dockerfile_lines()[-1][0] == "ENTRYPOINT", "nothing after the ENTRYPOINT"
    pod = only("Deployment")["spec"]["template"]["spec"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert found["STOPSIGNAL"] == ["SIGTERM"]
    node = yaml.safe_load(config_text())["node"]
    assert found["EXPOSE"][-1].split() == [str(node["port"]), str(node["http"]["port"])]


def test_dockerfile_installs_the_package_with_the_kubernetes_extra() -> None:
    runs = [shlex.split(rest) for rest in dockerfile_instructions()["RUN"]]
    words = [word for run in runs for word in run]
    assert ".[kubernetes]" in words, "the first stage builds the wheels with the extra"
    assert "pycluster[kubernetes]" in words, "the final stage installs the extra"


SECRET_MOUNT = re.compile(r"--mount=type=secret,\S+")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_dockerfile_bakes_in_no_secret(path: Path) -> None:
    stage = 0
    for keyword, rest in dockerfile_lines(path):
        stage += keyword == "FROM"
        # pip's CA and config reach the first stage as build secrets, which no image keeps.
        if SECRET_MOUNT.search(rest):
            assert keyword == "RUN", f"{keyword} {rest}"
            assert stage == 1, f"a secret mounted outside the first stage: {rest}"
            rest = SECRET_MOUNT.sub("", rest)
        assert not re.search(r"cookie|secret|password|token|credential", rest, re.IGNORECASE), (
            f"{keyword} {rest}"
        )
        if keyword in {"COPY", "ADD"}:
            assert "k8s" not in rest
    # The build context is only what the dockerignore lets in: never k8s/cookie.
    ignore = {
        PYCLUSTER_DOCKERFILE: K8S / "Dockerfile.dockerignore",
        COUNTER_DOCKERFILE: COUNTER / ".dockerignore",
    }[path]
    ignored = ignore.read_text().splitlines()
    assert "*" in ignored
    assert not [line for line in ignored if line.startswith("!") and "k8s" in line]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_dockerfile_says_what_builds_it(path: Path) -> None:
    # `RUN --mount` needs BuildKit or podman/buildah; the classic builder fails on it.
    assert any("--mount=" in rest for keyword, rest in dockerfile_lines(path))
    header = path.read_text().split("\nARG ")[0]
    assert "BuildKit" in header
    assert "podman" in header


def test_the_counter_image_is_the_pycluster_image_plus_the_service() -> None:
    found = dockerfile_instructions(COUNTER_DOCKERFILE)
    args = dict(arg.split("=", 1) for arg in found["ARG"] if "=" in arg)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert args["PYCLUSTER_IMAGE"] == f"pycluster:{version}"
    assert (
        args["PYTHON_IMAGE"]
        == dict(arg.split("=", 1) for arg in dockerfile_instructions()["ARG"] if "=" in arg)[
            "PYTHON_IMAGE"
        ]
    )
    assert found["FROM"][-1] == "${PYCLUSTER_IMAGE}"
    # Its own config at the path pycluster's ENTRYPOINT runs, and the pod's user again.
    entrypoint = json.loads(dockerfile_instructions()["ENTRYPOINT"][-1])
    assert found["COPY"][-1].split() == ["counter.yaml", entrypoint[-1]]
    pod = only("Deployment")["spec"]["template"]["spec"]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert found["USER"][-1] == user
    assert dockerfile_lines(COUNTER_DOCKERFILE)[-1] == ("USER", user)
    words = [word for run in found["RUN"] for word in shlex.split(run)]
    assert "pycluster-counter" in words


def test_the_counter_images_config_loads(tmp_path: Path) -> None:
    environment = {
        "POD_IP": POD_IP,
        COOKIE_ENV: COOKIE,
        "SERVICE_NAME": "counter.dns.podman",
    }
    config = load((COUNTER / "counter.yaml").read_text(), tmp_path, environment)
    assert config.node.name == f"app@{POD_IP}"
    assert config.node.ready.min_peers == 0
    topology = config.topologies["service"]
    assert topology.strategy == "kubernetes.dns"
    assert topology.config.service == "counter.dns.podman"
    assert resolve_counter_app(config.app).__module__ == "pycluster_counter.service"
