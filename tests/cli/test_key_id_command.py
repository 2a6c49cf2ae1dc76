"""`cidsync key-id`: how an operator names a PIX key the way cidsync and Temporal do, without the key."""

from cidsync.entry import KeyType
from cidsync.key_id import key_id
from tests.helpers.cli_runner import cidsync

SECRET = "key-id-command-secret"


def test_prints_the_key_id_of_the_key_on_stdin() -> None:
    result = cidsync(
        "key-id", "--key-type", "EMAIL", stdin="maria.souza@exemplo.org\n", env={"CIDSYNC_KEY_SECRET": SECRET}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key_id(SECRET.encode(), KeyType.EMAIL, "maria.souza@exemplo.org")
    assert result.stderr == ""


def test_an_invalid_key_exits_2_without_echoing_it() -> None:
    result = cidsync("key-id", "--key-type", "CPF", stdin="123.456.789-01", env={"CIDSYNC_KEY_SECRET": SECRET})
    assert result.returncode == 2
    assert "a CPF key must be exactly 11 digits" in result.stderr
    assert "123.456" not in result.stderr + result.stdout


def test_without_the_deployments_secret_it_says_so() -> None:
    result = cidsync("key-id", "--key-type", "PHONE", stdin="+5511987654321", env={"CIDSYNC_KEY_SECRET": ""})
    assert result.returncode == 0
    assert "CIDSYNC_KEY_SECRET is not set" in result.stderr
