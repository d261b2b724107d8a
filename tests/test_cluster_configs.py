"""Static checks of the cluster configs in configs/: they cannot run here, so they are validated.

* configs/cluster-launcher.yaml: Ray's own schema, through the calls `ray up` makes
  (``prepare_config`` then ``validate_config``), plus rstack's sizing rules.
* configs/kuberay-raycluster.yaml: no CRD schema offline, so a documented RayCluster key set
  (below) plus the same sizing rules.

Nothing here starts Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rstack.config import RuntimeConfig, load_config
from rstack.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
LAUNCHER = CONFIGS / "cluster-launcher.yaml"
KUBERAY = CONFIGS / "kuberay-raycluster.yaml"

GiB = 2**30
OS_RESERVE = 4 * GiB  # OS, raylet and other per-node daemons
EXECUTOR_CORES = 4
# vCPUs, memory of the instance types the launcher config may use.
INSTANCES = {"m6i.2xlarge": (8, 32 * GiB), "m6i.4xlarge": (16, 64 * GiB)}
BIND_ENV = "RSTACK_RUNTIME__SPARK_BIND_ADDRESS"

# --- quantities ----------------------------------------------------------------------------------

_K8S_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def k8s_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("16", "500m", "64Gi", "1G") as a number (cores or bytes)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2) not in _K8S_SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(m.group(1)) * _K8S_SUFFIX[m.group(2)]


def spark_memory(value: str) -> int:
    """A Spark/JVM size ("9g", "512m"; binary units) in bytes."""
    m = re.fullmatch(r"([0-9]+)([kmgt]?)b?", value.strip().lower())
    if not m:
        raise ValueError(f"not a Spark memory size: {value!r}")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16", 16), ("500m", 0.5), ("64Gi", 64 * GiB), ("1G", 1e9), ("100M", 1e8), ("4294967296", 4 * GiB)],
)
def test_k8s_quantity(text: str, expected: float) -> None:
    assert k8s_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "16 cores", "1.5Xi", "-1Gi"])
def test_k8s_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        k8s_quantity(text)


@pytest.mark.parametrize(("text", "expected"), [("9g", 9 * GiB), ("512m", 512 * 2**20), ("12G", 12 * GiB)])
def test_spark_memory(text: str, expected: int) -> None:
    assert spark_memory(text) == expected


# --- shared rules ----------------------------------------------------------------------------------


def sizing_problems(
    *,
    env: dict[str, str],
    workers: int,
    worker_cpus: float,
    ray_cpus: float,
    ray_memory: float | None,
    object_store: float,
    node_memory: float,
    head_object_store: float,
    head_memory: float,
) -> list[str]:
    """rstack's per-worker sizing rules (see the comments in the config files)."""
    problems = []
    cores = int(env["RSTACK_RUNTIME__EXECUTOR_CORES"])
    executors = int(env["RSTACK_RUNTIME__NUM_EXECUTORS"])
    executor_mem = spark_memory(env["RSTACK_RUNTIME__EXECUTOR_MEMORY"])
    driver_mem = spark_memory(env["RSTACK_RUNTIME__DRIVER_MEMORY"])
    if cores != EXECUTOR_CORES:
        problems.append(f"executor_cores {cores} != {EXECUTOR_CORES}")
    if executors % workers:
        problems.append(f"{executors} executors do not split evenly over {workers} workers")
    per_node = executors // workers
    if per_node < 1 or per_node > worker_cpus // cores:
        problems.append(f"{per_node} executors per node for {worker_cpus} vCPUs")
    if not per_node * cores < ray_cpus:
        problems.append(f"Ray CPUs {ray_cpus} <= executor cores {per_node * cores}: Ray tasks would starve")
    # Worst case: the Spark driver (a zero-CPU actor, placed anywhere) lands on this worker.
    need = per_node * executor_mem + object_store + OS_RESERVE + driver_mem
    if need > node_memory:
        problems.append(f"worker memory {need / GiB:.1f} GiB needed > {node_memory / GiB:.1f} GiB")
    if ray_memory is not None and not per_node * executor_mem <= ray_memory < (per_node + 1) * executor_mem:
        problems.append(f"Ray memory {ray_memory / GiB:.1f} GiB does not cap executors at {per_node} per node")
    head_need = driver_mem + head_object_store + OS_RESERVE
    if head_need > head_memory:
        problems.append(f"head memory {head_need / GiB:.1f} GiB needed > {head_memory / GiB:.1f} GiB")
    shuffle = int(env["RSTACK_RUNTIME__SHUFFLE_PARTITIONS"])
    if shuffle < executors * cores:
        problems.append(f"shuffle_partitions {shuffle} < total executor cores {executors * cores}")
    if env.get(BIND_ENV) != "auto":
        problems.append(f"{BIND_ENV} must be auto on a multi-host cluster, got {env.get(BIND_ENV)!r}")
    return problems


