"""The simulator's DICT API face as the connector's tests use it: the connector's settings for a face,
and a pair's CIDs loaded or made into an AVAILABLE file at once."""

from __future__ import annotations

from dataclasses import replace

from cidsync.bridge.models import FileStatus
from cidsync.dict_api import client as c
from cidsync.entry import KeyType
from cidsync_tooling.devstack.pki import DictPki
from cidsync_tooling.simulator.dict_api_face import DictApiFace
from cidsync_tooling.simulator.dict_state import SimFile, SimulatedDict
from cidsync_tooling.simulator.server import Simulator

PARTICIPANT = "60701190"


def connector_config(pki: DictPki, face: DictApiFace, **changes: object) -> c.DictApiConfig:
    made = c.DictApiConfig(
        url=f"{face.base_url}/api/v2/",
        client_cert=pki.participant_cert,
        client_key=pki.participant_key,
        ca=pki.ca,
        signer_cert=pki.dict_signer_cert,
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def load(sim: Simulator, key_type: KeyType, count: int, seed: int = 1) -> list[str]:
    sim.dict.load_synthetic((PARTICIPANT, key_type), count, seed)
    return sim.dict.cids((PARTICIPANT, key_type))


def available_file(sim: Simulator, key_type: KeyType, count: int) -> SimFile:
    """A CID file of `count` CIDs made AVAILABLE at once (the tests of downloads need not wait for it)."""
    load(sim, key_type, count)
    file = sim.dict.new_file(PARTICIPANT, key_type, SimulatedDict.now())
    sim.dict.snapshot(file, SimulatedDict.now(), FileStatus.AVAILABLE)
    file.seal(FileStatus.AVAILABLE, SimulatedDict.now())
    return file
