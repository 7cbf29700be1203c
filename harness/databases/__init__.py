"""Systems under test: the database and client contracts (:mod:`.interface`) and the adapters."""
