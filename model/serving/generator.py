"""The in-process generator: continuous batching, seeded sampling, streaming and hot adapter reload.

All model work runs on one dedicated worker thread, so the event loop never blocks. The worker keeps a fixed set of
slots (model/serving/decode.py): at each step boundary, waiting requests take free slots (their prompts are prefilled
together), then one decode step gives every busy slot its next token. A request that arrives while a long answer is
being written gets its first token a step later, not after that answer. A finished or cancelled request frees its
slot at once. The queue is bounded: when it is full, `stream()` raises `GeneratorBusy` at once.

An adapter reload is queued like a request: new requests wait while the running ones finish, then the adapter is
swapped and they start. So every answer comes from one adapter (the one its result names), no step ever runs on a
half-swapped model, and if loading fails the old adapter keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.loading import LoadedModel, attach_adapter, check_adapter_folder
from model.serving.bans import PhraseBan, TokenBytes
from model.serving.decode import MIN_WINDOW, DecodeBatch, Newcomer, bucket
from model.serving.sampling import TextTracker
from model.serving.streams import GenerationStream, Job, settle
from model.types import (
    AdapterError,
    AdapterInfo,
    GenerationRequest,
    GenerationResult,
    GeneratorBusy,
    GeneratorClosed,
    GeneratorInfo,
    ModelError,
)

log = logging.getLogger(__name__)
ADMISSIONS = ("continuous", "static")


@dataclass
class _Control:
    action: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class Generator:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        batch_window_ms: float = 2.0,
        merge_adapter: bool | None = None,
        admission: str = "continuous",
        capture: bool | None = None,
        prefix_cache_mib: int = 0,
    ) -> None:
        """`max_batch_size` slots decode together. `admission="static"` admits only into an empty batch (a batch runs
        to its end first), which is how the generator worked before continuous batching; benchmarks compare the two.
        `capture` (default: on CUDA) replays the decode step as CUDA graphs. `prefix_cache_mib` > 0 keeps finished
        requests' K/V up to that size, so a prompt that repeats one (a follow-up turn) prefills only what is new."""
        if admission not in ADMISSIONS:
            raise ValueError(f"admission must be one of {', '.join(ADMISSIONS)}")
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.max_context = loaded.max_context
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_window_s = batch_window_ms / 1000
        self.admission = admission
        self.capture = loaded.device.startswith("cuda") if capture is None else capture
        self.prefix_bytes = prefix_cache_mib * 2**20
        # Merging the adapter into fp weights makes serving as fast as the bare base; on a quantized base it is lossy.
        self.merge_adapter = loaded.quantization == "none" if merge_adapter is None else merge_adapter
        self._model = loaded.model
        self._adapter = loaded.adapter
        self._peft_name: str | None = "v1" if loaded.adapter.name else None
        self._reloads = 1
        self._pending: collections.deque[Job] = collections.deque()
        self._controls: collections.deque[_Control] = collections.deque()
        self._closed = False
        self._cv = threading.Condition()
        self._vocab_bytes: TokenBytes | None = None  # built with the slots, on the first request
        self._batch: DecodeBatch | None = None
        self._active: dict[int, _Active] = {}  # slot → the request in it
        if self._peft_name and self.merge_adapter:
            self._model.merge_adapter()
        self._worker = threading.Thread(target=self._work, name="mechuri-generator", daemon=True)
        self._worker.start()

    # ----- the async API -----

    def stream(self, request: GenerationRequest) -> GenerationStream:
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._cv:
            if self._closed:
                raise GeneratorClosed("the generator is closed: start a new one")
            if len(self._pending) >= self.max_queue:
                raise GeneratorBusy(f"the generator queue is full ({self.max_queue} waiting): try again shortly")
            self._pending.append(job)
            self._cv.notify()
        return GenerationStream(job)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.stream(request).to_end()

    async def reload_adapter(self, path: str | Path) -> AdapterInfo:
        """Load the adapter at `path` beside the current one and swap it in between requests."""
        path = Path(path).expanduser().resolve()
        # Validate off the worker first, so a broken folder never pauses generation.
        await asyncio.to_thread(check_adapter_folder, path, self._model)
        return await self._control(lambda: self._swap_adapter(path))

    def info(self) -> GeneratorInfo:
        return GeneratorInfo(
            base=self.loaded.base, adapter=self._adapter, quantization=self.loaded.quantization,
            device=self.loaded.device, dtype=self.loaded.dtype, max_context=self.max_context,
            queue_length=len(self._pending), running=len(self._active), max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
        )

    @property
    def adapter(self) -> AdapterInfo:
        return self._adapter

    async def close(self) -> None:
        with self._cv:
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for job in waiting:
            job.send(GeneratorClosed("the generator was closed before this request ran"))
        await asyncio.to_thread(self._worker.join, 30)

    async def _control(self, action: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        control = _Control(action, loop, loop.create_future())
        with self._cv:
            if self._closed:
                raise GeneratorClosed("the generator is closed: start a new one")
            self._controls.append(control)
            self._cv.notify()
        return await control.future

    # ----- the worker thread -----

    def _work(self) -> None:
        while True:
            control: _Control | None = None
            newcomers: list[Job] = []
            with self._cv:
                if not self._active:
                    self._cv.wait_for(lambda: self._pending or self._controls or self._closed)
                    if self._closed and not self._pending:
                        return
                    if self._pending and not self._controls and self.batch_window_s > 0:
                        # Requests that arrive together start together: one prefill instead of several.
                        self._cv.wait_for(lambda: len(self._pending) >= self.max_batch_size or self._closed,
                                          timeout=self.batch_window_s)
                if self._controls and not self._active:
                    control = self._controls.popleft()
                elif not self._controls and (self.admission == "continuous" or not self._active):
                    free = self.max_batch_size - len(self._active)
                    newcomers = [self._pending.popleft() for _ in range(min(free, len(self._pending)))]
            if control is not None:
                self._run_control(control)
                continue
            try:
                self._advance([job for job in newcomers if not job.cancelled])
            except Exception as exc:  # one broken step must not kill the worker
                log.exception("generation failed for %d request(s)", len(self._active) + len(newcomers))
                error = exc if isinstance(exc, ModelError) else ModelError(f"generation failed: {exc!r}")
                for job in {id(j): j for j in [*(a.job for a in self._active.values()), *newcomers]}.values():
                    job.send(error)
                self._batch = None  # start over with fresh slots
                self._active.clear()

    @torch.inference_mode()
    def _advance(self, newcomers: list[Job]) -> None:
        """Admit the newcomers, then run one decode step for everyone (either part may be empty)."""
        batch = self._decode_batch()
        if newcomers:
            admitted = [self._admit(job) for job in newcomers]
            self._set_bans([a for a in admitted if a.ban is not None])
            tokens = batch.prefill([Newcomer(a.slot, a.job.request, a.prompt_ids) for a in admitted])
            for a, token in zip(admitted, tokens.tolist(), strict=True):
                self._take(a, token)
        if not self._active:
            return
        busy = list(self._active.values())
        self._set_bans([a for a in busy if a.ban is not None])
        rows = bucket(max(self._active) + 1, 1, self.max_batch_size)
        window = bucket(max(a.prompt_tokens + a.new_tokens for a in busy), MIN_WINDOW, self.max_context)
        chosen = batch.step(rows, window, sample=any(a.job.request.temperature > 0 for a in busy)).tolist()
        for a in busy:
            self._take(a, chosen[a.slot])

    def _decode_batch(self) -> DecodeBatch:
        if self._batch is None:
            tok = self.tokenizer
            vocab_rows = int(self._model.get_output_embeddings().weight.shape[0])
            self._batch = DecodeBatch(
                self._model, slots=self.max_batch_size, context=self.max_context, vocab_rows=vocab_rows,
                token_bytes=self._token_bytes().by_id, eos=self.loaded.eos_token_id, pad=self.loaded.pad_token_id,
                never=[*tok.all_special_ids, *tok.added_tokens_decoder], device=self.loaded.device,
                capture=self.capture, prefix_bytes=self.prefix_bytes,
            )
        return self._batch

    def _admit(self, job: Job) -> _Active:
        request = job.request
        ids = self.tokenizer.encode(request.prompt, add_special_tokens=False) or [self.loaded.eos_token_id]
        room = max(self.max_context - request.max_new_tokens, 1)
        slot = next(i for i in range(self.max_batch_size) if i not in self._active)
        ban = PhraseBan(self._token_bytes(), request.avoid) if request.avoid else None
        # ids[-room:] is the safety net; build_prompt trims properly before this.
        active = _Active(job, slot, ids[-room:], len(ids) > room, TextTracker(self.tokenizer, request.stop), ban)
        self._active[slot] = active
        return active

    def _set_bans(self, rows: list[_Active]) -> None:
        for a in rows:
            self._batch.ban(a.slot, a.ban.banned(a.tracker.ids))

    def _take(self, a: _Active, token: int) -> None:
        """One chosen token for one request: stream it, or finish the request and free its slot."""
        job, tracker = a.job, a.tracker
        if job.cancelled:
            self._free(a)
            return
        a.new_tokens += 1
        if a.first_token_at is None:
            a.first_token_at = time.perf_counter()
        if token == self.loaded.eos_token_id:
            self._finish(a, "eos")
            return
        delta = tracker.add(token)
        if delta:
            job.send(delta)
        if tracker.stopped:
            self._finish(a, "stop", final_delta_sent=True)
        elif a.new_tokens >= job.request.max_new_tokens or a.prompt_tokens + a.new_tokens >= self.max_context:
            self._finish(a, "length")  # the slot's cache ends at the context length

    def _free(self, a: _Active) -> None:
        del self._active[a.slot]
        self._batch.release(a.slot)

    def _finish(self, a: _Active, reason: str, final_delta_sent: bool = False) -> None:
        if self._batch.prefix is not None:
            cached = int(self._batch.state.position[a.slot])  # prompt + the answer's tokens fed so far
            self._batch.keep(a.slot, [*a.prompt_ids, *a.tracker.ids][:cached])
        self._free(a)
        job, tracker = a.job, a.tracker
        if not final_delta_sent:
            delta = tracker.finish()
            if delta:
                job.send(delta)
        end = time.perf_counter()
        job.send(GenerationResult(
            text=tracker.final or "", seed=job.request.seed, prompt_tokens=len(a.prompt_ids), new_tokens=a.new_tokens,
            finish_reason=reason, ttft_s=(a.first_token_at or end) - job.submitted, total_s=end - job.submitted,
            adapter=self._adapter, prompt_truncated=a.truncated,
            token_ids=(*tracker.ids, self.loaded.eos_token_id) if reason == "eos" else tuple(tracker.ids),
        ))

    def _run_control(self, control: _Control) -> None:
        try:
            value = control.action()
        except BaseException as exc:
            control.loop.call_soon_threadsafe(settle, control.future, None, exc)
        else:
            control.loop.call_soon_threadsafe(settle, control.future, value, None)

    def _swap_adapter(self, path: Path) -> AdapterInfo:
        old = self._peft_name
        new = f"v{self._reloads + 1}"
        if old and self.merge_adapter:
            self._model.unmerge_adapter()
        try:
            model, info = attach_adapter(self._model, path, adapter_name=new)
            model.set_adapter(new)
        except Exception as exc:
            if hasattr(self._model, "peft_config") and new in self._model.peft_config:
                self._model.delete_adapter(new)
            if old:
                self._model.set_adapter(old)
                if self.merge_adapter:
                    self._model.merge_adapter()
            raise exc if isinstance(exc, AdapterError) else AdapterError(f"adapter {path.name} failed: {exc}") from exc
        if old:
            model.delete_adapter(old)
        if self.merge_adapter:
            model.merge_adapter()
        self._model, self._peft_name, self._adapter = model, new, info
        self._reloads += 1
        if self._batch is not None:  # the slots keep their memory; only the model under them changed
            self._batch.model = model
            self._batch.forget_captures()
            if self._batch.prefix is not None:
                self._batch.prefix.clear()  # kept K/V were computed with the old adapter
        log.info("adapter %s (version %s) is serving; loaded in %.3f s", info.name, info.version, info.load_seconds)
        return info

    def _token_bytes(self) -> TokenBytes:
        if self._vocab_bytes is None:
            self._vocab_bytes = TokenBytes(self.tokenizer)
        return self._vocab_bytes


@dataclass
class _Active:
    """A request in a slot: what the host keeps of it between steps."""

    job: Job
    slot: int
    prompt_ids: list[int]
    truncated: bool
    tracker: TextTracker
    ban: PhraseBan | None
    new_tokens: int = 0
    first_token_at: float | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

