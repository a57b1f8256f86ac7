"""deploy/: the Dockerfiles, the Kubernetes manifests, the compose file and the gramine-sgx shim agree with each
other and with the code they deploy (command-line options, HTTP routes, enclave sizes, data layout)."""

from __future__ import annotations

import datetime
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from starlette.routing import Mount, Route

from enklave.cli import cli
from enklave.deploy.gramine import enclave_size, gramine_command
from enklave.runtime.bundle import sign_bundle, write_bundle
from enklave.runtime.config import EnclaveConfig
from enklave.runtime.signing import generate_signing_key, save_signing_key

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
NAMESPACE = "enklave"
UID = 10001
EPC = "sgx.intel.com/epc"
AKS_SGX_LABEL = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
DATA_DIR = "/var/lib/enklave"
# The command group of each service, and the package whose enclave_app/ holds the enclave it signs at start.
ENCLAVE_PACKAGES = {
    "attestation-service": "enklave.services.attestation",
    "kbs": "enklave.services.kbs",
    "inference": "enklave.inference",
}
# The smallest token the services accept; the placeholders in secrets.yaml must be shorter.
MIN_TOKEN = 16


# --- Reading the files -------------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in _yaml_files():
        for document in yaml.safe_load_all(path.read_text("utf-8")):
            assert isinstance(document, dict), f"{path.name}: a document that is not a mapping"
            found.append(document)
    return found


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _documents() if d["kind"] == kind]


def _deployments() -> list[dict[str, Any]]:
    return _of_kind("Deployment")


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod(deployment)
    return [*pod.get("initContainers", []), *pod["containers"]]


def _deployment_ids() -> list[str]:
    return [d["metadata"]["name"] for d in _deployments()]


@dataclass(frozen=True)
class Invocation:
    """A command line of the enklave CLI, parsed against the real click command."""

    group: str
    command: click.Command
    options: dict[str, str | bool]

    def value(self, name: str) -> str:
        found = self.options[name]
        assert isinstance(found, str)
        return found


def _group(name: str) -> click.Group:
    # The command groups by module, so that options are checked even before a group is registered in the CLI
    # (test_every_deployed_command_is_registered checks that separately).
    if name == "attestation-service":
        from enklave.cli.attestation_service import attestation_service

        return attestation_service
    if name == "kbs":
        from enklave.cli.kbs import kbs

        return kbs
    assert name == "inference", f"enklave has no service group {name!r}"
    from enklave.cli.inference import inference

    return inference


def _command(path: list[str]) -> click.Command:
    group = _group(path[0])
    command = group.commands.get(path[1])
    assert command is not None, f"enklave has no command {' '.join(path)}"
    return command


def _invocation(argv: list[str]) -> Invocation:
    """Parse ``argv`` (without the program name) as the enklave CLI would: every option must exist, flags take
    no value, other options one, and values of non-path types must convert (ports, modes, integers)."""
    words = [w for w in argv if not w.startswith("-")]
    path = words[:2]
    command = _command(path)
    rest = argv[argv.index(path[-1]) + 1 :]
    options: dict[str, str | bool] = {}
    index = 0
    while index < len(rest):
        word = rest[index]
        assert word.startswith("--"), f"unexpected argument {word!r} for enklave {' '.join(path)}"
        name, has_value, value = word.partition("=")
        param = next((p for p in command.params if name in p.opts), None)
        assert isinstance(param, click.Option), f"enklave {' '.join(path)} has no option {name}"
        if param.is_flag:
            assert not has_value, f"{name} is a flag"
            options[name] = True
        else:
            if not has_value:
                index += 1
                value = rest[index]
            if not isinstance(param.type, click.Path):
                param.type.convert(value, param, None)
            options[name] = value
        index += 1
    return Invocation(path[0], command, options)


def _routes(app: Any) -> set[str]:
    paths: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route):
            paths.add(route.path)
        elif isinstance(route, Mount):
            paths.update(route.path + sub for sub in _routes(route))
    return paths


