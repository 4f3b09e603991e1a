"""cluster.yaml and serve/config.yaml pass Ray's own validation (offline)."""
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)


def test_the_serve_config_is_valid_offline_and_names_the_apps_deployments():
    """serve/config.yaml passes Serve's own schema; its args pass the app builder's typed model; each
    deployment it sizes exists in the app."""
    from ray.serve.schema import ServeDeploySchema

    from serve.app import Aligner, AppArgs, Canonicalizer, Embedder, Ingress, Registrar, Searcher

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    args = AppArgs.model_validate(app.args)
    assert args.autoencoders and args.index == "/data/index" and args.token_file
    assert {d.name for d in app.deployments} == {d.name for d in (Ingress, Embedder, Searcher, Aligner, Canonicalizer,
                                                                    Registrar)}
    assert next(d for d in app.deployments if d.name == "Registrar").num_replicas == 1  # the one writer


ROOT = Path(__file__).resolve().parents[1]


def _manifest(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kuberay" / name).read_text())


def _containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_the_image_and_the_cluster_configs_name_it():
    """The Dockerfile builds on the Ray release the project runs (CPU or GPU variant) and installs the
    project; cluster.yaml runs it on every node, the GPU variant on GPU workers."""
    import ray

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}" in dockerfile and "FROM rayproject/ray:${RAY_VERSION}" in dockerfile
    assert "ARG VARIANT=cpu" in dockerfile and "pip install --no-cache-dir ." in dockerfile
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert config["docker"]["image"].endswith(":cpu")
    assert config["available_node_types"]["gpu_worker"]["docker"]["worker_image"].endswith(":gpu")


def test_kuberay_manifests_have_what_kuberay_requires():
    """The RayJob runs a job script of this project on the project's image; the RayService embeds
    serve/config.yaml's applications (Serve's own schema validates them) on the same image."""
    from ray.serve.schema import ServeDeploySchema

    job = _manifest("rayjob-index.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and job["metadata"]["name"]
    script = job["spec"]["entrypoint"].split()[1]
    assert job["spec"]["entrypoint"].startswith("python jobs/") and (ROOT / script).exists()
    service = _manifest("rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService") and service["metadata"]["name"]
    for spec in (job["spec"]["rayClusterSpec"], service["spec"]["rayClusterConfig"]):
        assert spec["rayVersion"] and spec["workerGroupSpecs"]
        assert all(c["image"].startswith("ghcr.io/weightzoo/weightzoo:") and c["resources"]["limits"]
                   for c in _containers(spec))
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded["applications"] == yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"]
