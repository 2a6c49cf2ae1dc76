"""The simulator's DICT API face: in this process (`dict_api`, with its simulator at hand to load and to
fault), or as its own process (`cidsync bridge-sim --dict-api-port`) for the tests that go through a real
process boundary: the CLI and the large file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from cidsync.dict_api.signature import SignerBundle, SigningIdentity
from cidsync_tooling.devstack.pki import DictPki, make_dict_pki
from cidsync_tooling.simulator.dict_api_face import DictApiFace, DictApiTls, start_dict_api
from cidsync_tooling.simulator.server import Simulator
from tests.helpers.servers import launch_simulator


@dataclass(frozen=True)
class DictApiSimulator:
    admin_address: str
    api_port: int
    pki: DictPki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}/api/v2/"


@pytest.fixture(scope="module")
def dict_api_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DictApiSimulator]:
    launched, simulator = launch_simulator(tmp_path_factory.mktemp("dict-api-sim"))
    try:
        yield DictApiSimulator(simulator.address, simulator.api_port, simulator.pki)
    finally:
        launched.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DictPki:
    return make_dict_pki(tmp_path_factory.mktemp("dict-pki"))


@pytest.fixture
async def dict_api(pki: DictPki) -> AsyncIterator[tuple[Simulator, DictApiFace]]:
    sim = Simulator(file_delay=0.2, rate_limits=True, seed=7)
    server, face = await start_dict_api(
        sim,
        SigningIdentity.from_files(pki.dict_signer_cert, pki.dict_signer_key),
        DictApiTls(str(pki.server_cert), str(pki.server_key), str(pki.ca)),
        client_signers=SignerBundle.from_file(pki.participant_cert),
    )
    try:
        yield sim, face
    finally:
        server.close()
        await server.wait_closed()
