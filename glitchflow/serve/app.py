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
  without downtime on every replica (:mod:`glitchflow.serve.pointer`); a new
  ``user_config={"model": URI}`` does the same through ``reconfigure``;
* ``GET /healthz``: status, model version, pointer generation and replica id.

Request bodies are JSON or the binary layout of :mod:`glitchflow.serve.protocol`.
Bad input gets a 4xx naming the field and never reaches the model; bodies over
``serve.max_request_mb`` get 413.  When the environment variable named by
``serve.token_env`` is set, every ``/v1`` route needs ``Authorization: Bearer
<token>``.  Checkpoints load with ``weights_only=True``; nothing is unpickled.
"""

import asyncio
import contextlib
import hmac
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.config import DeploymentActorConfig

from glitchflow.config import ServeConfig, load_config
from glitchflow.config.base import validate_model
from glitchflow.serve.engine import DecisionEngine, RequestError, WindowRequest
from glitchflow.serve.pointer import POINTER, ModelPointer
from glitchflow.serve.protocol import (
    WindowRequestModel,
    encode_answer,
    jsonable,
    parse,
    wants_binary,
)
from glitchflow.tracking.model_store import (
    ResolvedModel,
    current_version,
    resolve_model,
    resolve_subtraction,
)

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


@dataclass(frozen=True)
class Served:
    """One immutable (engine, model) pair: a batch runs on one pair from start to end, and
    its answers carry that pair's version, never a half-swapped one."""

    engine: DecisionEngine
    resolved: ResolvedModel
    generation: int = 0  # the ModelPointer generation it follows; 0 = the configured URI

    def fields(self) -> dict:
        return {"model": self.resolved.uri, "model_version": self.resolved.version}


