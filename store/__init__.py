"""The reference store: a Dynamo-style replicated key-value store.

Read it in this order: :mod:`store.ring` (where keys live), :mod:`store.versions` (what a value
is), :mod:`store.node` (how a request runs), then the two drivers of the node logic,
:mod:`store.server` (trio, TCP, HTTP) and :mod:`store.sim` (the simulator).
"""
