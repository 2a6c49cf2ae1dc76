"""The committed generated code matches proto/: regenerate it and compare (run `make proto` to fix)."""

from pathlib import Path

from cidsync_tooling.codegen import PACKAGES, ROOT, generate


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    assert generated, "protoc generated nothing"
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"stale generated files (run `make proto`): {stale}"
    committed = {p.relative_to(ROOT) for package in PACKAGES for p in (ROOT / package).rglob("*_pb2*.py*")}
    assert committed == set(generated), "generated files without a .proto, or missing ones"