@serve.deployment
@serve.ingress(api)
class GlitchflowEndpoint:
    """One replica: a :class:`DecisionEngine` behind batched routes."""

    def __init__(self, model: str, tracking_uri: str | None, serve_config: dict) -> None:
        import torch

        self.cfg = validate_model(ServeConfig, serve_config, "serve")
        # every torch call of this replica runs on this one thread (see _on_engine_thread)
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="glitchflow-engine")
        self._engine_thread.submit(torch.set_num_threads, self.cfg.threads).result()
        self.model_uri = model
        self.tracking_uri = tracking_uri
        self.device = (
            "cuda" if self.cfg.gpus_per_replica > 0 and torch.cuda.is_available() else "cpu"
        )
        self.served = self._engine_thread.submit(self._build, model).result()
        log.info("serving %s version %s", model, self.served.resolved.version)
        self.batched.set_max_batch_size(self.cfg.max_batch_size)
        self.batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        self.max_bytes = int(self.cfg.max_request_mb * 2**20)
        self.token = os.environ.get(self.cfg.token_env) or None
        self._sync = None
        self._swap = asyncio.Lock()
        # follow reloads from the start, requests or not (Serve runs this in its loop);
        # without a running loop the first request starts it
        with contextlib.suppress(RuntimeError):
            self._sync = asyncio.get_running_loop().create_task(self._sync_loop())

    def _build(self, uri: str, generation: int = 0) -> Served:
        """Resolve ``uri`` and build its engine; shown under the configured URI."""
        resolved = replace(resolve_model(uri, self.tracking_uri), uri=self.model_uri)
        cfg = self.cfg
        subtraction = None
        if cfg.clean_model:
            subtraction = resolve_subtraction(cfg.clean_model, self.tracking_uri)
        engine = DecisionEngine(
            resolved.ckpt,
            cfg.window,
            self.device,
            cfg.snr2_threshold,
            cfg.min_area,
            cfg.crop_hop,
            subtraction,
            cfg.tiling,
            cfg.psd,
        )
        return Served(engine, resolved, generation)

    async def reconfigure(self, user_config: dict) -> None:
        """Serve's user_config (``serve deploy`` / ``serve.run`` with
        ``user_config={"model": URI}``): every replica switches to that model."""
        uri = (user_config or {}).get("model")
        if uri and uri != self.model_uri:
            async with self._swap:
                self.model_uri = uri
                # published too, so that no replica follows an older reload back
                await self._publish(await self._on_engine_thread(self._build, uri))
            log.info("reconfigured to %s version %s", uri, self.served.resolved.version)

    async def _on_engine_thread(self, fn, *args):
        """``fn(*args)`` on the replica's one engine thread, awaited from the event loop.

        Torch's OpenMP keeps one team of threads per calling thread and lets it spin
        between parallel regions only while it is the only team: once a second thread
        has run a torch op (as ``asyncio.to_thread`` does, one pool thread after
        another), every request runs without spinning, 37 ms instead of 23 ms for the
        benchmark's request on 2 CPUs.  So model builds and decisions share one thread,
        and the event loop only parses, validates (numpy) and answers."""
        return await asyncio.get_running_loop().run_in_executor(self._engine_thread, fn, *args)

    async def check_health(self) -> None:
        """Serve's periodic health check: also makes sure the model sync runs."""
        await self._ensure_sync()

    @staticmethod
    def _pointer():
        """The deployment's :class:`ModelPointer`, or None (outside Serve, not yet up)."""
        try:
            return serve.get_deployment_actor(POINTER)
        except Exception as exc:  # being (re)created by the controller: try next time
            log.warning("model pointer unavailable: %s", exc)
            return None

    async def _publish(self, served: Served) -> Served:
        """Install ``served`` here and publish its pinned version to every replica."""
        pointer = self._pointer()
        generation = served.generation
        if pointer is not None:
            generation = await pointer.publish.remote(served.resolved.pinned_uri)
        self.served = replace(served, generation=generation)
        return self.served

    async def _follow(self) -> None:
        """Load what another replica published, if the generation moved."""
        pointer = self._pointer()
        if pointer is None:
            return
        generation, uri = await pointer.current.remote()
        current = self.served
        if generation <= current.generation or uri is None:
            return
        async with self._swap:
            if uri == current.resolved.pinned_uri:
                self.served = replace(current, generation=generation)
            else:
                self.served = await self._on_engine_thread(self._build, uri, generation)
                log.info("following reload to %s", uri)

    async def _ensure_sync(self) -> None:
        if self._sync is None:
            self._sync = asyncio.get_running_loop().create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        """Follow published reloads every ``sync_interval_s``; with ``watch_interval_s``
        also poll the registry alias and publish a moved one."""
        cfg = self.cfg
        last_watch = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(cfg.sync_interval_s)
            try:
                await self._follow()
                now = asyncio.get_running_loop().time()
                if cfg.watch_interval_s > 0 and now - last_watch >= cfg.watch_interval_s:
                    last_watch = now
                    version = await asyncio.to_thread(
                        current_version, self.model_uri, self.tracking_uri
                    )
                    if version is not None and version != self.served.resolved.version:
                        await self._reload()
            except Exception as exc:  # keep serving the current model
                log.warning("model sync: %s", exc)

    async def _reload(self) -> Served:
        async with self._swap:
            served = await self._on_engine_thread(self._build, self.model_uri)
            return await self._publish(served)

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
        item = self.served.engine.validate(parsed.gps_start, parsed.channels, need_strain)
        item.want_spectrograms = parsed.return_spectrograms and need_strain
        item.want_cleaned_strain = parsed.return_cleaned_strain and need_strain
        return item

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def batched(self, items: list[WindowRequest]) -> list[dict]:
        served = self.served  # a reload swaps the pair between batches, never inside one
        results = await self._on_engine_thread(served.engine.run, items)
        return [r if "error" in r else served.fields() | r for r in results]

    async def _decide(self, request: Request, need_strain: bool):
        await self._ensure_sync()
        try:
            item = await self._parse(request, need_strain)
        except RequestError as exc:
            return _error(exc)
        result = await self.batched(item)
        if "error" in result:  # this request's data gave no finite answer
            return JSONResponse(
                {"error": result["error"], "field": result["field"]}, status_code=result["status"]
            )
        if wants_binary(request.headers.get("accept")):
            return Response(encode_answer(result), media_type="application/octet-stream")
        return JSONResponse(jsonable_encoder(jsonable(result)))

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
        if refused:
            return refused
        await self._ensure_sync()
        served = self.served
        return served.resolved.describe() | served.engine.describe() | self._where(served)

    @staticmethod
    def _replica() -> str:
        try:
            return serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a Serve replica (unit use)
            return ""

    def _where(self, served: Served) -> dict:
        return {"generation": served.generation, "replica": self._replica()}

    @api.post("/v1/reload")
    async def reload(self, request: Request):
        """Resolve the model URI again (a moved alias), swap the model here and publish
        the version to every replica (they follow within ``serve.sync_interval_s``)."""
        refused = self._refusal(request)
        if refused:
            return refused
        await self._ensure_sync()
        previous = self.served.resolved.version
        try:
            served = await self._reload()
        except Exception as exc:  # the registry or checkpoint failed: keep serving
            log.warning("reload of %s failed: %s", self.model_uri, exc)
            return JSONResponse(
                {
                    "error": f"reload failed, still serving version {previous}: {exc}"[:500],
                    "field": "model",
                },
                status_code=503,
            )
        return {"previous_version": previous} | served.fields() | self._where(served)

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
        await self._ensure_sync()
        served = self.served
        return {"status": "ok"} | served.fields() | self._where(served)


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
    options["deployment_actors"] = [
        DeploymentActorConfig(name=POINTER, actor_class=ModelPointer, actor_options={"num_cpus": 0})
    ]
    return options


def build_app(
    args: ServeArgs, env_vars: dict | None = None, user_config: dict | None = None
) -> serve.Application:
    """Application builder (``serve run glitchflow.serve.app:build_app model=...``).

    ``env_vars`` are set in the replicas (e.g. the token variable when the deploying
    process is not the one that started Ray); on Kubernetes set them from a Secret.
    ``user_config`` (``{"model": URI}``, also settable in a ``serve deploy`` file) is
    handed to every replica's ``reconfigure``: changing it swaps the model in place.
    """

    if isinstance(args, dict):
        args = ServeArgs.model_validate(args)
    cfg = load_config(args.config, args.overrides).serve
    options = deployment_options(cfg)
    if env_vars:
        options["ray_actor_options"]["runtime_env"] = {"env_vars": dict(env_vars)}
    if user_config:
        options["user_config"] = dict(user_config)
    return GlitchflowEndpoint.options(**options).bind(
        args.model, args.tracking_uri, cfg.model_dump(mode="json")
    )
