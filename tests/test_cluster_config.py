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
