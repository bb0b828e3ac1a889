"""The Ray Serve application: FastAPI ingress, dynamic batching, model from the registry.

Build it with :func:`build_app` (typed arguments, so ``serve run
glitchflow.serve.app:build_app model=models:/glitchflow-unet@production`` and a
``serve deploy`` / KubeRay ``serveConfigV2`` file work as well as ``glitchflow
serve``).  Routes:

* ``POST /v1/veto``: auxiliary channels (strain optional) -> veto flag, clusters;
* ``POST /v1/denoise``: all channels -> the above plus cleaned flag, residual
  figures and optionally the generated and cleaned spectrograms;
* ``GET /v1/model``: name, version, channels, rates, window, padding, thresholds;
* ``POST /v1/reload``: re-resolve the model URI (a moved alias) and swap models
  without downtime; ``GET /healthz``.

Request bodies are JSON or the binary layout of :mod:`glitchflow.serve.protocol`.
Bad input gets a 4xx naming the field and never reaches the model; bodies over
``serve.max_request_mb`` get 413.  When the environment variable named by
``serve.token_env`` is set, every ``/v1`` route needs ``Authorization: Bearer
<token>``.  Checkpoints load with ``weights_only=True``; nothing is unpickled.
"""

import asyncio
import hmac
import logging
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

from glitchflow.serve.engine import DecisionEngine, RequestError, WindowRequest
from glitchflow.serve.protocol import WindowRequestModel, parse

log = logging.getLogger(__name__)

BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": WindowRequestModel.model_json_schema()},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary layout: see glitchflow.serve.protocol",
            },
        },
    }
}

api = FastAPI(
    title="glitchflow",
    description=(
        "Veto and denoise decisions for gravitational-wave strain from auxiliary channels. "
        "Send every channel from gps_start for pad_before + window + pad_after seconds at its "
        "native rate (GET /v1/model gives the numbers); the decision covers "
        "[gps_start + pad_before, + window)."
    ),
    version="1",
    # served by the deployment below, behind the token when one is set
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


class ServeArgs(BaseModel):
    """Arguments of the application builder."""

    model: str = Field(description="models:/NAME@ALIAS, models:/NAME/VERSION or a .pt path")
    tracking_uri: str | None = Field(None, description="MLflow URI; default $MLFLOW_TRACKING_URI")
    config: str | None = Field(None, description="glitchflow YAML config (its serve section)")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value overrides")


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)


