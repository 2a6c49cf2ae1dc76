"""The CID store: the library every role shares (the starter, the worker's activities, the CLI, benches).

Redis holds, per (participant, key type), every key under one hash tag, so the pair lives in one Redis
Cluster slot and one Lua script may touch all of it (docs/design.md §5). `layout` names the keys, `key_id`
hashes PIX keys, `models` holds the changes and results, `scripts` the Lua, and `cid_store.CIDStore` is
the API. Nothing here imports Temporal: `activities/` wraps this library, one side effect per activity.

Import the submodules directly; this package imports none of them, so a workflow that needs only the
models never pulls in the Redis client.
"""
