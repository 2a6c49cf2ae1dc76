"""What the tests share: the real servers they start, one way to wait, the test PKI, the CLI runner, fakes."""
