"""Does every model's Ray Train worker fit on some node type? Checked before train_all starts training.

A TorchTrainer whose worker bundle (`cpus_per_worker` CPUs, plus one GPU with `use_gpu`) fits no node
waits forever for a placement group the autoscaler can never satisfy. `check_fit` turns that into one
ConfigError naming the model and the largest node type, before any trial starts.

Node types come from:
  - a live cluster (`live_node_types`): every alive node's total resources, plus the node types an
    autoscaler can add, where visible (they can scale up from 0 nodes); when an autoscaler runs whose node
    types are not visible, a misfit is a warning, not an error;
  - a plan (`plan_node_types`): a Ray cluster-launcher YAML (`available_node_types[*].resources`, the head
    included) or a KubeRay RayCluster / RayJob / RayCronJob manifest (head and worker groups: rayStartParams
    num-cpus / num-gpus, else the container's limits).
"""

from __future__ import annotations

import os

from fer_ray.config import ConfigError

NodeTypes = dict[str, dict[str, float]]  # node type name -> resources ({"CPU": 8, "GPU": 1, ...})


def worker_bundle(cpus_per_worker: float, use_gpu: bool | None, cluster_has_gpu: bool) -> dict[str, float]:
    """The resources of one Ray Train worker: what launch.py puts in its ScalingConfig."""
    if use_gpu is None:  # the config leaves it to the cluster
        use_gpu = cluster_has_gpu
    return {"CPU": float(cpus_per_worker), **({"GPU": 1.0} if use_gpu else {})}


def _fits(bundle: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(key, 0.0) >= value for key, value in bundle.items())


def _describe(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or k.startswith("accelerator_type")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def largest(node_types: NodeTypes) -> tuple[str, dict[str, float]]:
    """The node type with the most GPUs, then the most CPUs."""
    return max(node_types.items(), key=lambda item: (item[1].get("GPU", 0.0), item[1].get("CPU", 0.0)))


def check_fit(models, node_types: NodeTypes, where: str) -> None:
    """Raise ConfigError when a model's worker bundle fits no node type. `models`: ModelSpecs."""
    if not node_types:
        raise ConfigError(f"{where}: no node types to place training workers on")
    has_gpu = any(r.get("GPU", 0.0) > 0 for r in node_types.values())
    for model in models:
        bundle = worker_bundle(model.cpus_per_worker, model.use_gpu, has_gpu)
        if not any(_fits(bundle, resources) for resources in node_types.values()):
            name, resources = largest(node_types)
            raise ConfigError(f"model {model.name!r}: a training worker needs {_describe(bundle)}, which fits no "
                              f"node type of {where}; the largest is {name!r} {_describe(resources)} "
                              "(lower cpus_per_worker, set use_gpu, or add a bigger node type)")


# ------------------------------------------------------------------------------------------ live cluster


def live_node_types() -> tuple[NodeTypes, bool]:
    """(node types, complete) of the connected Ray cluster: every alive node, plus the node types an
    autoscaler can add when they are visible from here (the cluster config it reports to the GCS, or the
    launcher's ~/ray_bootstrap_config.yaml on the head, where `ray job submit` runs the driver).
    `complete` is False when an autoscaler runs whose node types are not visible: a worker that fits no
    live node may still get one, so the caller warns instead of failing."""
    import ray

    out: NodeTypes = {}
    for node in ray.nodes():
        if node.get("Alive"):
            out[f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"] = dict(node["Resources"])
    groups = {f"autoscaler group {g.name}": {k: float(v) for k, v in g.resources.items()}
              for g in _autoscaler_groups()}
    launcher = _bootstrap_types()
    out.update(groups)
    out.update(launcher)
    return out, bool(groups or launcher) or not _autoscaler_running()


def _bootstrap_types() -> NodeTypes:
    path = os.path.expanduser("~/ray_bootstrap_config.yaml")
    if not os.path.isfile(path):
        return {}
    try:
        return {f"launcher node type {k}": v for k, v in plan_node_types(path).items()}
    except ConfigError:  # node types without explicit resources: the launcher fills them in, we cannot
        return {}


def _autoscaler_running() -> bool:
    """Whether an autoscaler may add nodes we cannot see. On Kubernetes (KubeRay) its node types live in the
    RayCluster object, out of the driver's reach; elsewhere the monitor's status names the node types it
    manages (a cluster without autoscaling reports each node as its own type, `node_<id>`)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        import json

        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        mapping = (json.loads(status).get("autoscaler_report") or {}).get("node_type_mapping") or {} \
            if status else {}
    except Exception:  # noqa: BLE001 - private API: unknown means "assume none", the live nodes decide
        return False
    return any(node_type != f"node_{node_id}" for node_id, node_type in mapping.items())


def _autoscaler_groups() -> list:
    """Node groups that can have nodes (max_count != 0), from the cluster config the autoscaler reports."""
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - private API: no autoscaler info is "live nodes only", not an error
        return []
    if config is None:
        return []
    return [g for g in config.node_group_configs if g.max_count != 0]


# ------------------------------------------------------------------------------------------ plan files


def plan_node_types(path: str) -> NodeTypes:
    """Node types of a cluster-launcher YAML or a KubeRay manifest (RayCluster, RayJob, RayCronJob)."""
    import yaml

    from fer_ray import storage

    try:
        docs = [d for d in yaml.safe_load_all(storage.read_bytes(path).decode("utf-8")) if isinstance(d, dict)]
    except FileNotFoundError:
        raise ConfigError(f"--plan {path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--plan {path}: not valid YAML ({type(exc).__name__})") from None
    out: NodeTypes = {}
    for doc in docs:
        if "available_node_types" in doc:
            out.update(_launcher_types(path, doc))
        elif doc.get("apiVersion", "").startswith("ray.io/"):
            out.update(_kuberay_types(doc))
    if not out:
        raise ConfigError(f"--plan {path}: no node types found (expected a cluster-launcher YAML with "
                          "available_node_types, or a KubeRay RayCluster/RayJob/RayCronJob)")
    return out


def _launcher_types(path: str, config: dict) -> NodeTypes:
    out = {}
    for name, node_type in (config.get("available_node_types") or {}).items():
        resources = dict(node_type.get("resources") or {})
        if "CPU" not in resources:  # the launcher would fill it from the instance type; we cannot
            raise ConfigError(f"--plan {path}: node type {name!r} does not list its resources; set "
                              "resources: {CPU: ..., GPU: ...} so the plan can be checked")
        out[name] = {k: float(v) for k, v in resources.items()}
    return out


def _kuberay_types(doc: dict) -> NodeTypes:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayCronJob":
        spec = spec.get("jobTemplate") or {}
    if doc.get("kind") in ("RayJob", "RayCronJob"):
        spec = spec.get("rayClusterSpec") or {}
    groups = [("head", spec.get("headGroupSpec") or {})]
    groups += [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs") or []
               if g.get("maxReplicas", g.get("replicas", 1)) != 0]
    return {name: _pod_resources(group) for name, group in groups}


def _pod_resources(group: dict) -> dict[str, float]:
    """What `ray start` on this group's pods advertises: rayStartParams first, else the container limits."""
    params = group.get("rayStartParams") or {}
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    cpu = params.get("num-cpus", limits.get("cpu", 0))
    gpu = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
    return {"CPU": _quantity(cpu), "GPU": _quantity(gpu)}


def _quantity(value) -> float:
    """A Kubernetes CPU quantity ("15", "500m", 4) as a number."""
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)