def check_env_is_rstack_config(env: dict[str, str]) -> None:
    """Every RSTACK_<SECTION>__<FIELD> is a real config key with a valid value."""
    cfg = load_config(environ=env)
    for key, value in env.items():
        if "__" in key:
            section, _, name = key.removeprefix("RSTACK_").lower().partition("__")
            assert str(getattr(getattr(cfg, section), name)) == value, key


def check_shared(env: dict[str, str], shared_mounts: set[str]) -> None:
    for key in ("RSTACK_MODELS", "RSTACK_DATA_DIR"):
        path = env[key]
        assert "://" in path or any(Path(path).is_relative_to(m) for m in shared_mounts), (key, path)


def test_bind_address_is_a_runtime_field() -> None:
    assert "spark_bind_address" in {f.name for f in dataclasses.fields(RuntimeConfig)}


# --- Ray cluster launcher --------------------------------------------------------------------------


def load_launcher() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER.read_text())


def ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before talking to AWS: fill defaults, then validate against ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def ray_start_flags(commands: list[str]) -> dict[str, str]:
    """The --flags of the `ray start` in a list of shell commands ("--a=b" and "--a b" forms)."""
    for command in commands:
        for part in re.split(r";|&&", command):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                flags: dict[str, str] = {}
                i = 2
                while i < len(words):
                    word = words[i].removeprefix("--")
                    if "=" in word:
                        key, _, value = word.partition("=")
                    elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                        key, value = word, words[i + 1]
                        i += 1
                    else:
                        key, value = word, "true"
                    flags[key] = value
                    i += 1
                return flags
    raise AssertionError(f"no `ray start` in {commands}")


def docker_env(options: list[str]) -> dict[str, str]:
    env = {}
    for option in options:
        words = shlex.split(option)
        for flag, value in itertools.pairwise(words):
            if flag in ("--env", "-e"):
                key, _, val = value.partition("=")
                env[key] = val
    return env


def docker_volumes(options: list[str]) -> set[str]:
    out = set()
    for option in options:
        words = shlex.split(option)
        for flag, value in itertools.pairwise(words):
            if flag in ("-v", "--volume"):
                out.add(value.split(":")[1])
    return out


def test_launcher_validates_with_ray_schema() -> None:
    prepared = ray_validate(load_launcher())
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _set(("bogus_key",), 1),
        _set(("available_node_types", "rstack.worker", "bogus_key"), 1),
        _set(("available_node_types", "rstack.worker", "resources", "CPU"), "20"),
        _set(("docker", "bogus_key"), True),
        _set(("max_workers",), "eight"),
    ],
    ids=["top-level", "node-type", "resources-type", "docker", "max-workers-type"],
)
def test_launcher_schema_rejects_mutations(mutate: Callable[[dict[str, Any]], None]) -> None:
    cfg = load_launcher()
    mutate(cfg)
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(cfg)


