"""Cluster configs are valid for the tools that read them and only name files that exist.

- cluster/aws.yaml against ray's own ray-schema.json, then through the launcher's own
  prepare/validate step (what `ray up` runs before it calls AWS).
- cluster/kuberay/*.yaml against the KubeRay CRDs (v1 openAPIV3Schema), strictly: unknown
  fields fail, as `kubectl apply --validate=strict` would reject them.
- every jobs/*.py and configs/*.yaml a command names exists in the repository.
- security invariants: no literal AWS keys, token auth on, dashboard not on a public address.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SCHEMAS = Path(__file__).resolve().parents[2].parent / "shared" / "schemas"
AWS_YAML = CLUSTER / "aws.yaml"
KUBERAY_FILES = sorted((CLUSTER / "kuberay").glob("*.yaml"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCronJob": "ray.io_raycronjobs.yaml"}
REPO_PATH = re.compile(r"(?<![\w/.-])((?:jobs/[\w./-]+\.py)|(?:configs/[\w./-]+\.ya?ml))")
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key|AWS_SECRET_ACCESS_KEY|aws_access_key_id",
                     re.IGNORECASE)


def load_all(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def ray_objects() -> list[tuple[str, dict]]:
    """(file name, object) for every ray.io object in cluster/kuberay."""
    return [(path.name, doc) for path in KUBERAY_FILES for doc in load_all(path)
            if doc.get("apiVersion", "").startswith("ray.io/")]


def strict(schema):
    """Copy of an OpenAPI schema where objects with listed properties reject unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    folder = SCHEMAS / "kuberay"
    if not folder.is_dir():
        pytest.skip(f"KubeRay CRD schemas not available: {folder} is missing (../shared/schemas)")
    schemas = {}
    for kind, name in CRD_FILES.items():
        # libyaml when available: the three CRDs are 56,000 lines (30 s with the pure-Python loader).
        crd = yaml.load((folder / name).read_text(encoding="utf-8"), Loader=FAST_LOADER)
        assert crd["spec"]["names"]["kind"] == kind
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schemas[kind] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def commands(obj) -> list[str]:
    """Every string in a config that is a shell command or a job entrypoint."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("entrypoint", "args", "command") or key.endswith("_commands"):
                found += [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
            else:
                found += commands(value)
    elif isinstance(obj, list):
        for item in obj:
            found += commands(item)
    return found


# --------------------------------------------------------------------------- KubeRay


def test_kuberay_manifests_exist():
    names = {path.name for path in KUBERAY_FILES}
    assert {"raycluster.yaml", "rayjob-train.yaml", "raycronjob-annotate.yaml"} <= names
    kinds = {obj["kind"] for _, obj in ray_objects()}
    assert kinds == set(CRD_FILES)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_objects_match_crd(crd_schemas, path):
    for doc in load_all(path):
        if not doc["apiVersion"].startswith("ray.io/"):
            assert doc["kind"] in {"ServiceAccount"}, f"{path.name}: unexpected {doc['kind']}"
            continue
        assert doc["apiVersion"] == "ray.io/v1"
        validator = jsonschema.Draft7Validator(crd_schemas[doc["kind"]])
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{path.name} {doc['kind']}:\n" + "\n".join(errors)


def test_strict_schema_rejects_a_typo(crd_schemas):
    # Guards the strictness itself: a misspelt field must fail, not be silently pruned.
    _, cluster = next(item for item in ray_objects() if item[1]["kind"] == "RayCluster")
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert not jsonschema.Draft7Validator(crd_schemas["RayCluster"]).is_valid(broken)


def cluster_specs() -> list[tuple[str, dict]]:
    """(file name, RayCluster spec) for the RayCluster and every RayJob/RayCronJob cluster."""
    specs = []
    for name, obj in ray_objects():
        spec = obj["spec"]
        if obj["kind"] == "RayCronJob":
            spec = spec["jobTemplate"]
        specs.append((name, spec if obj["kind"] == "RayCluster" else spec["rayClusterSpec"]))
    return specs


def test_clusters_use_token_auth_and_bounded_gpu_groups():
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == "2.60.0", name
        assert spec.get("authOptions", {}).get("mode") == "token", name
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", name
        gpu_groups = [g for g in spec["workerGroupSpecs"] if g["groupName"].startswith("gpu")]
        assert gpu_groups, f"{name}: no GPU worker group"
        for group in spec["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group["maxReplicas"], f"{name}: {group['groupName']}"
        for group in gpu_groups:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, f"{name}: {group['groupName']}"


def test_jobs_have_a_working_dir_and_run_a_job_script():
    jobs = [(name, obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"])
            for name, obj in ray_objects() if obj["kind"] != "RayCluster"]
    assert len(jobs) == 2
    for name, spec in jobs:
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert runtime_env["working_dir"], name
        assert re.match(r"python jobs/\w+\.py ", spec["entrypoint"]), name
        assert spec["shutdownAfterJobFinishes"] is True, name


def test_cron_schedule_has_five_fields():
    cron = next(obj for _, obj in ray_objects() if obj["kind"] == "RayCronJob")
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields)
    assert "--since last" in cron["spec"]["jobTemplate"]["entrypoint"]


def test_pods_run_as_the_irsa_service_account():
    sa = next(doc for path in KUBERAY_FILES for doc in load_all(path) if doc["kind"] == "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    for name, spec in cluster_specs():
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for template in templates:
            assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"], name


# --------------------------------------------------------------------------- Ray cluster launcher


@pytest.fixture(scope="module")
def launcher_config() -> dict:
    return yaml.safe_load(AWS_YAML.read_text(encoding="utf-8"))


def test_launcher_yaml_matches_ray_schema(launcher_config):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher_config, schema)


def test_launcher_yaml_passes_ray_up_validation(launcher_config):
    # The same defaults-merge and checks `ray up` runs before it touches AWS.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher_config))
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_launcher_node_types(launcher_config):
    types = launcher_config["available_node_types"]
    instance = {name: t["node_config"]["InstanceType"] for name, t in types.items()}
    assert {"g5.xlarge", "g5.12xlarge", "p4d.24xlarge", "p5.48xlarge"} <= set(instance.values())
    assert any(v.startswith(("c6i", "c7i", "m6i")) for k, v in instance.items() if k.startswith("cpu"))
    for name, node_type in types.items():
        if name == launcher_config["head_node_type"]:
            continue
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= launcher_config["max_workers"], name
        assert "IamInstanceProfile" in node_type["node_config"], name


def test_launcher_is_private_by_default(launcher_config):
    head_start = " ".join(launcher_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(launcher_config[key]), key
    assert launcher_config["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]


def test_launcher_file_mounts_exist(launcher_config):
    for remote, local in launcher_config["file_mounts"].items():
        assert (ROOT / local).resolve().exists(), f"file_mounts {remote}: {local} missing"
    assert (ROOT / "pyproject.toml").exists()  # `pip install -e ~/fer-ray` needs it


# --------------------------------------------------------------------------- all cluster files


def all_commands() -> list[tuple[str, str]]:
    found = [(AWS_YAML.name, c) for c in commands(yaml.safe_load(AWS_YAML.read_text(encoding="utf-8")))]
    for path in KUBERAY_FILES:
        found += [(path.name, c) for doc in load_all(path) for c in commands(doc)]
    return found


def test_commands_name_jobs():
    referenced = {m for _, command in all_commands() for m in REPO_PATH.findall(command)}
    assert "jobs/train_all.py" in referenced and "jobs/annotate.py" in referenced
    assert "configs/cfc_sp.yaml" in referenced


@pytest.mark.parametrize("source", ["manifests", "README.md"])
def test_referenced_repo_files_exist(source):
    if source == "manifests":
        texts = all_commands()
    else:
        texts = [("README.md", (CLUSTER / "README.md").read_text(encoding="utf-8"))]
    missing = sorted({f"{name}: {path}" for name, text in texts for path in REPO_PATH.findall(text)
                      if not (ROOT / path).is_file()})
    assert not missing, "referenced but not in the repository:\n" + "\n".join(missing)


JOB_CALL = re.compile(r"python (jobs/\w+\.py)([^\n'`]*)")


def job_calls() -> list[tuple[str, str, str]]:
    """(source, job path, flag) for every --flag passed to a jobs/*.py in manifests and README."""
    texts = all_commands() + [("README.md", (CLUSTER / "README.md").read_text(encoding="utf-8"))]
    calls = []
    for source, text in texts:
        for job, rest in JOB_CALL.findall(text.replace("\\\n", " ")):
            calls += [(source, job, flag) for flag in re.findall(r"(?<!\S)(--[\w-]+)", rest)]
    return calls


def test_job_flags_exist():
    # A flag the job does not define makes argparse exit 2 on the cluster, after the nodes came up.
    unknown = []
    for source, job, flag in job_calls():
        path = ROOT / job
        if path.is_file() and f'"{flag}"' not in path.read_text(encoding="utf-8"):
            unknown.append(f"{source}: {job} {flag}")
    assert not unknown, "flags the job does not define:\n" + "\n".join(sorted(set(unknown)))
    assert len({job for _, job, _ in job_calls()}) >= 5


def test_no_credentials_in_cluster_files():
    for path in sorted(CLUSTER.rglob("*")):
        if path.is_file():
            hits = AWS_KEY.findall(path.read_text(encoding="utf-8"))
            assert not hits, f"{path.relative_to(ROOT)} contains {hits}"
