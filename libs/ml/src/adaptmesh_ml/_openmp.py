"""Let idle OpenMP threads sleep instead of spin; imported before anything loads torch.

On a small machine the mesh's processes (services, Ray workers, the broker) share the cores.
OpenMP's default is to spin at every barrier, so while another process holds a core, each of
torch's many small parallel regions waits out that process's time slice. Measured here on
2 busy cores, the same tiny LoRA run took 1.1-86 s with spinning and 1.5-2.3 s with PASSIVE.
libgomp reads the policy once, when torch loads it, so this must run before `import torch`;
an explicit OMP_WAIT_POLICY in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
