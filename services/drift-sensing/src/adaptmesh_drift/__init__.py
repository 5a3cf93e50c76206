"""adaptmesh drift-sensing: decides when a domain must be retrained.

Explicit changes (new dataset versions) become retrain requests at once, after a short settle
window; registered statistical detectors watch the inference stream for drift; a per-domain
cool-down stops request storms. `build_app(settings)` wires the service.
"""

from adaptmesh_drift.app import DriftSensingApp, build_app
from adaptmesh_drift.detectors import DETECTORS, register_detector
from adaptmesh_drift.settings import DriftSettings

__all__ = ["DETECTORS", "DriftSensingApp", "DriftSettings", "build_app", "register_detector"]