def test_launcher_rejects_min_workers_above_max_workers() -> None:
    cfg = load_launcher()
    cfg["available_node_types"]["rstack.worker"]["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_validate(cfg)


def test_launcher_installs_java_and_rstack() -> None:
    cfg = load_launcher()
    assert cfg["docker"]["image"] == "rayproject/ray:2.60.0-py311-cpu"
    setup = "\n".join(cfg["setup_commands"])
    assert "sudo apt-get install -y openjdk-17-jre-headless" in setup
    assert "pip install -e /home/ray/rstack" in setup
    assert cfg["file_mounts"] == {"/home/ray/rstack": "."}


def test_launcher_dashboard_stays_local() -> None:
    flags = ray_start_flags(load_launcher()["head_start_ray_commands"])
    assert "head" in flags
    assert flags["dashboard-host"] == "127.0.0.1"


@pytest.mark.parametrize("node_type", ["rstack.head", "rstack.worker"])
def test_launcher_start_flags_match_node_resources(node_type: str) -> None:
    cfg = load_launcher()
    commands = cfg["head_start_ray_commands" if node_type == cfg["head_node_type"] else "worker_start_ray_commands"]
    flags = ray_start_flags(commands)
    resources = cfg["available_node_types"][node_type]["resources"]
    assert int(flags["object-store-memory"]) > 0
    # The autoscaler passes `resources` as RAY_OVERRIDE_RESOURCES, which beats the flags: keep them equal.
    assert int(flags["num-cpus"]) == resources["CPU"]
    if "memory" in resources or "memory" in flags:
        assert int(flags["memory"]) == resources["memory"]


def launcher_sizing(cfg: dict[str, Any]) -> list[str]:
    types = cfg["available_node_types"]
    head, worker = types[cfg["head_node_type"]], types["rstack.worker"]
    head_flags = ray_start_flags(cfg["head_start_ray_commands"])
    worker_flags = ray_start_flags(cfg["worker_start_ray_commands"])
    worker_cpus, worker_mem = INSTANCES[worker["node_config"]["InstanceType"]]
    _, head_mem = INSTANCES[head["node_config"]["InstanceType"]]
    return sizing_problems(
        env=docker_env(cfg["docker"]["head_run_options"]),
        workers=worker["min_workers"],
        worker_cpus=worker_cpus,
        ray_cpus=worker["resources"]["CPU"],
        ray_memory=worker["resources"].get("memory"),
        object_store=int(worker_flags["object-store-memory"]),
        node_memory=worker_mem,
        head_object_store=int(head_flags["object-store-memory"]),
        head_memory=head_mem,
    )


def test_launcher_sizing() -> None:
    assert launcher_sizing(load_launcher()) == []


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--env RSTACK_RUNTIME__EXECUTOR_MEMORY=14g", "worker memory"),
        ("--env RSTACK_RUNTIME__NUM_EXECUTORS=10", "executors per node"),
        ("--env RSTACK_RUNTIME__SPARK_BIND_ADDRESS=127.0.0.1", BIND_ENV),
        ("--env RSTACK_RUNTIME__DRIVER_MEMORY=30g", "head memory"),
    ],
)
def test_launcher_sizing_catches(option: str, expected: str) -> None:
    cfg = load_launcher()
    cfg["docker"]["head_run_options"].append(option)  # a later --env wins, as in `docker run`
    assert any(expected in p for p in launcher_sizing(cfg))


def test_launcher_sizing_catches_starved_ray_tasks() -> None:
    cfg = load_launcher()
    cfg["available_node_types"]["rstack.worker"]["resources"]["CPU"] = 16
    assert any("starve" in p for p in launcher_sizing(cfg))


def test_launcher_env_is_rstack_config() -> None:
    check_env_is_rstack_config(docker_env(load_launcher()["docker"]["head_run_options"]))


