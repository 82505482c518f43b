"""train_all's resource-fit check: a model whose training worker fits no node type ends the job with one line
(`train_all: invalid configuration: ...`) naming the model and the largest node type, instead of a trial that
waits forever for a placement group. `--plan` checks against a cluster-launcher YAML or KubeRay manifest
without Ray; the shipped paper configs fit the shipped cluster configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import load_job

ROOT = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = ["cfc_sp", "mao", "prl", "all"]
CPU_PLAN = {  # a CPU-only launcher plan: a 0-CPU head and 16-CPU workers
    "cluster_name": "cpu-only", "max_workers": 4, "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "node_config": {}},
        "cpu.c6i.4xlarge": {"resources": {"CPU": 16}, "min_workers": 0, "max_workers": 4, "node_config": {}},
    },
}


def _config(tmp_path: Path, model: dict) -> str:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "faces": [str(tmp_path / "faces")],
                                    "models": [{"name": "big", "arch": "iresnet_tiny", **model}]}))
    return str(path)


def _plan(tmp_path: Path) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(CPU_PLAN))
    return str(path)


def _fails(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        load_job("train_all").main(argv)
    return str(caught.value.code)


@pytest.mark.parametrize(("model", "needs"), [({"cpus_per_worker": 64, "use_gpu": False}, "{CPU: 64}"),
                                              ({"cpus_per_worker": 4, "use_gpu": True}, "{CPU: 4, GPU: 1}")],
                         ids=["64-cpus", "gpu"])
def test_worker_that_fits_no_node_type_is_one_line(tmp_path, model, needs):
    text = _fails(["--config", _config(tmp_path, model), "--plan", _plan(tmp_path)])
    assert "\n" not in text
    assert text.startswith("train_all: invalid configuration: model 'big': a training worker needs " + needs), text
    assert "the largest is 'cpu.c6i.4xlarge' {CPU: 16}" in text, text


def test_worker_that_fits_passes_the_plan(tmp_path, capsys):
    assert load_job("train_all").main(["--config", _config(tmp_path, {"cpus_per_worker": 16, "use_gpu": False}),
                                       "--plan", _plan(tmp_path)]) == 0
    assert "fits a node type" in capsys.readouterr().out


@pytest.mark.parametrize("plan", ["cluster/aws.yaml", "cluster/kuberay/rayjob-train.yaml",
                                  "cluster/kuberay/raycluster.yaml"])
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_fit_the_cluster_configs(name, plan):
    assert load_job("train_all").main(["--config", str(ROOT / "configs" / f"{name}.yaml"),
                                       "--plan", str(ROOT / plan)]) == 0


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_ask_for_gpus_explicitly(name):
    models = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["models"]
    assert all(m.get("use_gpu") is True for m in models), name


@pytest.mark.parametrize("name", ["smoke", "demo", "accuracy"])
def test_cpu_configs_say_cpu(name):
    models = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["models"]
    assert all(m.get("use_gpu") is False for m in models), name


def test_launcher_node_type_without_resources_is_refused(tmp_path):
    plan = {**CPU_PLAN, "available_node_types": {**CPU_PLAN["available_node_types"],
                                                 "gpu.g5.xlarge": {"resources": {}, "node_config": {}}}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    text = _fails(["--config", _config(tmp_path, {"use_gpu": False}), "--plan", str(tmp_path / "plan.yaml")])
    assert "node type 'gpu.g5.xlarge' does not list its resources" in text, text


def test_kuberay_pod_resources_follow_limits_and_start_params():
    from fer_ray.train.resources import plan_node_types

    types = plan_node_types(str(ROOT / "cluster" / "kuberay" / "raycronjob-annotate.yaml"))
    assert types == {"head": {"CPU": 0.0, "GPU": 0.0}, "cpu-decode": {"CPU": 15.0, "GPU": 0.0},
                     "gpu": {"CPU": 15.0, "GPU": 1.0}}


def test_live_cluster_check_names_the_largest_node(ray_local):
    # The session's local Ray: its one node is the largest; a worker asking for more CPUs than it has fails.
    import ray

    from fer_ray.config import ConfigError
    from fer_ray.train.config import ModelSpec
    from fer_ray.train.resources import check_fit, live_node_types

    types, complete = live_node_types()
    assert complete  # no autoscaler: the live nodes are all there is
    cpus = max(r.get("CPU", 0) for r in types.values())
    assert cpus == ray.cluster_resources()["CPU"]
    check_fit([ModelSpec(name="ok", arch="iresnet_tiny", cpus_per_worker=cpus, use_gpu=False)], types, "here")
    with pytest.raises(ConfigError, match=r"model 'huge': .* fits no node type of this Ray cluster; the largest is"):
        check_fit([ModelSpec(name="huge", arch="iresnet_tiny", cpus_per_worker=cpus + 1, use_gpu=False)], types,
                  "this Ray cluster")


def test_job_on_a_live_cluster_stops_in_one_line_instead_of_waiting(ray_local, tmp_path, monkeypatch):
    # No --plan: the job checks the cluster it joined (here the session's 2-CPU local Ray) before training.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    text = _fails(["--config", _config(tmp_path, {"cpus_per_worker": 64, "use_gpu": False})])
    assert "\n" not in text
    assert text.startswith("train_all: invalid configuration: model 'big': a training worker needs {CPU: 64}, "
                           "which fits no node type of this Ray cluster; the largest is 'node "), text


def test_launcher_bootstrap_config_adds_the_node_types_it_can_scale_to(ray_local, tmp_path, monkeypatch):
    # On a launcher cluster the driver runs on the head, beside ~/ray_bootstrap_config.yaml: a GPU worker that
    # fits no live node fits a node type the autoscaler can add, so the check passes.
    from fer_ray.train.config import ModelSpec
    from fer_ray.train.resources import check_fit, live_node_types

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ray_bootstrap_config.yaml").write_text((ROOT / "cluster" / "aws.yaml").read_text())
    types, complete = live_node_types()
    assert complete and types["launcher node type gpu.g5.12xlarge"] == {"CPU": 48.0, "GPU": 4.0}
    check_fit([ModelSpec(name="gpu", arch="iresnet_tiny", cpus_per_worker=8, use_gpu=True)], types, "here")


def test_an_autoscaler_with_unseen_node_types_makes_the_check_incomplete(ray_local, tmp_path, monkeypatch):
    # On KubeRay the autoscaler's node types are in the RayCluster object, which the driver cannot read: a
    # misfit may still be placed once a worker group scales up, so train_all warns instead of failing
    # (`--plan cluster/kuberay/rayjob-train.yaml` is the check there).
    from fer_ray.train.resources import live_node_types

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert live_node_types()[1] is True  # the session's local Ray: no autoscaling, the live node is all
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert live_node_types()[1] is False
