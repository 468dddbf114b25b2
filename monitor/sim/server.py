"""The HTTP surface of one simulated instance: vLLM's endpoints plus fault injection.

Plain Starlette rather than FastAPI: one process serves many instances and every streamed token goes
through here, so per-request validation machinery would cost more than the engine model itself.
Error bodies use vLLM's OpenAI-compatible shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from monitor.sim.engine import (
    AdmissionRejected,
    Engine,
    EngineDeadError,
    InjectedError,
    RequestRejected,
    SimRequest,
)
from monitor.sim.metrics import CONTENT_TYPE, METRICS_VERSIONS, VLLM_VERSION, VllmMetrics
from monitor.sim.params import FaultError, Faults
from monitor.sim.tokens import output_word, tokenize_messages, tokenize_prompt

MAX_CONTROL_BODY = 64 * 1024


def error(status: int, kind: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


class SimInstance:
    """One engine, its metrics and its app; the fleet binds it to a port and sets `engine.name`."""

    def __init__(self, engine: Engine, metrics: VllmMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.created = int(time.time())
        self.app = Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/sim/faults", self.faults, methods=["GET", "POST"]),
            Route("/sim/control", self.control, methods=["GET", "POST"]),
            Route("/sim/state", self.state, methods=["GET"]),
            # vLLM's sleep-mode endpoints (served with VLLM_SERVER_DEV_MODE=1)
            Route("/sleep", self.sleep, methods=["POST"]),
            Route("/wake_up", self.wake_up, methods=["POST"]),
            Route("/is_sleeping", self.is_sleeping, methods=["GET"]),
        ])
        self._frozen_page: bytes | None = None

    @property
    def model(self) -> str:
        return self.engine.params.model

    # --- operational endpoints ----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        faults = self.engine.faults
        if faults.hang or faults.health_timeout:
            await self.engine.wait_health()  # never answers while the fault lasts; the prober times out
        if self.engine.faults.dead:
            return Response(status_code=503)
        return Response(status_code=200)

    async def prometheus(self, request: Request) -> Response:
        if self.engine.faults.metrics_frozen:
            if self._frozen_page is None:
                self._frozen_page = self.metrics.render()
            return Response(self._frozen_page, media_type=CONTENT_TYPE)
        self._frozen_page = None
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VLLM_VERSION[self.metrics.version]})

    def set_metrics_version(self, version: str) -> None:
        """Serve another vLLM version's page from now on (its counters start at zero, as after the
        restart an upgrade takes); the engine and its requests carry on."""
        if version not in METRICS_VERSIONS:
            raise FaultError(f"metrics_version: expected one of {', '.join(METRICS_VERSIONS)}, got {version!r}")
        if version != self.metrics.version:
            self.metrics = self.metrics.with_version(version)  # type: ignore[arg-type]
            self.engine.attach_metrics(self.metrics)
            self._frozen_page = None

    async def control(self, request: Request) -> Response:
        """`{"metrics_version": "latest"|"v1"|"v0"}`: settings that are not faults, so `{}` on
        /sim/faults leaves them alone."""
        if request.method == "POST":
            try:
                raw = await request.body()
                if len(raw) > MAX_CONTROL_BODY:
                    raise FaultError("body too large")
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise FaultError('expected a JSON object such as {"metrics_version": "v0"}')
                unknown = sorted(set(body) - {"metrics_version"})
                if unknown:
                    raise FaultError(f"unknown key(s) {', '.join(unknown)}; known: metrics_version")
                if "metrics_version" in body:
                    self.set_metrics_version(body["metrics_version"])
            except (ValueError, FaultError) as exc:
                return error(400, "BadRequestError", str(exc))
        return JSONResponse({"instance": self.engine.name, "metrics_version": self.metrics.version})

    async def sleep(self, request: Request) -> Response:
        try:
            level = int(request.query_params.get("level", "1"))
            self.engine.set_faults(Faults.from_json({**self.engine.faults.active, "sleep": level}))
        except (ValueError, FaultError) as exc:
            return error(400, "BadRequestError", str(exc))
        return Response(status_code=200)

    async def wake_up(self, request: Request) -> Response:
        self.engine.set_faults(Faults.from_json({**self.engine.faults.active, "sleep": 0}))
        return Response(status_code=200)

    async def is_sleeping(self, request: Request) -> Response:
        return JSONResponse({"is_sleeping": self.engine.faults.sleep > 0})

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": self.created, "owned_by": "vllm",
            "root": self.model, "parent": None, "max_model_len": self.engine.max_model_len,
        }]})

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
                self.engine.set_faults(Faults.from_json(body))
            except (ValueError, FaultError) as exc:
                return error(400, "BadRequestError", str(exc))
        return JSONResponse({"instance": self.engine.name, "faults": self.engine.faults.active})

    async def state(self, request: Request) -> Response:
        return JSONResponse(self.engine.snapshot())

    # --- OpenAI-compatible generation ---------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, chat: bool) -> Response:
        arrival = time.time()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "BadRequestError", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return error(400, "BadRequestError", "The request body must be a JSON object.")
        model = body.get("model", self.model)
        if model != self.model:
            return error(404, "NotFoundError", f"The model `{model}` does not exist.", "model")
        tokens = tokenize_messages(body.get("messages")) if chat else tokenize_prompt(body.get("prompt"))
        if tokens is None:
            what = "messages" if chat else "prompt"
            return error(400, "BadRequestError", f"`{what}` is missing or not supported by the simulator "
                         "(use a string, a list of token ids, or chat messages with text content).", what)
        if body.get("n", 1) != 1:
            return error(400, "BadRequestError", "The simulator supports n=1 only.", "n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) if chat else body.get("max_tokens", 16)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            return error(400, "BadRequestError", "max_tokens must be an integer.", "max_tokens")
        min_tokens = body.get("min_tokens", 0)
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
            return error(400, "BadRequestError", "min_tokens must be a non-negative integer.", "min_tokens")
        try:
            req = self.engine.submit(tokens, max_tokens, ignore_eos=bool(body.get("ignore_eos", False)),
                                     min_tokens=min_tokens, arrival=arrival)
        except RequestRejected as exc:
            return error(400, "BadRequestError", str(exc))
        except AdmissionRejected as exc:
            return error(503, "ServiceUnavailableError", str(exc))
        except (EngineDeadError, InjectedError) as exc:
            return error(500, "InternalServerError", str(exc))
        if body.get("stream", False):
            options = body.get("stream_options") or {}
            usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
            return StreamingResponse(self._stream(req, chat, usage), media_type="text/event-stream")
        return await self._complete(req, chat)

    async def _complete(self, req: SimRequest, chat: bool) -> Response:
        try:
            while not req.finished:
                await req.event.wait()
                req.event.clear()
        finally:
            self.engine.abort(req)  # no-op once finished; frees the KV if the client went away
        if req.finish_reason in ("engine_dead", "abort"):
            return error(500, "InternalServerError", "The request did not complete (engine stopped).")
        text = "".join(" " + output_word(req.seed, i) for i in range(req.generated))
        usage = {"prompt_tokens": req.prompt_len, "total_tokens": req.prompt_len + req.generated,
                 "completion_tokens": req.generated, "prompt_tokens_details": None}
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": req.finish_reason, "stop_reason": None}
            obj, prefix = "chat.completion", "chatcmpl-"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": req.finish_reason,
                      "stop_reason": None, "prompt_logprobs": None}
            obj, prefix = "text_completion", "cmpl-"
        return JSONResponse({"id": prefix + req.id, "object": obj, "created": int(req.arrival), "model": self.model,
                             "choices": [choice], "usage": usage})

    async def _stream(self, req: SimRequest, chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events, one event per token; tokens that piled up while the client was slow
        go out in one write."""
        head = (f'data: {{"id":"{"chatcmpl-" if chat else "cmpl-"}{req.id}","object":'
                f'"{"chat.completion.chunk" if chat else "text_completion"}","created":{int(req.arrival)},'
                f'"model":{json.dumps(self.model)},"choices":[{{"index":0,')
        fmt_head = head.replace("%", "%%")
        if chat:
            token_event = fmt_head + '"delta":{"content":" %s"},"logprobs":null,"finish_reason":%s}]}\n\n'
            empty_event = fmt_head + '"delta":{},"logprobs":null,"finish_reason":%s}]}\n\n'
        else:
            token_event = fmt_head + '"text":" %s","logprobs":null,"finish_reason":%s,"stop_reason":null}]}\n\n'
            empty_event = fmt_head + '"text":"","logprobs":null,"finish_reason":%s,"stop_reason":null}]}\n\n'
        sent = 0
        try:
            if chat:
                yield (head + '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
                       ).encode()
            while True:
                await req.event.wait()
                req.event.clear()
                events = []
                last = req.generated - 1
                while sent < req.generated:
                    reason = f'"{req.finish_reason}"' if req.finished and sent == last else "null"
                    events.append(token_event % (output_word(req.seed, sent), reason))
                    sent += 1
                if req.finished:
                    if req.finish_reason == "engine_dead":
                        events.append('data: {"error": {"message": "EngineCore encountered an issue.", '
                                      '"type": "InternalServerError", "param": null, "code": 500}}\n\n')
                    elif sent == 0 or req.finish_reason == "abort":
                        events.append(empty_event % f'"{req.finish_reason}"')
                    if include_usage:
                        events.append(head.replace('"choices":[{"index":0,', '"choices":[],') +
                                      f'"usage":{{"prompt_tokens":{req.prompt_len},"total_tokens":'
                                      f'{req.prompt_len + req.generated},"completion_tokens":{req.generated}}}}}\n\n')
                    events.append("data: [DONE]\n\n")
                    yield "".join(events).encode()
                    return
                if events:
                    yield "".join(events).encode()
        finally:
            self.engine.abort(req)