def test_launcher_models_on_shared_storage() -> None:
    cfg = load_launcher()
    mounts = docker_volumes(cfg["docker"]["run_options"])
    assert "/mnt/shared" in mounts
    assert any("/mnt/shared" in c and "mount" in c for c in cfg["initialization_commands"])
    check_shared(docker_env(cfg["docker"]["head_run_options"]), mounts)


# --- KubeRay RayCluster ----------------------------------------------------------------------------

# Keys documented for ray.io/v1 RayCluster (KubeRay 1.x API reference).
SPEC_KEYS = {
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
}
HEAD_KEYS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_KEYS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "suspend",
    "numOfHosts",
    "idleTimeoutSeconds",
}


def load_kuberay_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]


def load_raycluster() -> dict[str, Any]:
    (cluster,) = [d for d in load_kuberay_docs() if d.get("kind") == "RayCluster"]
    return cluster


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def raycluster_problems(doc: dict[str, Any]) -> list[str]:
    """Structure of a RayCluster against the documented keys, plus rstack's rules per group."""
    problems = []
    if doc.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion {doc.get('apiVersion')!r}")
    if doc.get("kind") != "RayCluster":
        problems.append(f"kind {doc.get('kind')!r}")
    spec = doc.get("spec", {})
    problems += [f"unknown spec key {k}" for k in set(spec) - SPEC_KEYS]
    head = spec.get("headGroupSpec", {})
    problems += [f"unknown headGroupSpec key {k}" for k in set(head) - HEAD_KEYS]
    workers = spec.get("workerGroupSpecs", [])
    if not workers:
        problems.append("no workerGroupSpecs")
    groups = [("head", head)]
    for worker in workers:
        name = worker.get("groupName", "?")
        problems += [f"unknown worker group {name} key {k}" for k in set(worker) - WORKER_KEYS]
        if not worker.get("minReplicas", 0) <= worker.get("replicas", 0) <= worker.get("maxReplicas", 0):
            problems.append(f"{name}: need minReplicas <= replicas <= maxReplicas")
        groups.append((name, worker))
    for name, group in groups:
        params = group.get("rayStartParams", {})
        problems += [
            f"{name}: rayStartParams.{k} must be a string (map[string]string), got {v!r}"
            for k, v in params.items()
            if not isinstance(v, str)
        ]
        containers = group.get("template", {}).get("spec", {}).get("containers", [])
        if not containers:
            problems.append(f"{name}: no containers")
            continue
        ray = containers[0]  # KubeRay runs Ray in the first container
        for c in containers:
            if not c.get("name") or not c.get("image"):
                problems.append(f"{name}: container without name or image")
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in c.get("resources", {}).get(kind, {}):
                        problems.append(f"{name}: container {c.get('name')} has no resources.{kind}.{res}")
            if container_env(c).get(BIND_ENV) != "auto":
                problems.append(f"{name}: container {c.get('name')} lacks {BIND_ENV}=auto")
        resources = ray.get("resources", {})
        try:
            cpu = k8s_quantity(resources["requests"]["cpu"])
            mem_limit = k8s_quantity(resources["limits"]["memory"])
            num_cpus = k8s_quantity(params.get("num-cpus", cpu))
            object_store = k8s_quantity(params.get("object-store-memory", 0))
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(f"{name}: cannot read resources: {exc!r}")
            continue
        # The head may advertise 0 CPUs (reserved for GCS and the Spark driver); workers must match requests.
        if num_cpus != cpu and not (name == "head" and num_cpus == 0):
            problems.append(f"{name}: num-cpus {num_cpus} != requests.cpu {cpu}")
        env = container_env(ray)
        executor_mem = spark_memory(env.get("RSTACK_RUNTIME__EXECUTOR_MEMORY", "0"))
        if name != "head" and mem_limit < object_store + executor_mem:
            problems.append(f"{name}: memory limit {mem_limit / GiB:.1f} GiB < object store + one executor")
    return problems