@serve.deployment
@serve.ingress(api)
class GlitchflowEndpoint:
    """One replica: a :class:`DecisionEngine` behind batched routes."""

    def __init__(self, model: str, tracking_uri: str | None, serve_config: dict) -> None:
        import torch

        from glitchflow.config import ServeConfig
        from glitchflow.config.base import validate_model

        self.cfg = validate_model(ServeConfig, serve_config, "serve")
        torch.set_num_threads(self.cfg.threads)
        self.model_uri = model
        self.tracking_uri = tracking_uri
        self.device = (
            "cuda" if self.cfg.gpus_per_replica > 0 and torch.cuda.is_available() else "cpu"
        )
        self._load()
        self.batched.set_max_batch_size(self.cfg.max_batch_size)
        self.batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        self.max_bytes = int(self.cfg.max_request_mb * 2**20)
        self.token = os.environ.get(self.cfg.token_env) or None
        self._watch = None

    def _load(self) -> None:
        from glitchflow.tracking.model_store import resolve_model

        resolved = resolve_model(self.model_uri, self.tracking_uri)
        cfg = self.cfg
        subtraction = None
        if cfg.clean_model:
            from glitchflow.tracking.model_store import resolve_subtraction

            subtraction = resolve_subtraction(cfg.clean_model, self.tracking_uri)
        self.engine = DecisionEngine(
            resolved.ckpt,
            cfg.window,
            self.device,
            cfg.snr2_threshold,
            cfg.min_area,
            cfg.crop_hop,
            subtraction,
        )
        self.resolved = resolved
        log.info("serving %s version %s", resolved.uri, resolved.version)

    async def _ensure_watch(self) -> None:
        if self.cfg.watch_interval_s > 0 and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_alias())

    async def _watch_alias(self) -> None:
        from glitchflow.tracking.model_store import current_version

        while True:
            await asyncio.sleep(self.cfg.watch_interval_s)
            try:
                version = await asyncio.to_thread(
                    current_version, self.model_uri, self.tracking_uri
                )
                if version is not None and version != self.resolved.version:
                    await asyncio.to_thread(self._load)
            except Exception as exc:  # keep serving the current model
                log.warning("alias watch: %s", exc)

    def _authorise(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise RequestError("authorization", "missing or wrong bearer token", 401)

    def _refusal(self, request: Request) -> JSONResponse | None:
        """The 401 answer for an unauthorised request, else None."""
        try:
            self._authorise(request)
        except RequestError as exc:
            return _error(exc)
        return None

    async def _parse(self, request: Request, need_strain: bool) -> WindowRequest:
        self._authorise(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise RequestError("body", f"{length} bytes exceed {self.max_bytes}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it comes: chunked uploads too
            size += len(chunk)
            if size > self.max_bytes:
                raise RequestError("body", f"more than {self.max_bytes} bytes", 413)
            chunks.append(chunk)
        body = b"".join(chunks)
        parsed = parse(request.headers.get("content-type"), body)
        item = self.engine.validate(parsed.gps_start, parsed.channels, need_strain)
        item.want_spectrograms = parsed.return_spectrograms and need_strain
        item.want_cleaned_strain = parsed.return_cleaned_strain and need_strain
        return item

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def batched(self, items: list[WindowRequest]) -> list[dict]:
        engine = self.engine  # a reload swaps it between batches, never inside one
        return await asyncio.to_thread(engine.run, items)

    def _model_fields(self) -> dict:
        return {"model": self.resolved.uri, "model_version": self.resolved.version}

    async def _decide(self, request: Request, need_strain: bool):
        await self._ensure_watch()
        try:
            item = await self._parse(request, need_strain)
        except RequestError as exc:
            return _error(exc)
        result = await self.batched(item)
        if "error" in result:  # this request's data gave no finite answer
            return JSONResponse(
                {"error": result["error"], "field": result["field"]}, status_code=result["status"]
            )
        return self._model_fields() | result

    @api.post("/v1/veto", openapi_extra=BODY_DOC)
    async def veto(self, request: Request):
        """Veto decision for one window from the auxiliary channels."""
        return await self._decide(request, need_strain=False)

    @api.post("/v1/denoise", openapi_extra=BODY_DOC)
    async def denoise(self, request: Request):
        """Veto and denoise decision for one window (strain required)."""
        return await self._decide(request, need_strain=True)

    @api.get("/v1/model")
    async def model(self, request: Request):
        """What to send: channels, native rates, samples per channel, window and padding."""
        refused = self._refusal(request)
        return refused or self.resolved.describe() | self.engine.describe()

    @api.post("/v1/reload")
    async def reload(self, request: Request):
        """Resolve the model URI again (a moved alias) and swap the model."""
        refused = self._refusal(request)
        if refused:
            return refused
        previous = self.resolved.version
        await asyncio.to_thread(self._load)
        return {"previous_version": previous} | self._model_fields()

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_spec(self, request: Request):
        """The OpenAPI description (behind the token when one is set)."""
        return self._refusal(request) or api.openapi()

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        """Swagger UI (behind the token when one is set)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        refused = self._refusal(request)
        return refused or get_swagger_ui_html(openapi_url="openapi.json", title="glitchflow")

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok"} | self._model_fields()


def deployment_options(cfg) -> dict:
    """Ray Serve options of the deployment from a :class:`~glitchflow.config.ServeConfig`."""
    s = cfg
    options = {
        "max_ongoing_requests": max(s.max_ongoing_requests, s.max_batch_size),
        "ray_actor_options": {"num_cpus": s.cpus_per_replica, "num_gpus": s.gpus_per_replica},
    }
    if s.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = s.num_replicas
    return options


def build_app(args: ServeArgs, env_vars: dict | None = None) -> serve.Application:
    """Application builder (``serve run glitchflow.serve.app:build_app model=...``).

    ``env_vars`` are set in the replicas (e.g. the token variable when the deploying
    process is not the one that started Ray); on Kubernetes set them from a Secret.
    """
    from glitchflow.config import load_config

    if isinstance(args, dict):
        args = ServeArgs.model_validate(args)
    cfg = load_config(args.config, args.overrides).serve
    options = deployment_options(cfg)
    if env_vars:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": dict(env_vars)}
    return GlitchflowEndpoint.options(**options).bind(
        args.model, args.tracking_uri, cfg.model_dump(mode="json")
    )
