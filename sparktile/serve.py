"""``sparktile serve``: the golden model or the RTL mesh behind an OpenAI-compatible API.

An editor's completion plugin or any OpenAI client talks to the simulated tile exactly as it
would to a cloud model: ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions``, streamed (server-sent events in the OpenAI chunk format, then
``data: [DONE]``) or not. Each response carries ``usage`` and a ``sparktile`` extension: the
backend, the RTL cycles and whether every token matched the golden model (rtl backend), and
what the same request would take on a whole wafer (the calibrated extrapolation of
:mod:`sparktile.scripts.perf.estimate`).

Framework: Starlette (ASGI) served by uvicorn, both small, well kept and pure-Python wheels;
FastAPI would add pydantic for a handful of fields validated here by hand with messages that
name the field.

One backend serves one request at a time, in arrival order (an ``asyncio.Lock``, which
wakes waiters first come first served); the generation runs in a worker thread and stops when
the client disconnects, a stop sequence appears, or the request's time limit passes. Bad input
gets a 4xx answer in the OpenAI error format (``{"error": {"message", "type", "param",
"code"}}``) naming the problem; it never takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field

__all__ = ["CompletionRequest", "GoldenBackend", "RtlBackend", "BoardServeBackend",
           "StopMatcher", "create_app", "RequestError", "parse_request", "chat_prompt",
           "serving"]

#: Stop sequences a request may give (the OpenAI API's limit).
MAX_STOP = 4


class RequestError(Exception):
    """A request that cannot be served as asked: answered with ``status`` and the OpenAI
    error object."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.kind = (
            message, param, status, code, kind)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass
class CompletionRequest:
    """One request, validated."""

    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    chat: bool = False


def _number(body, key, lo, hi, default, *, integer=False, lo_open=False):
    v = body.get(key, default)
    if v is None:
        return default
    ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool)
    if ok and not integer:
        ok = v == v and abs(v) != float("inf")
    if ok:
        ok = (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        what = "an integer" if integer else "a number"
        raise RequestError(f"{key} must be {what} in {'(' if lo_open else '['}{lo}, {hi}], "
                           f"not {v!r}", param=key)
    return v


def chat_prompt(messages, template=None) -> str:
    """The prompt for a chat request: ``messages`` checked, then laid out by ``template`` (a
    :class:`~sparktile.golden_model.chat.ChatTemplate`, the checkpoint's own where it has
    one), by default one ``role: content`` line per message and ``assistant: ``."""
    from .golden_model.chat import ROLES, ChatTemplateError, plain_template
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects",
                           param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                or m.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] must be an object with role system, user or "
                               f"assistant and a string content, not {m!r}"[:300],
                               param=f"messages[{i}]")
    template = template or plain_template()
    try:
        return template.render([{"role": m["role"], "content": m["content"]}
                                for m in messages])
    except ChatTemplateError as exc:
        raise RequestError(str(exc)[:500], param="messages") from None


