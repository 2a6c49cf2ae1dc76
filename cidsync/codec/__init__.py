"""Encrypted payloads (defence in depth): what Temporal stores is ciphertext, readable only with our keys.

Personal data never enters Temporal in the first place (docs/design.md §5); this is the second wall, for ids,
key ids and counts that an operator of the Temporal cluster alone should not read. `encryption` is the
codec and its keys; `server` is the remote codec endpoint the Web UI and the `temporal` CLI call.

The variables are named here, where the CLI reads them without loading the codec.
"""

KEYS_VARIABLE = "CIDSYNC_CODEC_KEYS"
KEYS_FILE_VARIABLE = "CIDSYNC_CODEC_KEYS_FILE"