def _app_routes(group: str) -> set[str]:
    """The HTTP routes the service of ``group`` serves, from its real app."""
    if group == "attestation-service":
        from enklave.services.attestation.app import create_app as attestation_app

        return _routes(attestation_app(object()))  # type: ignore[arg-type]
    if group == "kbs":
        from enklave.services.kbs.app import create_app as kbs_app

        return _routes(kbs_app(object()))  # type: ignore[arg-type]
    return _inference_routes()


@functools.cache
def _inference_routes() -> set[str]:
    from enklave.inference.app import build_app
    from enklave.inference.service import InferenceConfig
    from enklave.services.storage import open_storage

    # The app is only built (its service starts with the lifespan, which never runs here).
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/state.db")
        try:
            return _routes(build_app(InferenceConfig(data_dir=Path(tmp)), storage))
        finally:
            storage.close()


def _route_matches(path: str, routes: set[str]) -> bool:
    # A probe path has no parameters; a route may (e.g. /policies/{type}), which a probe must not rely on.
    return path.split("?", maxsplit=1)[0] in routes


def _quantity(value: str | int) -> int:
    """A Kubernetes memory quantity in bytes (the binary and decimal suffixes the manifests use)."""
    text = str(value)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def _packaged_config(group: str) -> EnclaveConfig:
    packaged = resources.files(ENCLAVE_PACKAGES[group]) / "enclave_app" / "enklave.toml"
    return EnclaveConfig.from_toml(packaged.read_text("utf-8"), None)


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of a Dockerfile (continuations joined, comments dropped), and those of its last stage."""

    instructions: list[tuple[str, str]]

    @property
    def final(self) -> list[tuple[str, str]]:
        last = max(i for i, (op, _) in enumerate(self.instructions) if op == "FROM")
        return self.instructions[last:]

    def args(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for op, rest in self.instructions:
            if op == "ARG" and "=" in rest:
                name, _, value = rest.partition("=")
                found[name] = value
        return found

    def one(self, op: str) -> str:
        values = [rest for o, rest in self.final if o == op]
        assert len(values) == 1, f"expected one {op} in the final stage, found {values}"
        return values[0]


def _dockerfile(name: str) -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in (DOCKER / name).read_text("utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{name}: a continuation at the end of the file"
    instructions = []
    for line in lines:
        op, _, rest = line.partition(" ")
        instructions.append((op.upper(), rest.strip()))
    return Dockerfile(instructions)


def _image_base(dockerfile: Dockerfile) -> str:
    base = dockerfile.final[0][1]
    for name, value in dockerfile.args().items():
        base = base.replace("${" + name + "}", value)
    return base


def _json_array(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


# --- Kubernetes: structure ---------------------------------------------------------------------------------------


def test_every_manifest_parses_and_is_namespaced() -> None:
    documents = _documents()
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service"} <= kinds
    for document in documents:
        assert document.get("apiVersion"), document
        assert document["metadata"].get("name"), document
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == NAMESPACE, document["metadata"]
    assert [d["metadata"]["name"] for d in _of_kind("Namespace")] == [NAMESPACE]


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    assert kustomization["namespace"] == NAMESPACE
    # The Secret is created once by hand: applying the kustomization again must not reset real tokens.
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in _yaml_files() if p.name != "secrets.yaml"
    )
    (image,) = kustomization["images"]
    assert image == {"name": "enklave", "newTag": f"{VERSION}-sgx"}


def test_three_services_each_with_its_deployment_service_and_volume() -> None:
    groups = sorted(_invocation(c["args"]).group for d in _deployments() for c in _containers(d))
    assert groups == sorted(ENCLAVE_PACKAGES)
    services = {s["metadata"]["name"]: s for s in _of_kind("Service")}
    claims = {c["metadata"]["name"] for c in _of_kind("PersistentVolumeClaim")}
    for deployment in _deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        service = services[deployment["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= labels.items()
        (container,) = _pod(deployment)["containers"]
        port_names = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
        volumes = {v["name"]: v for v in _pod(deployment)["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] in claims
        # SQLite on a ReadWriteOnce volume: one pod at a time, the old one gone before the new one starts.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("name", _deployment_ids())
def test_every_container_has_resource_limits_including_epc(name: str) -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    for container in _containers(deployment):
        resources_ = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory", EPC} <= set(resources_[kind]), (container["name"], kind)
        # An extended resource cannot be overcommitted: Kubernetes requires requests == limits.
        assert resources_["requests"][EPC] == resources_["limits"][EPC]
        assert _quantity(resources_["requests"]["memory"]) <= _quantity(resources_["limits"]["memory"])


@pytest.mark.parametrize("name", _deployment_ids())
def test_epc_holds_the_whole_enclave(name: str) -> None:
    # Without EDMM, Gramine commits sgx.enclave_size at start: the EPC budget must hold it, or the pod is
    # scheduled where its enclave cannot load (or pages EPC heavily).
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    (container,) = _pod(deployment)["containers"]
    group = _invocation(container["args"]).group
    needed = enclave_size(_packaged_config(group).heap_size)
    assert _quantity(container["resources"]["limits"][EPC]) >= needed, (group, needed)


@pytest.mark.parametrize("name", _deployment_ids())
def test_pods_land_on_sgx_nodes_and_reach_aesmd(name: str) -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    pod = _pod(deployment)
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": AKS_SGX_LABEL, "operator": "Exists"} in terms[0]["matchExpressions"]
    assert {"key": EPC, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["aesmd"]["hostPath"] == {"path": "/var/run/aesmd", "type": "Directory"}
    for container in pod["containers"]:
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/var/run/aesmd"] == "aesmd"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["ENKLAVE_MODE"] == "sgx"
        assert env["ENKLAVE_HOME"] == DATA_DIR
        assert _invocation(container["args"]).options["--mode"] == "sgx"


@pytest.mark.parametrize("name", _deployment_ids())
def test_pods_run_as_the_images_non_root_user(name: str) -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    pod = _pod(deployment)
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == context["runAsGroup"] == context["fsGroup"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in _containers(deployment):
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False
        assert own["capabilities"]["drop"] == ["ALL"]
        assert own.get("privileged", False) is False
        assert own["readOnlyRootFilesystem"] is True
        # With a read-only root, what the services write must be volumes: the data directory and /tmp.
        mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert {DATA_DIR, "/tmp"} <= mounts


@pytest.mark.parametrize("name", _deployment_ids())
def test_probes_point_at_routes_and_ports_that_exist(name: str) -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    for container in _pod(deployment)["containers"]:
        invocation = _invocation(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert set(ports.values()) == {int(invocation.value("--port"))}
        routes = _app_routes(invocation.group)
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container[kind]
            handler = probe.get("httpGet") or probe.get("tcpSocket")
            assert handler is not None, (kind, probe)
            assert handler["port"] in ports or handler["port"] in ports.values()
            if "httpGet" in probe:
                assert _route_matches(probe["httpGet"]["path"], routes), (kind, probe["httpGet"]["path"])


def _deployed_commands() -> set[tuple[str, str]]:
    found = {tuple(c["args"][:2]) for d in _deployments() for c in _containers(d)}
    found |= {tuple(s["command"][:2]) for s in _compose()["services"].values()}
    found |= {tuple(_json_array(_dockerfile(n).one("CMD"))[:2]) for n in ("Dockerfile.sim", "Dockerfile.sgx")}
    return found  # type: ignore[return-value]


def test_every_deployed_command_is_registered() -> None:
    for group, command in _deployed_commands():
        registered = cli.commands.get(group)
        assert isinstance(registered, click.Group), f"`enklave {group}` is not a command of the enklave CLI"
        assert command in registered.commands, f"`enklave {group} {command}` does not exist"


def test_every_container_uses_the_one_sgx_image() -> None:
    images = {c["image"] for d in _deployments() for c in _containers(d)}
    assert images == {f"enklave:{VERSION}-sgx"}


@pytest.mark.parametrize("name", _deployment_ids())
def test_container_arguments_are_real_options(name: str) -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == name]
    for container in _containers(deployment):
        invocation = _invocation(container["args"])
        assert invocation.command.name == "serve"
        # Reachable from other pods, and served on the port the Service targets.
        assert invocation.options["--host"] == "0.0.0.0"


def _service_urls() -> dict[tuple[str, int], str]:
    """(host, port) of every Service as other pods in the cluster reach it, to the Service's name."""
    found: dict[tuple[str, int], str] = {}
    for service in _of_kind("Service"):
        name = service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            found[(f"{name}.{NAMESPACE}.svc.cluster.local", port["port"])] = name
    return found


