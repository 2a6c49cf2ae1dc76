"""The CID store: the library every role shares (the starter, the worker's activities, the CLI, benches).

Redis holds, per (participant, key type), every key under one hash tag, so the pair lives in one Redis
Cluster slot and one Lua script may touch all of it (docs/design.md §5). `layout` names the keys,
`models` holds the results and views (the change itself is the domain's, `cidsync.change`; PIX keys are
hashed by `cidsync.key_id`), `scripts` the Lua and its loader, and `cid_store.CIDStore` is the API: one
connection and key secret, with one part per concern — `ingestion` (apply changes, idempotency marks),
`pair_view` (a pair's CIDs, VSync and verification records), `reconciliation` (watches, DICT's file, the
diff, repair) and `outbox` (core's notifications). Nothing here imports Temporal: `activities/` wraps this
library, one side effect per activity.

Import the submodules directly; this package imports none of them, so a workflow that needs only the
models never pulls in the Redis client.
"""