def parse_request(raw: bytes, *, chat: bool, model_name: str, max_tokens_limit: int,
                  chat_template=None) -> CompletionRequest:
    """Validate a request body (every field used; unknown ones are ignored as OpenAI does)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != model_name:
        raise RequestError(f"the model {model!r} does not exist; this server has "
                           f"{model_name!r}", param="model", status=404,
                           code="model_not_found")
    if chat:
        prompt = chat_prompt(body.get("messages"), chat_template)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("prompt must be a non-empty string (one prompt per request)",
                               param="prompt")
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise RequestError(f"n must be 1 (one completion per request), not {n!r}", param="n")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and len(stop) <= MAX_STOP
            and all(isinstance(s, str) and s for s in stop)):
        raise RequestError(f"stop must be a non-empty string or a list of up to {MAX_STOP} of "
                           f"them, not {body.get('stop')!r}"[:300], param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, not {stream!r}", param="stream")
    return CompletionRequest(
        prompt=prompt,
        max_tokens=_number(body, "max_tokens", 1, max_tokens_limit, 16, integer=True),
        temperature=_number(body, "temperature", 0, 2, 1.0),
        top_p=_number(body, "top_p", 0, 1, None, lo_open=True),
        seed=_number(body, "seed", 0, 2**32 - 1, None, integer=True),
        stop=stop, stream=stream, chat=chat)


class StopMatcher:
    """Streams text while watching for stop sequences: holds back the tail that could still
    grow into one, and cuts the text before the first that appears."""

    def __init__(self, stops):
        self.stops = list(stops)
        self.text = ""          # everything produced so far
        self.sent = 0           # characters released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that may be released after ``piece`` arrived ("" once stopped)."""
        if self.stopped:
            return ""
        self.text += piece
        hits = [i for i in (self.text.find(s, max(self.sent - len(s) + 1, 0))
                            for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self.text = self.text[:min(hits)]
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = max(len(self.text) - hold, self.sent)
        out, self.sent = self.text[self.sent:end], end
        return out

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


class _Cancelled(Exception):
    """Raised inside a generation to end it (disconnect, stop sequence, time limit)."""


@dataclass
class Outcome:
    completion_tokens: int = 0
    prompt_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    extension: dict = field(default_factory=dict)


class GoldenBackend:
    """The golden model (numpy): the int8 matmul path that the RTL runs, by default."""

    name = "golden"

    def __init__(self, model: str | None = None, mode: str = "int8"):
        from .golden_model import load_model
        self.lm = load_model(model)
        self.mode = mode
        self.model_name = self.lm.config.name
        self.context = self.lm.config.max_position_embeddings

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.lm.tokenizer.prompt_ids(prompt))

    def generate(self, req: CompletionRequest, emit, should_stop) -> Outcome:
        """Run one request; ``emit(text)`` gets each released piece; ``should_stop()`` is
        polled once per token."""
        from .golden_model.tokenizer import TextStream
        stream = TextStream(self.lm.tokenizer)
        out = Outcome(prompt_tokens=self.prompt_tokens(req.prompt), token_ids=stream.ids)

        def on_token(t):
            emit(stream.push(t))
            out.completion_tokens = len(stream.ids)
            if should_stop():
                raise _Cancelled()

        try:
            g = self.lm.generate(req.prompt, req.max_tokens, mode=self.mode,
                                 temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                                 on_token=on_token)
            out.finish_reason = "stop" if g.stopped == "eos" else "length"
            emit(stream.rest(g.text))
        except _Cancelled:
            out.finish_reason = "stop"
        return out


class RtlBackend(GoldenBackend):
    """Every matmul on the RTL mesh in Verilator (one simulator run per request, the build
    cached); the tokens are checked against the golden model as ``sparktile run`` does."""

    name = "rtl"

    def __init__(self, shape, model: str | None = None):
        super().__init__(model)
        from .cosim.benches.llm import plan_weights
        from .cosim.sim.build import build_mesh
        self.shape = shape
        self.model = model
        # Fits, or a clear error now; shapes only: each request's simulator process
        # quantizes, so the server does not do it too.
        plan_weights(shape, self.lm.matmul_shapes(), "auto")
        build_mesh(shape)                                      # built before the first request

    def generate(self, req: CompletionRequest, emit, should_stop) -> Outcome:
        import tempfile
        from pathlib import Path

        from .cosim.benches.llm import llm_run
        from .cosim.sim import session
        out = Outcome(prompt_tokens=self.prompt_tokens(req.prompt))
        with tempfile.TemporaryDirectory(prefix="sparktile-serve-") as tmp:
            # The bench stops after the token during which this file appears (a disconnect,
            # a stop sequence, the time limit).
            cancel = Path(tmp) / "cancel"
            args = {"prompt": req.prompt, "max_tokens": req.max_tokens, "model": self.model,
                    "seed": req.seed or 0, "temperature": req.temperature, "top_k": None,
                    "top_p": req.top_p, "weights": "auto", "wave_tokens": None,
                    "cancel": str(cancel)}

            def progress(p):
                out.completion_tokens = p["i"]
                if not cancel.exists():
                    emit(p["text"])
                    if should_stop():
                        cancel.touch()

            r = session.run_job(self.shape, llm_run, args,
                                seed=req.seed or 0, progress=progress)
        out.completion_tokens = len(r.tokens)
        out.finish_reason = "stop" if r.cancelled or len(r.tokens) < req.max_tokens \
            else "length"
        out.extension = {"rtl_cycles": int(r.sim_cycles),
                         "match_golden": bool(r.match_golden), "mesh": str(self.shape),
                         "mac_utilization": r.mac_utilization["overall"]}
        return out


class BoardServeBackend(GoldenBackend):
    """The golden model's int8 path with every matmul on a board (or the virtual board,
    ``port="sim"``), through the FPGA host of :mod:`sparktile.cosim.board.host`. Each answer says
    whether the tokens equal the numpy golden model's for the same request."""

    name = "board"

    def __init__(self, port: str, board_name: str = "ulx3s-85f", mesh: str | None = None,
                 model: str | None = None, timeout: float = 2.0):
        super().__init__(model)
        from .cosim.board.host import Board, BoardBackend, open_transport
        from .golden_model import NumpyBackend
        from .hdl.fpga.boards import get_board
        spec = get_board(board_name)
        shape = spec.shape(mesh)
        self.transport = open_transport(port, shape=shape, baud=spec.baud,
                                        bridge=spec.vboard_bridge())
        board = Board(self.transport, timeout=timeout)
        self.shape = shape if port == "sim" else board.shape()
        self.on_board = BoardBackend(board, self.shape)
        self.numpy = NumpyBackend()
        self.port = port

    def generate(self, req: CompletionRequest, emit, should_stop) -> Outcome:
        self.lm.set_backend(self.on_board)
        ops0 = self.on_board.ops
        try:
            out = super().generate(req, emit, should_stop)
        finally:
            self.lm.set_backend(self.numpy)
        golden = self.lm.generate(req.prompt, req.max_tokens, mode=self.mode,
                                  temperature=req.temperature, top_p=req.top_p,
                                  seed=req.seed)
        out.extension = {"port": self.port, "mesh": str(self.shape),
                         "matmuls_on_board": self.on_board.ops - ops0,
                         "match_golden": out.token_ids == golden.token_ids[
                             :len(out.token_ids)]}
        return out

    def close(self) -> None:
        self.transport.close()


class WaferFigures:
    """What a request would take on a whole wafer, from the calibrated extrapolation.

    The placement search behind :func:`~sparktile.scripts.perf.estimate.estimate` takes about a
    second, too slow for every request, so it runs once, when the server starts, for the
    model's full context (the placement that leaves room for the largest KV cache). A request
    of ``p`` prompt and ``c`` generated tokens then costs ``ttft = first-token latency +
    (p - 1) x the slowest pipeline stage`` (the estimate's own prefill formula) and
    ``ttft + (c - 1) / decode tokens/s``; the latency and the stage are those of a prompt half
    the context long, so for short prompts the figure errs high. None where the model is not
    a preset or does not fit the wafer.
    """

    def __init__(self, model_name: str, wafer: str, context: int):
        from .scripts.perf.calibration import load_calibration
        from .scripts.perf.estimate import estimate
        from .scripts.perf.hardware import load_hardware
        from .scripts.perf.models import load_model_config
        from .scripts.perf.placement import PlacementError
        self.preset = wafer
        self.report = None
        try:
            cfg, _ = load_model_config(model_name)
        except ValueError:          # a checkpoint that is not among the presets
            return
        try:
            timing, _ = load_calibration(None)
            self.report = estimate(cfg, load_hardware(wafer), "fp16", context=context,
                                   prompt_tokens=max(context // 2, 1), timing=timing)
        except (PlacementError, ValueError):
            self.report = None

    def request(self, prompt_tokens: int, completion_tokens: int) -> dict | None:
        if self.report is None:
            return None
        pre, tps = self.report["prefill"], self.report["decode"]["tokens_per_s_per_user"]
        slowest = pre["stage_s"][pre["slowest_stage"]]
        ttft = pre["first_token_latency_s"] + max(prompt_tokens - 1, 0) * slowest
        return {"preset": self.preset, "ttft_s": ttft, "tokens_per_s": tps,
                "request_s": ttft + max(completion_tokens - 1, 0) / tps}


def create_app(backend, *, wafer: str = "wse3", time_limit_s: float = 600.0):
    """The Starlette application serving ``backend``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    lock = asyncio.Lock()
    created = int(time.time())
    figures = WaferFigures(backend.model_name, wafer, backend.context)

    def error(exc: RequestError):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def models(request):
        return JSONResponse({"object": "list", "data": [
            {"id": backend.model_name, "object": "model", "created": created,
             "owned_by": f"sparktile ({backend.name} backend)"}]})

    async def handle(request, chat: bool):
        try:
            req = parse_request(await request.body(), chat=chat,
                                model_name=backend.model_name,
                                max_tokens_limit=backend.context,
                                chat_template=backend.lm.tokenizer.chat_template)
            n_prompt = backend.prompt_tokens(req.prompt)
            if n_prompt + req.max_tokens > backend.context:
                raise RequestError(f"the prompt ({n_prompt} tokens) + max_tokens "
                                   f"({req.max_tokens}) exceeds the model's context of "
                                   f"{backend.context} tokens", param="max_tokens",
                                   code="context_length_exceeded")
        except RequestError as exc:
            return error(exc)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        kind = "chat.completion" if chat else "text_completion"
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        matcher = StopMatcher(req.stop)

        held: list[str] = []        # a non-streamed answer, gathered in the worker thread

        def emit(piece):
            text = matcher.feed(piece)
            if text and req.stream:
                loop.call_soon_threadsafe(queue.put_nowait, ("text", text))
            elif text:
                # Waking the event loop for every token costs the worker the GIL each time
                # (+7 % on 128 golden tokens); an answer sent whole needs no wake-up until done.
                held.append(text)

        def should_stop():
            return cancel.is_set() or matcher.stopped

        def work():
            t0 = time.monotonic()

            def limited():
                if time.monotonic() - t0 > time_limit_s:
                    cancel.set()
                return should_stop()
            try:
                out = backend.generate(req, emit, limited)
                rest = "".join(held) + matcher.flush()
                if rest:
                    loop.call_soon_threadsafe(queue.put_nowait, ("text", rest))
                if matcher.stopped:
                    out.finish_reason = "stop"
                loop.call_soon_threadsafe(queue.put_nowait, ("done", out))
            except Exception as exc:  # noqa: BLE001 - reported to the client, server lives
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        def usage(out: Outcome) -> dict:
            return {"prompt_tokens": out.prompt_tokens,
                    "completion_tokens": out.completion_tokens,
                    "total_tokens": out.prompt_tokens + out.completion_tokens}

        def extension(out: Outcome, wall: float) -> dict:
            ext = {"backend": backend.name, "wall_s": round(wall, 4), **out.extension,
                   "wafer": figures.request(out.prompt_tokens, out.completion_tokens)}
            if cancel.is_set():
                ext["cancelled"] = True
            return ext

        def choice(text, finish, delta: bool):
            if chat:
                body = {"delta": {"content": text}} if delta else \
                    {"message": {"role": "assistant", "content": text}}
            else:
                body = {"text": text, "logprobs": None}
            return {"index": 0, **body, "finish_reason": finish}

        async def generation():
            """The request's events, in order: ("text", str)..., then ("done", Outcome,
            wall seconds) or ("error", exception); one request at a time."""
            async with lock:
                t0 = time.monotonic()
                task = loop.run_in_executor(None, work)
                try:
                    while True:
                        what, value = await queue.get()
                        if what == "text":
                            yield what, value, None
                        else:
                            yield what, value, time.monotonic() - t0
                            return
                finally:
                    cancel.set()          # a client that went away stops the generation
                    await task

        def head() -> dict:
            return {"id": rid, "created": int(time.time()), "model": backend.model_name}

        def failure(exc) -> RequestError:
            return RequestError(f"the backend failed: {exc}"[:500], status=500,
                                kind="server_error")

        async def events():
            obj = kind + (".chunk" if chat else "")
            async for what, value, wall in generation():
                if what == "text":
                    chunk = {**head(), "object": obj, "choices": [choice(value, None, True)]}
                elif what == "done":
                    chunk = {**head(), "object": obj,
                             "choices": [choice("", value.finish_reason, True)],
                             "usage": usage(value), "sparktile": extension(value, wall)}
                else:
                    chunk = failure(value).body()
                yield f"data: {json.dumps(chunk)}\n\n"
            if what == "done":
                yield "data: [DONE]\n\n"

        if req.stream:
            return StreamingResponse(events(), media_type="text/event-stream")
        pieces = []
        async for what, value, wall in generation():
            if what == "text":
                pieces.append(value)
            elif what == "error":
                return error(failure(value))
            else:
                return JSONResponse({**head(), "object": kind,
                                     "choices": [choice("".join(pieces), value.finish_reason,
                                                        False)],
                                     "usage": usage(value),
                                     "sparktile": extension(value, wall)})

    async def completions(request):
        return await handle(request, chat=False)

    async def chat_completions(request):
        return await handle(request, chat=True)

    async def not_found(request, exc):
        return error(RequestError(f"no route {request.url.path}; this server has GET "
                                  f"/v1/models, POST /v1/completions, POST "
                                  f"/v1/chat/completions", status=404, code="not_found"))

    async def bad_method(request, exc):
        return error(RequestError(f"{request.method} is not allowed on {request.url.path}",
                                  status=405, code="method_not_allowed"))

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ], exception_handlers={404: not_found, 405: bad_method})


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", start_timeout: float = 30.0):
    """``app`` served by uvicorn in a thread on a free port of ``host``; yields the base URL
    (for tests and benchmarks: a real server, real sockets, the real client)."""
    import uvicorn
    srv = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start within {start_timeout} s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def serve_command_factory():
    import click

    from .cosim.cli import mesh_option
    from .errors import UserError

    @click.command("serve")
    @click.option("--backend", type=click.Choice(["golden", "rtl", "board"]),
                  default="golden", show_default=True,
                  help="golden: the numpy model (int8 matmuls); rtl: every matmul on the "
                       "Verilated mesh; board: on a board through --board-port.")
    @mesh_option("2x2")
    @click.option("--board-port", default="sim", show_default=True,
                  help="board backend: a serial port, or sim (the virtual board).")
    @click.option("--board", "board_name", default="ulx3s-85f", show_default=True,
                  help="board backend: which board (baud rate, virtual board's mesh).")
    @click.option("--model", default=None, help="Model path (default: the shipped model).")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
    @click.option("--wafer", default="wse3", show_default=True,
                  help="Wafer preset for the per-request extrapolation.")
    @click.option("--time-limit", type=click.FloatRange(0.1, 86400.0), default=600.0,
                  show_default=True, help="Seconds a request may generate.")
    def serve_command(backend, mesh, board_port, board_name, model, host, port, wafer,
                      time_limit):
        """An OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions)."""
        import uvicorn

        from .hdl.mesh import MeshShape
        from .scripts.perf.hardware import PRESETS
        if wafer not in PRESETS:
            raise UserError(f"--wafer {wafer!r} is not a preset; allowed: {', '.join(PRESETS)}")
        if backend == "golden":
            be = GoldenBackend(model)
        elif backend == "rtl":
            be = RtlBackend(MeshShape(mesh.rows, mesh.cols), model)
        else:
            try:
                be = BoardServeBackend(board_port, board_name, model=model)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        click.echo(f"serving {be.model_name} ({be.name} backend) on http://{host}:{port}/v1",
                   err=True)
        try:
            uvicorn.run(create_app(be, wafer=wafer, time_limit_s=time_limit), host=host,
                        port=port, log_level="warning")
        finally:
            if hasattr(be, "close"):
                be.close()          # the simulator (or the serial port) shut down cleanly

    return serve_command


serve_command = serve_command_factory()
