"""DICT API v2: BCB's HTTPS API behind our Bridge contract (`cidsync bridge serve`).

`signature` signs requests and checks responses (XMLDSig as BCB's reference signer builds it), `messages`
writes and reads the XML of the reconciliation and policy operations, `problems` maps DICT's problem
types to the contract's errors, and `client` is the mutual-TLS HTTP client that puts them together.
"""
