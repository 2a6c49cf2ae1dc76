"""cidsync's tooling: what helps build, demonstrate and test cidsync and is never deployed.

The DICT simulator (`simulator`), the embedded dev stack (`devstack`), the demo and the publishing
command (`demo`, `publish`), synthetic data (`synthetic`, `data`), the personal-data audit (`audit`),
the bench helpers (`bench_store`) and the protobuf code generator (`codegen`). It ships in the same
distribution as the product (`cidsync`, with `workflows`, `activities`, `workers` and `starters`) so a
developer has one install; the product never imports it (tests/test_architecture.py), and the `cidsync`
command wires its commands in lazily (`cidsync_tooling.commands`).
"""
