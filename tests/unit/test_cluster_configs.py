"""Cluster configs are valid for the tools that read them and only name files that exist.

- cluster/aws.yaml against ray's own ray-schema.json, then through the launcher's own
  prepare/validate step (what `ray up` runs before it calls AWS).
- cluster/kuberay/*.yaml against the KubeRay CRDs (v1 openAPIV3Schema), strictly: unknown
  fields fail, as `kubectl apply --validate=strict` would reject them.
- every jobs/*.py and configs/*.yaml a command names exists in the repository.
- the flow: every job command line in cluster/README.md and the manifests is accepted by the job's own
  argparse, reads what an earlier job wrote (or a documented raw input), and all of them use one data bucket;
  the model index train_all writes is the one annotate reads.
- the image: cluster/Dockerfile pins what pyproject.toml pins, and every config runs the tag the README builds.
- security invariants: no literal AWS keys, token auth on (from a Secret on KubeRay), dashboard on loopback or
  behind a NetworkPolicy that selects the head pods.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
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


# networking.k8s.io/v1 NetworkPolicy, the fields we use and their types (kubectl's strict validation, by hand:
# no Kubernetes OpenAPI document is available offline).
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": _LABELS, "matchExpressions": {"type": "array"}}}
_PEER = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
    "podSelector": _SELECTOR, "namespaceSelector": _SELECTOR, "ipBlock": {"type": "object"}}}
_PORT = {"type": "object", "additionalProperties": False, "properties": {
    "protocol": {"enum": ["TCP", "UDP", "SCTP"]}, "port": {"type": ["integer", "string"]},
    "endPort": {"type": "integer"}}}
_RULE = {"type": "object", "additionalProperties": False, "properties": {
    "from": {"type": "array", "items": _PEER}, "to": {"type": "array", "items": _PEER},
    "ports": {"type": "array", "items": _PORT}}}
NETWORK_POLICY_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"}, "kind": {"const": "NetworkPolicy"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["podSelector"], "properties": {
            "podSelector": _SELECTOR, "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
            "ingress": {"type": "array", "items": _RULE}, "egress": {"type": "array", "items": _RULE}}}}}
# What KubeRay puts on the pods it creates (the NetworkPolicy must select the head by these).
HEAD_POD_LABELS = {"ray.io/node-type": "head", "ray.io/is-ray-node": "yes"}
WORKER_POD_LABELS = {"ray.io/node-type": "worker", "ray.io/is-ray-node": "yes"}


def test_kuberay_manifests_exist():
    names = {path.name for path in KUBERAY_FILES}
    assert {"raycluster.yaml", "rayjob-train.yaml", "raycronjob-annotate.yaml", "networkpolicy.yaml"} <= names
    kinds = {obj["kind"] for _, obj in ray_objects()}
    assert kinds == set(CRD_FILES)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_objects_match_crd(crd_schemas, path):
    for doc in load_all(path):
        if doc["kind"] == "NetworkPolicy":
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in jsonschema.Draft7Validator(NETWORK_POLICY_SCHEMA).iter_errors(doc)]
            assert not errors, f"{path.name} NetworkPolicy:\n" + "\n".join(errors)
            continue
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


def test_launcher_installs_nothing_at_start(launcher_config):
    # fer-ray and torch are in the image: a node that pip-installs at every start is slow to scale up.
    for key, value in launcher_config.items():
        if key.endswith("_commands"):
            assert not [c for c in value if re.search(r"\bpip3? install\b", c)], key
    for remote, local in (launcher_config.get("file_mounts") or {}).items():
        assert (ROOT / local).resolve().exists(), f"file_mounts {remote}: {local} missing"


def test_launcher_gpu_node_types_scale_from_zero(launcher_config):
    types = launcher_config["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert {t["node_config"]["InstanceType"].split(".")[0] for t in gpu.values()} >= {"g5", "p4d", "p5"}
    for name, node_type in gpu.items():
        assert node_type["min_workers"] == 0 < node_type["max_workers"], name


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


# --------------------------------------------------------------------------- the flow of the documented jobs

# The flags naming what a job reads (URIs); --output is what it writes. train_all's --models is model names.
INPUT_FLAGS = {"preprocess": ["--input"], "train_all": ["--faces"], "annotate": ["--input", "--models"],
               "evaluate": ["--predictions", "--labels", "--logits"], "export": ["--predictions"],
               "render": ["--video", "--predictions", "--faces"]}
S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]*)(/[^\s'\"`]*)?")


def _readme() -> str:
    return (CLUSTER / "README.md").read_text(encoding="utf-8")


def _jobs():
    from tests.cluster import readme_jobs

    return readme_jobs()


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _norm(uri: str) -> str:
    return uri.rstrip("/")


def _manifest_jobs() -> list[tuple[str, str, list[str]]]:
    """(file, job, args) of every RayJob / RayCronJob entrypoint."""
    out = []
    for name, obj in ray_objects():
        spec = obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"]
        if "entrypoint" in spec:
            tokens = shlex.split(spec["entrypoint"])
            assert tokens[0] == "python" and tokens[1].startswith("jobs/"), name
            out.append((name, Path(tokens[1]).stem, tokens[2:]))
    return out


def raw_inputs() -> set[str]:
    """The raw-input prefixes cluster/README.md documents ("Raw inputs (you upload them): ...")."""
    match = re.search(r"Raw inputs \(you upload them\):(.*?)\.\s", _readme(), re.S)
    assert match, "cluster/README.md must list the raw inputs"
    return {_norm(m.group(0)) for m in S3_URI.finditer(match.group(1))}


def test_readme_job_lines_parse_with_the_jobs_own_argparse():
    # The job's own parse_args: an unknown flag, a missing value or a bad type exits 2 here, not on the cluster.
    from tests.helpers import load_job

    lines = [("README.md", j.job, j.args) for j in _jobs()] + _manifest_jobs()
    assert {job for _, job, _ in lines} >= {"preprocess", "train_all", "annotate", "evaluate", "export"}
    for source, job, args in lines:
        try:
            load_job(job).parse_args(list(args))
        except SystemExit as exc:
            pytest.fail(f"{source}: python jobs/{job}.py {shlex.join(args)} is rejected by its argparse ({exc})")


def test_each_job_reads_what_an_earlier_job_wrote():
    raw = raw_inputs()
    assert raw, "no raw inputs documented"
    flow = [j for j in _jobs() if j.section == "2" and j.submitted]
    assert [j.job for j in flow] == ["preprocess", "train_all", "annotate", "evaluate", "export"]
    written: set[str] = set()
    for line in flow:
        for flag in INPUT_FLAGS[line.job]:
            uri = _value(line.args, flag)
            if uri is not None:
                assert _norm(uri) in raw | written, f"{line.job} {flag} {uri}: neither a raw input nor an earlier output"
        written.add(_norm(_value(line.args, "--output")))
    # the other documented lines and the manifests read only raw inputs and section 2's outputs
    others = [(f"README.md section {j.section}", j.job, j.args) for j in _jobs() if j.section != "2" and j.submitted]
    for source, job, args in others + _manifest_jobs():
        for flag in INPUT_FLAGS[job]:
            uri = _value(args, flag)
            if uri is not None:
                assert _norm(uri) in raw | written, f"{source}: {job} {flag} {uri} is written by no job"
        assert _norm(_value(args, "--output")) in written, f"{source}: {job} writes outside the documented flow"


def test_annotate_reads_the_model_index_train_writes():
    flow = {j.job: j.args for j in _jobs() if j.section == "2" and j.submitted}
    train_out = _norm(_value(flow["train_all"], "--output"))
    assert _norm(_value(flow["train_all"], "--faces")) == _norm(_value(flow["preprocess"], "--output"))
    manifests = {job: args for _, job, args in _manifest_jobs()}
    # models.json goes to the train output (fer_ray.train.launch.MODELS_INDEX) and annotate --models reads it
    assert _norm(_value(manifests["train_all"], "--output")) == train_out
    for source, args in [("README", flow["annotate"]), ("RayCronJob", manifests["annotate"])] + \
            [(f"README section {j.section}", j.args) for j in _jobs() if j.job == "annotate"]:
        assert _norm(_value(args, "--models")) == train_out, source
    assert _norm(_value(manifests["train_all"], "--faces")) == _norm(_value(flow["preprocess"], "--output"))
    for flag in ("--config",):
        assert _value(manifests["train_all"], flag) == _value(flow["train_all"], flag)


def _buckets(text: str) -> set[str]:
    return {m.group(1) for m in S3_URI.finditer(text)}


def test_one_data_bucket_everywhere():
    job_text = " ".join(shlex.join(j.args) for j in _jobs()) + " " + \
        " ".join(shlex.join(args) for _, _, args in _manifest_jobs())
    data = _buckets(job_text)
    assert data == {"fer-ray-data"}, data
    assert _buckets(" ".join(raw_inputs())) == data
    # the paper configs' faces, output, weights and backbones live in the same bucket
    for name in ("cfc_sp", "mao", "prl", "all"):
        assert _buckets((ROOT / "configs" / f"{name}.yaml").read_text()) == data, name
    # code zips for RayJobs: one artifacts bucket, the one the README uploads to
    working_dirs = {yaml.safe_load((obj["spec"].get("jobTemplate") or obj["spec"])["runtimeEnvYAML"])["working_dir"]
                    for _, obj in ray_objects() if obj["kind"] != "RayCluster"}
    assert _buckets(" ".join(working_dirs)) == {"fer-ray-artifacts"}
    assert "aws s3 cp fer-ray-$(git rev-parse --short HEAD).zip s3://fer-ray-artifacts/code/" in _readme()
    # the IAM policy the README gives covers the data bucket
    assert "arn:aws:s3:::fer-ray-data/*" in _readme()
    # the main README's scheduling example runs against the same bucket
    cron = re.findall(r"```cron\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert cron and _buckets(" ".join(cron)) == data


def test_configs_named_by_the_flow_exist():
    configs = [_value(j.args, "--config") for j in _jobs()] + [_value(a, "--config") for _, _, a in _manifest_jobs()]
    for config in filter(None, configs):
        assert (ROOT / config).is_file(), config


# --------------------------------------------------------------------------- the image


DOCKERFILE = CLUSTER / "Dockerfile"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([\w.]+)$")


def _pins(requirements) -> dict[str, str]:
    out = {}
    for requirement in requirements:
        match = PIN.match(requirement.strip())
        if match:
            out[match.group(1).lower()] = match.group(3)
    return out


def image_names() -> set[str]:
    """Every container image a cluster config runs."""
    names = set()
    launcher = yaml.safe_load(AWS_YAML.read_text(encoding="utf-8"))
    names |= {v for k, v in launcher["docker"].items() if k.endswith("image")}
    for node_type in launcher["available_node_types"].values():
        names |= {v for k, v in (node_type.get("docker") or {}).items() if k.endswith("image")}

    def walk(obj):
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "image" and isinstance(value, str):
                    names.add(value)
                walk(value)
        elif isinstance(obj, list):
            for item in obj:
                walk(item)

    for path in KUBERAY_FILES:
        for doc in load_all(path):
            walk(doc)
    return names


def test_dockerfile_bakes_in_the_pinned_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["rayproject/ray:2.60.0-py311-gpu"], froms
    installs = [shlex.split(m) for m in re.findall(r"^RUN\s+(.*pip install.*)$", text, re.M)]
    assert installs, "the Dockerfile installs nothing"
    baked = _pins(token for tokens in installs for token in tokens)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pinned = _pins(pyproject["project"]["dependencies"])
    assert {"torch", "torchvision", "ray"} <= set(pinned)
    assert baked == pinned, f"Dockerfile pins {baked}, pyproject.toml pins {pinned}"
    assert any("." in tokens for tokens in installs), "fer-ray itself is not installed"  # `pip install .`
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s", text, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository (build context: the root)"


def test_every_config_runs_the_image_the_readme_builds():
    built = re.findall(r"docker build -f cluster/Dockerfile -t (\S+) \.", _readme())
    assert len(set(built)) == 1, built
    pushed = re.findall(r"docker push (\S+)", _readme())
    assert set(pushed) == set(built)
    assert image_names() == set(built), image_names()
    assert built[0] in DOCKERFILE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- exposure and auth on KubeRay


def _containers(spec: dict) -> list[dict]:
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def _job_specs() -> list[tuple[str, dict]]:
    return [(name, obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"])
            for name, obj in ray_objects() if obj["kind"] != "RayCluster"]


def test_every_container_has_token_auth_from_a_secret():
    for name, spec in cluster_specs():
        secret = spec["authOptions"].get("secretName")
        assert secret, f"{name}: authOptions.secretName (the token's Secret) missing"
        containers = _containers(spec)
        containers += [c for job_name, job in _job_specs() if job_name == name
                       for c in job["submitterPodTemplate"]["spec"]["containers"]]
        for container in containers:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}: {container['name']}"
            ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            assert ref.get("name") == secret and ref.get("key"), f"{name}: {container['name']} token not from {secret}"
    assert "create secret generic fer-ray-ray-token" in _readme()


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) \
        and not selector.get("matchExpressions")


def network_policies() -> list[dict]:
    return [doc for path in KUBERAY_FILES for doc in load_all(path) if doc["kind"] == "NetworkPolicy"]


def test_dashboard_on_loopback_or_behind_a_network_policy():
    policies = network_policies()
    head = [p for p in policies if _selects(p["spec"]["podSelector"], HEAD_POD_LABELS)]
    assert head, "no NetworkPolicy selects the Ray head pods"
    assert all(p["metadata"]["namespace"] == "fer-ray" for p in policies)
    for policy in head:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"]["ingress"]:
            peers = rule.get("from")
            assert peers, f"{policy['metadata']['name']}: a rule open to every source"
            assert not any("ipBlock" in peer for peer in peers)
            for peer in peers:  # a namespaceSelector must name namespaces (an empty one is every namespace)
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"].get("matchLabels"), policy["metadata"]["name"]
            ports = {p["port"] for p in rule.get("ports", [])}
            if any("namespaceSelector" in peer for peer in peers) or any(not peer["podSelector"] for peer in peers):
                # pods outside the Ray cluster (submitters, the operator) reach the job server, nothing else
                assert ports == {8265}, policy["metadata"]["name"]
            else:
                assert all(_selects(peer["podSelector"], HEAD_POD_LABELS) or
                           _selects(peer["podSelector"], WORKER_POD_LABELS) for peer in peers)
    assert any(_selects(p["spec"]["podSelector"], WORKER_POD_LABELS) for p in policies), "worker pods unguarded"
    for name, spec in cluster_specs():
        host = spec["headGroupSpec"]["rayStartParams"].get("dashboard-host")
        if name == "raycluster.yaml":  # reached by port-forward only
            assert host == "127.0.0.1", name
        else:  # the operator and the submitter pod call the job server: the NetworkPolicy guards it
            assert host in (None, "127.0.0.1"), name


def test_gpu_worker_groups_scale_up_from_zero():
    for name, spec in cluster_specs():
        gpu = [g for g in spec["workerGroupSpecs"]
               if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
        assert gpu, name
        for group in gpu:
            assert group["minReplicas"] == 0 < group["maxReplicas"], f"{name}: {group['groupName']}"
