"""adaptmesh serving: each domain's production model behind an HTTP API.

`build_app(settings)` wires the process (see `app.py`); the pure parts are the model registry
(`registry.py`), loading and swapping (`loading.py`), readiness (`readiness.py`), dynamic
batching (`batching.py`) and predictions with their trace and inference log (`predictions.py`).
"""