def _invocations() -> dict[str, Invocation]:
    return {(inv := _invocation(c["args"])).group: inv for d in _deployments() for c in _pod(d)["containers"]}


def test_services_find_each_other_by_their_service_names() -> None:
    invocations = _invocations()
    urls = _service_urls()
    issuer = invocations["attestation-service"].value("--base-url")
    host_port = (urlsplit(issuer).hostname, urlsplit(issuer).port)
    assert urls.get(host_port) == "enklave-attestation"  # type: ignore[arg-type]
    # The key broker pins the attestation service under the issuer name its tokens carry.
    authority = invocations["kbs"].value("--authority")
    pinned_issuer, _, jwks_url = authority.partition(f"={issuer}/")
    assert pinned_issuer == issuer
    assert f"/{jwks_url}" in _app_routes("attestation-service")
    inference = invocations["inference"]
    for option, target in (("--attestation-url", "enklave-attestation"), ("--kbs-url", "enklave-kbs")):
        parts = urlsplit(inference.value(option))
        assert urls.get((parts.hostname, parts.port)) == target, option  # type: ignore[arg-type]


def test_secrets_are_placeholders_that_cannot_start_a_service() -> None:
    (secret,) = _of_kind("Secret")
    values = secret["stringData"]
    assert values, "no tokens"
    for key, value in values.items():
        assert len(value.strip()) < MIN_TOKEN, f"{key}: a usable token must not be committed"
    # Every reference to the secret names a key it has.
    for deployment in _deployments():
        pod = _pod(deployment)
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] == secret["metadata"]["name"]
                assert {item["key"] for item in volume["secret"]["items"]} <= set(values)
        for container in _containers(deployment):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in values


