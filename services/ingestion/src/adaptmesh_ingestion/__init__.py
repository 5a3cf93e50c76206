"""adaptmesh ingestion: change events and feedback in, immutable dataset versions out.

`domain` holds the state transitions (pure), `snapshot` the dataset document and its digest
(pure), `ledger` and `persistence` the chain of versions per domain, `handlers` and `app` the
wiring onto the mesh.
"""
