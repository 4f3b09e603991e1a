"""cluster.yaml passes Ray's own launcher validation (offline)."""
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)