def test_the_services_refuse_the_placeholder_tokens(tmp_path: Path) -> None:
    from enklave.cli._serve import read_admin_token
    from enklave.errors import UsageError
    from enklave.inference.service import InferenceConfig

    (secret,) = _of_kind("Secret")
    for value in set(secret["stringData"].values()):
        with pytest.raises(UsageError):
            InferenceConfig(data_dir=tmp_path, owner_token=value)
        with pytest.raises(UsageError):
            InferenceConfig(data_dir=tmp_path, api_key=value)
        token_file = tmp_path / "token"
        token_file.write_text(value)
        with pytest.raises(UsageError):
            read_admin_token(token_file)


def test_inference_pins_the_key_broker_from_its_configmap(tmp_path: Path) -> None:
    import tomllib

    from enklave.inference.service import InferenceConfig

    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == "enklave-inference"]
    (container,) = _pod(deployment)["containers"]
    from_configmaps = {
        env["name"]: env["valueFrom"]["configMapKeyRef"]
        for env in container["env"]
        if "configMapKeyRef" in env.get("valueFrom", {})
    }
    # Required (no "optional"): the pod waits for the ConfigMap instead of starting with no key broker pinned.
    assert from_configmaps == {"ENKLAVE_KBS_MRSIGNER": {"name": "enklave-kbs-identity", "key": "mrsigner"}}
    serve = _command(["inference", "serve"])
    (option,) = [param for param in serve.params if param.name == "kbs_mrsigner"]
    assert option.envvar == "ENKLAVE_KBS_MRSIGNER"
    # With the Deployment's arguments, that MRSIGNER makes a whole identity: the packaged key broker's product id.
    invocation = _invocation(container["args"])
    packaged = tomllib.loads((ROOT / "src/enklave/services/kbs/enclave_app/enklave.toml").read_text())
    assert int(invocation.value("--kbs-isv-prod-id")) == packaged["enclave"]["product_id"]
    config = InferenceConfig(
        data_dir=tmp_path,
        attestation_url=invocation.value("--attestation-url"),
        kbs_url=invocation.value("--kbs-url"),
        kbs_mrsigner="ab" * 32,
        kbs_isv_prod_id=int(invocation.value("--kbs-isv-prod-id")),
    )
    assert config.kbs_policy() == {"mr_signer": "ab" * 32, "isv_prod_id": 2}


