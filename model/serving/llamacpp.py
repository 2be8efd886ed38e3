"""The CPU engine: llama.cpp's server (xllamacpp, in process) behind the same surface as `Generator`.

A folder made by `mechuri convert-gguf` holds the GGUF base and our HF tokenizer. Prompts are sent as token ids
(llama.cpp does not know Polyglot's pre-tokenizer); the server streams text, which it cuts only at whole characters,
and our `TextTracker` applies the stop marker and whitespace rules, as in the torch engine. What the server does
for us: continuous batching over `slots` sequences, a sampler per request seeded with the request's seed, and
prompt caching (`cache_prompt`: a follow-up turn that repeats the last turn's prompt prefills only what is new;
`prompt_cache_mib` keeps evicted prefixes in RAM).

What it cannot do, and what stands in: llama.cpp bans single tokens (`logit_bias`), not phrases, so
`GenerationRequest.avoid` is not applied while sampling. The service's answer-level check (bot/service/drawing.py,
`AnswerDrawer`) watches every streamed answer for avoided dishes and allergen words, stops and resamples with a new
seed, and refuses past its bound, so "다른 거" and allergy bans hold here too, at the price of more resamples.
`min_new_tokens` is not supported either (no caller sets it). Tokens that must never be sampled (special tokens other
than EOS, and the embedding rows past the tokenizer) are banned with `logit_bias`. A byte sequence that is not
UTF-8 (possible with any byte-level model) reaches us as U+FFFD, which the tracker drops: never a broken character.

Adapters stay PEFT folders: each is converted to a GGUF LoRA (cached beside the base by content hash). llama.cpp
loads LoRAs only when a server starts, so `reload_adapter` starts a second server on the same GGUF, sends new
requests to it, and drops the old one once the requests it is running have finished: nothing in flight is dropped,
and every answer comes from one adapter. While both run, memory holds two KV caches and two copies of the weights
(each server loads its own; llama.cpp cannot share a model between servers, and the repacked layout is private even
when the file is mapped): about twice the steady resident memory for the seconds a reload takes.

Memory (docs/decisions.md, "The CPU path"): the weights are read into RAM once (`mmap` off: mapped, the file's
pages count as resident beside the repacked copy), and `kv_tokens` bounds the K/V cache for all slots together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.gguf_convert import cached_lora, read_marker
from model.loading import adapter_version, check_adapter_folder, eos_id_of, tokenizer_from
from model.serving.sampling import TextTracker
from model.serving.streams import GenerationStream, Job
from model.types import (
    MAX_TOP_K,
    AdapterError,
    AdapterInfo,
    GenerationRequest,
    GenerationResult,
    GeneratorBusy,
    GeneratorClosed,
    GeneratorInfo,
    ModelError,
    ModelLoadError,
)

log = logging.getLogger(__name__)
# Our sampling order (model/serving/sampling.py): repetition penalty, temperature, top-k, top-p; min-p off.
SAMPLERS = ["penalties", "top_k", "temperature", "top_p"]


def _kv_type(xl: Any, name: str) -> Any:
    kinds = {"f16": xl.ggml_type.GGML_TYPE_F16, "q8_0": xl.ggml_type.GGML_TYPE_Q8_0}
    if name not in kinds:
        raise ModelLoadError(f"K/V cache type {name!r}: use one of {', '.join(kinds)}")
    return kinds[name]


class _KvPool:
    """The tokens of llama.cpp's shared K/V pool that running requests may still fill. llama.cpp finds out only
    mid-batch that the pool is full, and then fails every running request ("Context size has been exceeded"): so
    a request starts only once its prompt and its whole answer budget fit beside the running ones, and waits in
    arrival order until then (a large request is not overtaken forever by small ones)."""

    def __init__(self, tokens: int) -> None:
        self.tokens, self.free = tokens, tokens
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()

    def reserve(self, need: int, cancelled: Callable[[], bool]) -> bool:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or self.free < need:
                    if cancelled():
                        return False
                    self._cond.wait(0.2)  # woken by release(); the timeout notices a cancelled request
                self.free -= need
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self, need: int) -> None:
        with self._cond:
            self.free += need
            self._cond.notify_all()


@dataclass
class _Engine:
    """One llama.cpp server and the adapter it was started with."""

    server: Any
    adapter: AdapterInfo
    lora: bool
    running: int = 0
    retired: bool = False


class LlamaCppGenerator:
    def __init__(self, folder: str | Path, *, adapter: str | Path | None = None, slots: int = 4,
                 max_queue: int = 64, threads: int | None = None, prompt_cache_mib: int = 1024,
                 repack: bool = True, kv_tokens: int | None = None, kv_unified: bool = False,
                 kv_type: str = "f16", mmap: bool = False) -> None:
        """`slots` sequences decode together, with `kv_tokens` of K/V in all (None: the model's whole context per
        slot; 5.8B in f16 K/V is about 0.46 MB a token, in q8_0 0.24 MB). By default each slot gets its share, at
        most the model's context, and `max_context` (what the service trims prompts to) is that share. With
        `kv_unified` the slots share one pool (llama.cpp's unified KV cache) and any request may use the model's
        whole context: it waits here until the pool has room for its prompt and its `max_new_tokens` (`_KvPool`),
        so the pool never runs out mid-answer; but an answer then depends on where its cells sit in the pool, so a
        seed reproduces its answer only when the pool holds the same (measured on the tiny model). More requests
        than slots wait in the server's queue, up to `max_queue`; beyond that `stream()` raises `GeneratorBusy`. `repack` lets llama.cpp
        copy the weights into its faster AVX2 layout (1.3-1.6x at 5.8B q4_0); with `mmap` off that copy is the
        only one in RAM (on, the file's pages stay mapped besides and count as resident)."""
        self.folder = Path(folder).expanduser()
        marker = read_marker(self.folder)
        if marker is None:
            raise ModelLoadError(f"{self.folder} is not a converted model: run `mechuri convert-gguf MODEL "
                                 f"{self.folder}` first, or set MECHURI_QUANTIZATION to a torch kind")
        try:
            import xllamacpp
        except ImportError as exc:
            raise ModelLoadError("MECHURI_QUANTIZATION=gguf needs xllamacpp (pip install xllamacpp; x86-64 Linux "
                                 "wheels are prebuilt)") from exc
        self._xl = xllamacpp
        self.marker = marker
        self.tokenizer = tokenizer_from(str(self.folder), str(self.folder))
        self.model_context = int(marker["max_context"])
        self.eos = eos_id_of(self.tokenizer)
        self.slots, self.max_queue = slots, max_queue
        self.threads = threads or os.cpu_count() or 1
        self.prompt_cache_mib = prompt_cache_mib
        self.repack, self.mmap = repack, mmap
        self.kv_tokens = kv_tokens or self.model_context * slots
        self.kv_unified = kv_unified
        if kv_unified:
            self.kv_tokens = max(self.kv_tokens, self.model_context)
            self.max_context = self.model_context
        else:
            self.max_context = min(self.kv_tokens // slots, self.model_context)
            self.kv_tokens = self.max_context * slots
        if self.max_context < 16:
            raise ModelLoadError(f"{kv_tokens} K/V tokens for {slots} slots leave no room for a prompt")
        self.kv_type = _kv_type(self._xl, kv_type)
        self._kv = _KvPool(self.kv_tokens) if kv_unified else None
        self._never = self._never_sampled()
        self._lock = threading.Lock()
        self._reload_lock = asyncio.Lock()
        self._inflight = 0
        self.cached_tokens = 0  # prompt tokens the server's prompt cache spared a prefill, in total (logs, tests)
        self._jobs: set[Job] = set()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=slots + max_queue, thread_name_prefix="mechuri-llama")
        self._engine = self._start(Path(adapter).expanduser().resolve() if adapter else None)

    # ----- the async API (model/serving/generator.py's, so bot/service/contract.py's TextGenerator) -----

    def stream(self, request: GenerationRequest) -> GenerationStream:
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self._closed:
                raise GeneratorClosed("the generator is closed: start a new one")
            if self._inflight >= self.slots + self.max_queue:
                raise GeneratorBusy(f"the generator queue is full ({self.max_queue} waiting): try again shortly")
            self._inflight += 1
            self._jobs.add(job)
            engine = self._engine
            engine.running += 1
        self._pool.submit(self._run, job, engine)
        return GenerationStream(job)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.stream(request).to_end()

    async def reload_adapter(self, path: str | Path) -> AdapterInfo:
        """Start a server with the adapter at `path`; new requests go to it, running ones finish on the old."""
        path = Path(path).expanduser().resolve()
        async with self._reload_lock:
            await asyncio.to_thread(check_adapter_folder, path)
            engine = await asyncio.to_thread(self._start, path)
            with self._lock:
                if self._closed:
                    engine.server = None
                    raise GeneratorClosed("the generator is closed: start a new one")
                old, self._engine = self._engine, engine
                old.retired = True
                idle = old.running == 0
            if idle:
                old.server = None
            log.info("adapter %s (version %s) is serving on llama.cpp; started in %.3f s", engine.adapter.name,
                     engine.adapter.version, engine.adapter.load_seconds)
            return engine.adapter

    def info(self) -> GeneratorInfo:
        with self._lock:
            inflight = self._inflight
        return GeneratorInfo(
            base=str(self.folder), adapter=self._engine.adapter, quantization="gguf", device="cpu",
            dtype=str(self.marker["kind"]), max_context=self.max_context, queue_length=max(inflight - self.slots, 0),
            running=min(inflight, self.slots), max_batch_size=self.slots, max_queue=self.max_queue,
        )

    @property
    def adapter(self) -> AdapterInfo:
        return self._engine.adapter

    async def close(self) -> None:
        """Stop taking requests, stop the running ones (their streams end with `GeneratorClosed`), free the server."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
        for job in jobs:
            job.cancelled = True
        await asyncio.to_thread(self._pool.shutdown, True)
        self._engine.server = None

    # ----- starting servers -----

    def _start(self, adapter: Path | None) -> _Engine:
        started = time.perf_counter()
        xl = self._xl
        params = xl.CommonParams()
        params.model.path = str(self.folder / self.marker["gguf"])
        params.n_parallel = self.slots
        params.n_ctx = self.kv_tokens
        params.kv_unified = self.kv_unified
        params.cache_type_k = params.cache_type_v = self.kv_type
        params.load_mode = xl.llama_load_mode.LLAMA_LOAD_MODE_MMAP if self.mmap else xl.llama_load_mode.LLAMA_LOAD_MODE_NONE
        params.cont_batching = True
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_ram_mib = self.prompt_cache_mib
        params.no_extra_bufts = not self.repack
        params.warmup = False
        params.verbosity = -1
        # The server also listens on a localhost port; a key nobody knows keeps other local users off it.
        params.api_keys = [secrets.token_hex(16)]
        info = AdapterInfo()
        if adapter is not None:
            gguf_lora = cached_lora(adapter, self.folder, self.marker)
            params.lora_adapters = [xl.CommonAdapterLoraInfo(str(gguf_lora), 1.0)]
        try:
            server = xl.Server(params)
        except Exception as exc:
            if adapter is not None:
                raise AdapterError(f"llama.cpp could not load adapter {adapter.name} ({exc})") from exc
            raise ModelLoadError(f"llama.cpp could not load {params.model.path} ({exc}): convert it again") from exc
        if adapter is not None:
            info = AdapterInfo(name=adapter.name, path=str(adapter), version=adapter_version(adapter),
                               load_seconds=time.perf_counter() - started, loaded_at=time.time())
        return _Engine(server, info, adapter is not None)

    def _never_sampled(self) -> list[list[Any]]:
        """Special tokens other than EOS, and embedding rows past the tokenizer: never sampled (as in the torch
        engine)."""
        rows = int(self.marker.get("vocab_rows") or len(self.tokenizer))
        special = {*self.tokenizer.all_special_ids, *self.tokenizer.added_tokens_decoder} - {self.eos}
        return [[i, False] for i in sorted(special | set(range(len(self.tokenizer), rows)))]

    # ----- one request, on a pool thread -----

    def _body(self, request: GenerationRequest, prompt: list[int], engine: _Engine) -> dict[str, Any]:
        return {
            "prompt": prompt, "n_predict": max(min(request.max_new_tokens, self.max_context - len(prompt)), 1),
            "stream": True, "seed": request.seed, "temperature": request.temperature,
            "top_k": request.top_k or MAX_TOP_K, "top_p": request.top_p, "min_p": 0.0,
            "repeat_penalty": request.repetition_penalty, "repeat_last_n": self.max_context, "samplers": SAMPLERS,
            "cache_prompt": True, "logit_bias": self._never, "lora": [{"id": 0, "scale": 1.0}] if engine.lora else [],
        }

    def _run(self, job: Job, engine: _Engine) -> None:
        outcome: GenerationResult | Exception | None = None
        try:
            if not job.cancelled:
                outcome = self._generate(job, engine)
        except Exception as exc:  # one broken request must not take the others down
            log.exception("llama.cpp generation failed")
            outcome = exc if isinstance(exc, ModelError) else ModelError(f"generation failed: {exc!r}")
        finally:
            with self._lock:  # before the result goes out: info() never counts a finished request as running
                self._inflight -= 1
                self._jobs.discard(job)
                engine.running -= 1
                if engine.retired and engine.running == 0:
                    engine.server = None  # the old adapter's server: its last request has finished
        if outcome is not None:
            job.send(outcome)

    def _generate(self, job: Job, engine: _Engine) -> GenerationResult:
        request = job.request
        ids = self.tokenizer.encode(request.prompt, add_special_tokens=False) or [self.eos]
        room = max(self.max_context - request.max_new_tokens, 1)
        prompt = ids[-room:]  # the safety net: build_prompt trims properly before this
        tracker = TextTracker(self.tokenizer, request.stop)
        seen: dict[str, Any] = {"chunks": 0, "first": None, "final": None, "error": None,
                                "truncated": len(ids) > room}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if "error" in chunk:
                seen["error"] = chunk["error"]
                return True
            choice = (chunk.get("choices") or [{}])[0]
            if choice.get("finish_reason"):
                seen["final"] = chunk
            piece = choice.get("text") or ""
            if piece:
                seen["chunks"] += 1
                seen["first"] = seen["first"] or time.perf_counter()
                delta = tracker.add_text(piece)
                if delta:
                    job.send(delta)
            return job.cancelled or tracker.stopped  # True stops the server's task and frees its slot

        body = self._body(request, prompt, engine)
        need = len(prompt) + body["n_predict"]
        if self._kv is not None and not self._kv.reserve(need, lambda: job.cancelled):
            return self._result(job, engine, tracker, prompt, seen)  # cancelled while waiting for room
        try:
            answer = engine.server.handle_completions(body, on_chunk)
        finally:
            if self._kv is not None:
                self._kv.release(need)
        if isinstance(answer, dict) and "error" in answer:
            seen["error"] = answer["error"]
        if seen["error"] is not None:
            raise ModelError(f"llama.cpp refused the request: {str(seen['error'])[:300]}")
        return self._result(job, engine, tracker, prompt, seen)

    def _result(self, job: Job, engine: _Engine, tracker: TextTracker, prompt: list[int],
                seen: dict[str, Any]) -> GenerationResult:
        final = seen["final"] or {}
        reason = (final.get("choices") or [{}])[0].get("finish_reason")
        usage = final.get("usage") or {}
        new_tokens = int(usage.get("completion_tokens") or seen["chunks"])
        with self._lock:
            self.cached_tokens += int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        if tracker.stopped:
            finish = "stop"
        else:
            finish = "eos" if reason == "stop" else "length"  # no stop words are sent: "stop" means EOS
            delta = tracker.finish()
            if delta:
                job.send(delta)
        end = time.perf_counter()
        # llama.cpp streams text: the ids of pieces it held back for UTF-8 are not reported, so none are given.
        return GenerationResult(
            text=tracker.final or "", seed=job.request.seed, prompt_tokens=len(prompt), new_tokens=new_tokens,
            finish_reason=finish, ttft_s=(seen["first"] or end) - job.submitted, total_s=end - job.submitted,
            adapter=engine.adapter, prompt_truncated=seen["truncated"],
        )
