"""adaptmesh training service: LoRA fine-tuning on warm Ray workers, for `retrain.requested`.

Importing the package sets Ray's environment defaults (see `ray_defaults`) before any module of
it imports Ray, because Ray reads some of them once, at import time.
"""

import os

from adaptmesh_training.ray_defaults import RAY_ENVIRONMENT_DEFAULTS

for _name, _value in RAY_ENVIRONMENT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