def test_token_files_are_mounted_where_the_arguments_say() -> None:
    for deployment in _deployments():
        pod = _pod(deployment)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            invocation = _invocation(container["args"])
            for option, value in invocation.options.items():
                if not option.endswith("-file") or not isinstance(value, str):
                    continue
                path = Path(value)
                mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
                items = {item["path"] for item in volumes[mount["name"]]["secret"]["items"]}
                assert path.name in items, (option, value)


def test_inference_pod_is_scraped_by_prometheus() -> None:
    (deployment,) = [d for d in _deployments() if d["metadata"]["name"] == "enklave-inference"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    (container,) = _pod(deployment)["containers"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/path"] in _app_routes("inference")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    built = list(yaml.safe_load_all(result.stdout))
    assert {d["kind"] for d in built} >= {"Deployment", "Service", "PersistentVolumeClaim", "Namespace"}
    assert "Secret" not in {d["kind"] for d in built}
    for document in built:
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "enklave"


# --- Docker ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), [("Dockerfile.sim", "sim"), ("Dockerfile.sgx", "sgx")])
def test_dockerfile_runs_the_inference_service_as_non_root(name: str, mode: str) -> None:
    dockerfile = _dockerfile(name)
    assert dockerfile.one("USER") == f"{UID}:{UID}"
    entrypoint = _json_array(dockerfile.one("ENTRYPOINT"))
    command = _json_array(dockerfile.one("CMD"))
    assert entrypoint == ["enklave"]
    invocation = _invocation(command)
    assert invocation.group == "inference"
    assert invocation.options["--mode"] == mode
    assert invocation.options["--host"] == "0.0.0.0"
    assert dockerfile.one("EXPOSE") == invocation.options["--port"]
    env = dockerfile.one("ENV")
    assert f"ENKLAVE_MODE={mode}" in env
    assert f"ENKLAVE_HOME={DATA_DIR}" in env
    assert f'VOLUME ["{DATA_DIR}"]' == f"VOLUME {dockerfile.one('VOLUME')}"
    # The user made in the image is the one that runs, and owns the data directory.
    run = " ".join(rest for op, rest in dockerfile.final if op == "RUN")
    assert f"--uid {UID}" in run and f"-o {UID} -g {UID} -m 0700 {DATA_DIR}" in run


@pytest.mark.parametrize("name", ["Dockerfile.sim", "Dockerfile.sgx"])
def test_dockerfile_healthcheck_asks_a_route_on_the_served_port(name: str) -> None:
    dockerfile = _dockerfile(name)
    check = dockerfile.one("HEALTHCHECK")
    command = _invocation(_json_array(dockerfile.one("CMD")))
    url = check[check.index("http://") :].split("'")[0]
    parts = urlsplit(url)
    assert parts.port == int(command.value("--port"))
    assert _route_matches(parts.path, _app_routes("inference"))


@pytest.mark.parametrize("name", ["Dockerfile.sim", "Dockerfile.sgx"])
def test_dockerfile_copies_only_what_its_dockerignore_sends(name: str) -> None:
    dockerfile = _dockerfile(name)
    ignore = (DOCKER / f"{name}.dockerignore").read_text("utf-8").splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for op, rest in dockerfile.instructions:
        if op != "COPY" or rest.startswith("--from="):
            continue
        *sources, _target = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, source


def test_image_bases() -> None:
    sim = _dockerfile("Dockerfile.sim")
    sgx = _dockerfile("Dockerfile.sgx")
    assert _image_base(sim) == "python:3.11-slim"
    assert _image_base(sgx).startswith("gramineproject/gramine:1.8-")


def test_sgx_image_installs_the_shim_in_place_of_the_loader() -> None:
    shim = _load_shim()
    run = " ".join(rest for op, rest in _dockerfile("Dockerfile.sgx").final if op == "RUN")
    assert f"--divert {shim.REAL_LOADER} --add /usr/bin/gramine-sgx" in run
    assert "/usr/local/lib/enklave/gramine_sgx_shim.py /usr/bin/gramine-sgx" in run
    # The host starts the loader with an empty environment: only /bin and /usr/bin are searched.
    assert gramine_command("/data/enclave", "x")[0] == "gramine-sgx"
    # The shim's interpreter is the image's virtual environment, the one the services and the enclave run.
    shebang = (DOCKER / "gramine_sgx_shim.py").read_text("utf-8").splitlines()[0]
    assert shebang == "#!/opt/enklave/venv/bin/python3 -I"
    assert "python3 -m venv /opt/enklave/venv" in run


# --- Compose (simulation) ----------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DOCKER / "compose.sim.yaml").read_text("utf-8"))
    return compose


def test_compose_runs_the_three_services_on_one_simulated_platform() -> None:
    compose = _compose()
    services = compose["services"]
    assert sorted(services) == ["attestation", "inference", "kbs"]
    groups = {}
    for name, service in services.items():
        invocation = _invocation(service["command"])
        groups[invocation.group] = (name, invocation)
        assert invocation.options["--mode"] == "sim"
        assert service["user"] == f"{UID}:{UID}"
        assert service["read_only"] is True
        assert service["image"] == f"enklave:{VERSION}-sim"
        # One simulated platform: every service has the same ENKLAVE_HOME volume.
        assert service["volumes"] == [f"enklave-home:{DATA_DIR}"]
        assert service["environment"]["ENKLAVE_HOME"] == DATA_DIR
        check = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1', {invocation.value('--port')})" in check or (
            f"127.0.0.1:{invocation.value('--port')}/" in check
            and _route_matches(check.split(f":{invocation.value('--port')}")[1].split("'")[0],
                               _app_routes(invocation.group))
        )  # fmt: skip
    assert sorted(groups) == sorted(ENCLAVE_PACKAGES)
    attestation = groups["attestation-service"][1]
    assert attestation.options["--allow-simulated"] is True
    issuer = attestation.value("--base-url")
    assert urlsplit(issuer).hostname == groups["attestation-service"][0]
    assert groups["kbs"][1].value("--authority") == f"{issuer}={issuer}/certs"
    inference = groups["inference"][1]
    for option, group in (("--attestation-url", "attestation-service"), ("--kbs-url", "kbs")):
        parts = urlsplit(inference.value(option))
        assert (parts.hostname, str(parts.port)) == (groups[group][0], groups[group][1].value("--port"))
    assert services["attestation"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.sim"
    assert (DOCKER / services["attestation"]["build"]["context"]).resolve() == ROOT


def _interpolate(value: str, environment: dict[str, str]) -> str:
    """The two Compose interpolation forms the inference service's key broker identity uses."""
    match = re.fullmatch(r"\$\{(\w+):(-|\+)(.*)\}", value)
    assert match is not None, value
    name, operator, operand = match.groups()
    present = bool(environment.get(name))
    if operator == "-":
        return environment[name] if present else operand
    return operand if present else ""


@pytest.mark.parametrize("mrsigner", ["ab" * 32, None], ids=["set", "unset"])
def test_compose_pins_the_key_broker_when_its_signer_is_given(tmp_path: Path, mrsigner: str | None) -> None:
    from enklave.inference.service import InferenceConfig

    service = _compose()["services"]["inference"]
    invocation = _invocation(service["command"])
    serve = _command(["inference", "serve"])
    options = {param.name: param for param in serve.params}
    shell = {} if mrsigner is None else {"ENKLAVE_KBS_MRSIGNER": mrsigner}
    # What the container sees; Click ignores an empty variable, as if it were unset.
    seen = {
        name: _interpolate(service["environment"][option.envvar], shell)  # type: ignore[index]
        for name, option in options.items()
        if name in ("kbs_mrsigner", "kbs_isv_prod_id")
    }
    config = InferenceConfig(
        data_dir=tmp_path,
        attestation_url=invocation.value("--attestation-url"),
        kbs_url=invocation.value("--kbs-url"),
        kbs_mrsigner=seen["kbs_mrsigner"] or None,
        kbs_isv_prod_id=int(seen["kbs_isv_prod_id"]) if seen["kbs_isv_prod_id"] else None,
    )
    expected = None if mrsigner is None else {"mr_signer": mrsigner, "isv_prod_id": 2}
    assert config.kbs_policy() == expected


# --- The gramine-sgx shim ----------------------------------------------------------------------------------------


def _load_shim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gramine_sgx_shim", DOCKER / "gramine_sgx_shim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeGramine:
    """gramine-manifest and gramine-sgx-sign as a runner that records calls and writes their outputs."""

    calls: list[list[str]]
    fail: bool = False

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "error: something broke\n")
        if argv[0].endswith("gramine-manifest"):
            Path(argv[2]).write_text(Path(argv[1]).read_text())
        else:
            manifest = Path(argv[argv.index("--manifest") + 1])
            Path(argv[argv.index("--output") + 1]).write_text("signed")
            manifest.with_suffix(".sig").write_bytes(b"\0" * 1808)
        return subprocess.CompletedProcess(argv, 0, "", "")


@dataclass
class Service:
    """A data directory laid out as a service leaves it: signing key, and the signed bundle under enclave/."""

    data: Path
    bundle: Path
    app: Path
    source: Path

    @property
    def key(self) -> Path:
        return self.data / "enclave-signing-key.pem"


_KEY = generate_signing_key()


@pytest.fixture
def service(tmp_path: Path) -> Service:
    source = tmp_path / "source"
    source.mkdir()
    (source / "enklave.toml").write_text(
        '[enclave]\nname = "demo-service"\nentry = "enclave"\nfiles = ["enclave.py"]\nthreads = 2\n'
    )
    (source / "enclave.py").write_text("VALUE = 1\n")
    data = tmp_path / "data"
    save_signing_key(_KEY, data / "enclave-signing-key.pem")
    bundle = data / "enclave" / "service.enclave"
    write_bundle(sign_bundle(source / "enklave.toml", _KEY), bundle)
    app = Path(gramine_command(bundle.parent, "demo-service")[1])
    return Service(data, bundle, app, source)


@dataclass
class Run:
    code: int
    calls: list[list[str]]
    execs: list[tuple[str, list[str]]]


def _run_shim(service: Service, *, environ: dict[str, str] | None = None, fail: bool = False) -> Run:
    shim = _load_shim()
    fake = FakeGramine([], fail=fail)
    execs: list[tuple[str, list[str]]] = []
    env = {"ENKLAVE_BUNDLE": str(service.bundle)} if environ is None else environ
    code = shim.main(
        ["gramine-sgx", str(service.app), "extra"], env, python=sys.executable, loader="/loader",
        tools_dir=Path("/tools"), runner=fake, execv=lambda path, argv: execs.append((path, argv)),
    )  # fmt: skip
    return Run(code, fake.calls, execs)


def test_shim_signing_key_is_where_services_keep_theirs() -> None:
    from enklave.services import _enclave_app

    assert _load_shim().SIGNING_KEY_NAME == _enclave_app._SIGNING_KEY_NAME


def _built(service: Service) -> bytes:
    return Path(f"{service.app}.manifest.sgx.bundle").read_bytes()


def test_shim_builds_signs_and_starts_the_manifest_of_a_new_bundle(service: Service) -> None:
    run = _run_shim(service)
    template = Path(f"{service.app}.manifest.template")
    manifest = Path(f"{service.app}.manifest")
    assert run.calls == [
        ["/tools/gramine-manifest", str(template), str(manifest)],
        ["/tools/gramine-sgx-sign", "--manifest", str(manifest), "--output", f"{manifest}.sgx",
         "--key", str(service.key)],
    ]  # fmt: skip
    parsed = tomllib.loads(template.read_text())
    assert f"file:{service.bundle}" in parsed["sgx"]["trusted_files"]
    assert parsed["loader"]["env"]["ENKLAVE_BUNDLE"] == str(service.bundle)
    assert parsed["loader"]["env"]["ENKLAVE_MODE"] == "sgx"
    assert parsed["sgx"]["max_threads"] == 2 + 8
    assert _built(service) == service.bundle.read_bytes()
    assert run.execs == [("/loader", ["/loader", str(service.app), "extra"])]
    assert run.code == 0


def test_shim_reuses_a_manifest_built_from_the_same_bundle(service: Service) -> None:
    _run_shim(service)
    again = _run_shim(service)
    assert again.calls == []
    assert again.execs == [("/loader", ["/loader", str(service.app), "extra"])]


def test_shim_keeps_the_measured_bundle_when_only_the_signing_date_changed(service: Service) -> None:
    _run_shim(service)
    first = service.bundle.read_bytes()
    # What a restart on another day does: the same enclave signed again, with another SIGSTRUCT date. Gramine
    # measures the bundle file, so these bytes would be another MRENCLAVE.
    write_bundle(
        sign_bundle(service.source / "enklave.toml", _KEY, date=datetime.date(2001, 2, 3)), service.bundle
    )
    assert service.bundle.read_bytes() != first
    again = _run_shim(service)
    assert again.calls == []
    assert service.bundle.read_bytes() == first
    assert again.execs == [("/loader", ["/loader", str(service.app), "extra"])]


def test_shim_rebuilds_for_another_enclave(service: Service) -> None:
    _run_shim(service)
    (service.source / "enclave.py").write_text("VALUE = 2\n")
    write_bundle(sign_bundle(service.source / "enklave.toml", _KEY), service.bundle)
    changed = service.bundle.read_bytes()
    again = _run_shim(service)
    assert [call[0] for call in again.calls] == ["/tools/gramine-manifest", "/tools/gramine-sgx-sign"]
    assert service.bundle.read_bytes() == changed
    assert _built(service) == changed


def test_shim_rebuilds_for_another_signing_key(service: Service) -> None:
    _run_shim(service)
    other = generate_signing_key()
    write_bundle(sign_bundle(service.source / "enklave.toml", other), service.bundle)
    changed = service.bundle.read_bytes()
    again = _run_shim(service)
    assert len(again.calls) == 2
    assert service.bundle.read_bytes() == changed


def test_shim_rebuilds_over_a_damaged_copy(service: Service) -> None:
    _run_shim(service)
    Path(f"{service.app}.manifest.sgx.bundle").write_bytes(b"damaged")
    write_bundle(
        sign_bundle(service.source / "enklave.toml", _KEY, date=datetime.date(2001, 2, 3)), service.bundle
    )
    again = _run_shim(service)
    assert len(again.calls) == 2
    assert again.code == 0
    assert _built(service) == service.bundle.read_bytes()


def test_shim_refuses_without_the_signing_key(service: Service) -> None:
    service.key.unlink()
    run = _run_shim(service)
    assert run.code == 1
    assert run.execs == [] and run.calls == []
    assert "no signing key" in Path(f"{service.app}.gramine-build.log").read_text()


def test_shim_does_not_start_after_a_failed_build(service: Service) -> None:
    run = _run_shim(service, fail=True)
    assert run.code == 1
    assert run.execs == []
    assert not Path(f"{service.app}.manifest.sgx.bundle").exists()
    assert (
        "gramine-manifest failed with exit code 1: error: something broke"
        in Path(f"{service.app}.gramine-build.log").read_text()
    )


def test_shim_starts_other_manifests_as_they_are(service: Service, tmp_path: Path) -> None:
    # Started by hand (no ENKLAVE_BUNDLE), or for a bundle elsewhere: nothing is built.
    assert _run_shim(service, environ={}).calls == []
    elsewhere = tmp_path / "other" / "x.enclave"
    elsewhere.parent.mkdir()
    shutil.copy(service.bundle, elsewhere)
    run = _run_shim(service, environ={"ENKLAVE_BUNDLE": str(elsewhere)})
    assert run.calls == []
    assert run.execs == [("/loader", ["/loader", str(service.app), "extra"])]


def test_shim_refuses_a_bundle_that_does_not_verify(service: Service) -> None:
    raw = bytearray(service.bundle.read_bytes())
    raw[-1] ^= 1
    service.bundle.write_bytes(bytes(raw))
    run = _run_shim(service)
    assert run.code == 1
    assert run.execs == [] and run.calls == []


def test_shim_usage() -> None:
    assert _load_shim().main(["gramine-sgx"], {}, execv=lambda *a: pytest.fail("exec")) == 2
