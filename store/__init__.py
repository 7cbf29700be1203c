"""The reference store: a Dynamo-style replicated key-value store.

Read it in this order: :mod:`kvcheck.store.ring` (where keys live), :mod:`kvcheck.store.versions`
(what a value is), :mod:`kvcheck.store.node` (the node logic's theory of operation and its parts),
:mod:`kvcheck.store.coordinator` (how a request runs), then the two drivers of the node logic,
:mod:`kvcheck.store.server` (trio, TCP, HTTP) and :mod:`kvcheck.store.sim` (the simulator).
"""
