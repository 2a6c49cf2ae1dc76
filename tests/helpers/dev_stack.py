"""A dev stack file for tests: every port free, nothing kept between runs but what a test asks for."""

from __future__ import annotations

from pathlib import Path

import yaml

from cidsync.naming import search_attribute_types


def stack_file(tmp_path: Path, **redis: object) -> Path:
    """`cidsync dev up --config` file in `tmp_path`; `redis` overrides the Redis section's settings."""
    spec = {
        "state_dir": str(tmp_path / "state"),
        "temporal": {
            "port": 0,
            "ui_port": 0,
            "db_filename": None,
            "dynamic_config": {"frontend.WorkflowTimeSkippingEnabled": True},
            "search_attributes": search_attribute_types(),
        },
        "pulsar": {"port": 0, "metrics_port": 0, "data_dir": str(tmp_path / "pulsar")},
        "redis": {"port": 0, "data_dir": str(tmp_path / "redis"), "appendonly": True} | redis,
        "simulator": {"port": 0, "api_port": 0, "file_delay_seconds": 0.1},
        "bridge": {"port": 0},
        "codec": {"enabled": True, "port": 0},
    }
    path = tmp_path / "temporal-dev.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
