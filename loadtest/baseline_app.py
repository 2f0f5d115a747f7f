"""The anchor for `nox -s bench`: the app shape of Ray's and KubeRay's Stable Diffusion examples.

As in ray-project/ray `doc/source/serve/doc_code/stable_diffusion.py`: a FastAPI ingress
deployment calls one model deployment through a handle, one request per pipeline call (no
batching); the model returns a PIL image through Ray's object store and the ingress encodes
the PNG. Two deliberate differences keep the comparison about serving, not settings: the same
model, size and steps as dogbooth, and the same torch thread count (Ray would otherwise pin
torch to the actor's num_cpus).
"""

import io
import os
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from services.models import load_pipeline

app = FastAPI()


class BaselineArgs(BaseModel):
    model: str = "tiny"
    steps: int = Field(20, ge=1, le=150)
    threads: int | None = Field(None, ge=1)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class APIIngress:
    def __init__(self, diffusion_model_handle: DeploymentHandle) -> None:
        self.handle = diffusion_model_handle

    @app.get("/imagine", response_class=Response)
    async def generate(self, prompt: str = Query(..., min_length=1), img_size: int = 512) -> Response:
        image = await self.handle.generate.remote(prompt, img_size=img_size)
        file_stream = io.BytesIO()
        image.save(file_stream, "PNG")
        return Response(content=file_stream.getvalue(), media_type="image/png")


@serve.deployment(ray_actor_options={"num_cpus": 1})
class StableDiffusion:
    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        self.args = BaselineArgs.model_validate(args)
        torch.set_num_threads(self.args.threads or len(os.sched_getaffinity(0)))
        self.pipe = load_pipeline(self.args.model)

    def generate(self, prompt: str, img_size: int = 512) -> Any:
        import torch

        with torch.inference_mode():
            return self.pipe(prompt, height=img_size, width=img_size, num_inference_steps=self.args.steps).images[0]


def build_app(args: dict[str, Any]) -> serve.Application:
    """`import_path: loadtest.baseline_app:build_app`."""
    model = StableDiffusion.bind(BaselineArgs.model_validate(args).model_dump())  # type: ignore[attr-defined]
    return APIIngress.bind(model)  # type: ignore[attr-defined]