def kuberay_sizing(doc: dict[str, Any]) -> list[str]:
    spec = doc["spec"]
    head, worker = spec["headGroupSpec"], spec["workerGroupSpecs"][0]
    h, w = head["template"]["spec"]["containers"][0], worker["template"]["spec"]["containers"][0]
    cpus = k8s_quantity(w["resources"]["requests"]["cpu"])
    return sizing_problems(
        env=container_env(h),
        workers=worker["replicas"],
        worker_cpus=cpus,
        ray_cpus=k8s_quantity(worker["rayStartParams"]["num-cpus"]),
        ray_memory=k8s_quantity(worker["rayStartParams"]["memory"]),
        object_store=k8s_quantity(worker["rayStartParams"]["object-store-memory"]),
        node_memory=k8s_quantity(w["resources"]["limits"]["memory"]),
        head_object_store=k8s_quantity(head["rayStartParams"]["object-store-memory"]),
        head_memory=k8s_quantity(h["resources"]["limits"]["memory"]),
    )


def test_raycluster_structure() -> None:
    assert raycluster_problems(load_raycluster()) == []


def test_raycluster_values() -> None:
    spec = load_raycluster()["spec"]
    assert spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # not exposed; kubectl port-forward
    (worker,) = spec["workerGroupSpecs"]
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (2, 1, 8)
    for group in (head, worker):
        (container,) = group["template"]["spec"]["containers"]
        assert spec["rayVersion"] in container["image"]
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_raycluster_sizing() -> None:
    assert kuberay_sizing(load_raycluster()) == []


def test_raycluster_env_is_rstack_config() -> None:
    spec = load_raycluster()["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    envs = [container_env(g["template"]["spec"]["containers"][0]) for g in groups]
    assert all(env == envs[0] for env in envs), "head and worker containers disagree on RSTACK_* env"
    check_env_is_rstack_config(envs[0])


def test_raycluster_shared_volume() -> None:
    docs = load_kuberay_docs()
    claims = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    spec = load_raycluster()["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = pod["containers"][0]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/mnt/shared"]
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]
        check_shared(container_env(container), {"/mnt/shared"})


def _worker_params(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["workerGroupSpecs"][0]["rayStartParams"]


def _worker_container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _worker_params(d).update({"num-cpus": 16}), "must be a string"),
        (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"dashboard-host": 0}), "must be a string"),
        (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "apiVersion"),
        (lambda d: d["spec"].update(bogus=1), "unknown spec key bogus"),
        (lambda d: d["spec"]["headGroupSpec"].update(replicas=1), "unknown headGroupSpec key"),
        (lambda d: d["spec"]["workerGroupSpecs"][0].update(bogus=1), "unknown worker group"),
        (lambda d: _worker_params(d).update({"num-cpus": "20"}), "num-cpus"),
        (lambda d: _worker_container(d)["resources"]["limits"].update(memory="8Gi"), "memory limit"),
        (lambda d: _worker_container(d)["resources"]["requests"].pop("cpu"), "requests.cpu"),
        (lambda d: _worker_container(d).update(env=[]), "lacks"),
        (lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplicas=3), "minReplicas"),
    ],
)
def test_raycluster_checker_catches(mutate: Callable[[dict[str, Any]], Any], expected: str) -> None:
    doc = load_raycluster()
    mutate(doc)
    problems = raycluster_problems(doc)
    assert any(expected in p for p in problems), problems


def test_raycluster_sizing_catches_small_pods() -> None:
    doc = load_raycluster()
    _worker_container(doc)["resources"]["limits"]["memory"] = "48Gi"
    assert any("worker memory" in p for p in kuberay_sizing(doc))


def test_env_check_catches_unknown_key() -> None:
    with pytest.raises(ConfigError):
        check_env_is_rstack_config({"RSTACK_RUNTIME__EXECUTOR_CORSE": "4"})
