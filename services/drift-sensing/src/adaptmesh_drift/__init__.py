"""adaptmesh drift-sensing: decides when a domain must be retrained.

Explicit changes (new dataset versions) become retrain requests after a short settle window;
registered statistical detectors watch the inference stream for drift; a per-domain cool-down
stops request storms. `adaptmesh_drift.app.build_app(settings)` wires the service. The package
itself imports nothing, so the pure modules (`detectors`, `monitor`, `decisions`, `schedule`,
`outbox`, `relay`) load without the broker.
"""
