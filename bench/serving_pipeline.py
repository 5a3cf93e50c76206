"""The baseline of bench/serving: a transformers `pipeline` behind a minimal FastAPI endpoint.

    uv run --frozen python -m bench.serving_pipeline --store file:///tmp/x/artifacts \\
        --manifest file:///tmp/x/artifacts/models/d/v1/manifest.json --sha256 HEX --port 8090

Serves the same model as adaptmesh serving: the manifest's files are read and digest-checked
(`load_model_files`) and built into base + LoRA adapter + head the way serving builds them
(`load_peft_classifier`); then the adapter is merged into the base (PEFT `merge_and_unload`),
leaving a plain transformers `BertForSequenceClassification` whose config carries the labels,
and `pipeline("text-classification", model=..., tokenizer=...)` answers, truncating at the
model's own `max_length` as serving does. adaptmesh_ml is used only to build the model from
the artifact store; answering is transformers, FastAPI and uvicorn alone.

`POST /predict {"text": "..."}` -> `{"label", "score"}`: one text per request, the pipeline's
top label. The endpoint is a plain `def`, on purpose: FastAPI runs a `def` endpoint in its
thread pool (anyio's, 40 threads), so 16 concurrent requests run up to 16 pipeline calls at
once, each on torch's intra-op threads (torch releases the GIL inside its kernels). That is
what the minimal FastAPI deployment of a pipeline does. An `async def` endpoint would call
the model on the event loop: one request at a time, the server deaf meanwhile. The pipeline
answers one sequential text before the server listens, so the fast tokenizer's truncation
setting (state shared by every thread) is made once, not raced by the first concurrent calls.

`GET /info` reports the torch thread count, labels and max_length. uvicorn runs with its
defaults (access log on at level info), as the kit runs serving's uvicorn.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from transformers import pipeline

from adaptmesh_kit import ArtifactStore
from adaptmesh_ml import configure_torch_threads, load_model_files
from adaptmesh_ml.model_files import load_peft_classifier
from adaptmesh_schemas.values import ArtifactRef, TrainingSettings


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str


class PredictResponse(BaseModel):
    label: str
    score: float


def build_pipeline(store_root: str, ref: ArtifactRef) -> tuple[Any, dict[str, Any]]:
    """The text-classification pipeline over the merged model, and what /info reports."""
    threads = configure_torch_threads()
    manifest, files = load_model_files(ArtifactStore(store_root), ref)
    built = load_peft_classifier(manifest.lineage.base_model, files)
    peft_model: Any = built[0]
    tokenizer: Any = built[1]  # transformers' pipeline() overloads name the tokenizer classes
    labels = built[2]
    merged = peft_model.merge_and_unload()
    merged.eval()
    if tuple(merged.config.id2label[i] for i in range(len(labels))) != labels:
        raise SystemExit(f"the merged model's id2label {merged.config.id2label} is not {labels}")
    max_length = int(
        manifest.lineage.hyperparameters.get("max_length", TrainingSettings().max_length)
    )
    classify = pipeline(
        "text-classification",
        model=merged,
        tokenizer=tokenizer,
        device=-1,
        truncation=True,
        max_length=max_length,
    )
    classify("warm-up")  # sets the tokenizer's truncation once, before any thread races it
    info = {
        "model_version": manifest.model_version,
        "labels": list(labels),
        "max_length": max_length,
        "torch_threads": torch.get_num_threads(),
        "configured_threads": threads,
    }
    return classify, info


def create_api(classify: Any, info: dict[str, Any]) -> FastAPI:
    api = FastAPI(title="transformers pipeline baseline")

    @api.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        # A plain def: FastAPI runs it in its thread pool (see the module's docstring).
        [answer] = classify(request.text)
        return PredictResponse(label=str(answer["label"]), score=float(answer["score"]))

    @api.get("/info")
    def describe() -> dict[str, Any]:
        return info

    return api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="artifact store root (fsspec URI)")
    parser.add_argument("--manifest", required=True, help="the model's manifest URI")
    parser.add_argument("--sha256", required=True, help="the manifest's digest")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    classify, info = build_pipeline(args.store, ArtifactRef(uri=args.manifest, sha256=args.sha256))
    print(
        f"pipeline: model {info['model_version']} merged and loaded in "
        f"{time.perf_counter() - started:.1f}s; torch threads {info['torch_threads']}",
        flush=True,
    )
    uvicorn.run(create_api(classify, info), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
