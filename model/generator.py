"""The in-process generator: seeded sampling, streaming, batching and hot adapter reload.

All model work runs on one dedicated worker thread, so the event loop never blocks. Requests that arrive together are
batched (left padding, attention masks, per-row seeds and sampling parameters). The queue is bounded: when it is full,
`stream()` raises `GeneratorBusy` at once. An adapter reload is queued like a request and runs between batches, so no
generation ever runs on a half-swapped model; if loading fails, the old adapter keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.avoid import TokenBytes
from model.loading import LoadedModel, attach_adapter, check_adapter_folder, load_model
from model.sampling import BatchSampler, TextTracker
from model.types import (
    AdapterInfo,
    GenerationRequest,
    GenerationResult,
    GeneratorBusy,
    GeneratorClosed,
    GeneratorInfo,
    ModelError,
)

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    def send(self, item: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)


@dataclass
class _Control:
    action: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class GenerationStream(AsyncIterator[str]):
    """Text deltas of one generation; `result` is set once the stream has ended."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.result: GenerationResult | None = None

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        if self.result is not None:
            raise StopAsyncIteration
        item = await self._job.outbox.get()
        if isinstance(item, GenerationResult):
            self.result = item
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self._job.cancelled = True


class Generator:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        batch_window_ms: float = 2.0,
        merge_adapter: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.max_context = loaded.max_context
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_window_s = batch_window_ms / 1000
        # Merging the adapter into fp weights makes serving as fast as the bare base; on a quantized base it is lossy.
        self.merge_adapter = loaded.quantization == "none" if merge_adapter is None else merge_adapter
        self._model = loaded.model
        self._adapter = loaded.adapter
        self._peft_name: str | None = "v1" if loaded.adapter.name else None
        self._reloads = 1
        self._pending: collections.deque[_Job] = collections.deque()
        self._controls: collections.deque[_Control] = collections.deque()
        self._running = 0
        self._closed = False
        self._cv = threading.Condition()
        self._started = time.time()
        self._vocab_bytes: TokenBytes | None = None  # built on the first request that avoids phrases
        self._suppress = [loaded.pad_token_id] if loaded.pad_token_id != loaded.eos_token_id else []
        if self._peft_name and self.merge_adapter:
            self._model.merge_adapter()
        self._worker = threading.Thread(target=self._work, name="mechuri-generator", daemon=True)
        self._worker.start()

    @classmethod
    def from_pretrained(cls, base: str, *, adapter: str | Path | None = None, quantization: str = "none",
                        device: str | None = None, **kwargs: Any) -> Generator:
        return cls(load_model(base, adapter=adapter, quantization=quantization, device=device), **kwargs)

    # ----- the async API -----

    def stream(self, request: GenerationRequest) -> GenerationStream:
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._cv:
            if self._closed:
                raise GeneratorClosed("the generator is closed: start a new one")
            if len(self._pending) >= self.max_queue:
                raise GeneratorBusy(f"the generator queue is full ({self.max_queue} waiting): try again shortly")
            self._pending.append(job)
            self._cv.notify()
        return GenerationStream(job)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        stream = self.stream(request)
        try:
            async for _ in stream:
                pass
        except asyncio.CancelledError:
            await stream.aclose()
            raise
        assert stream.result is not None
        return stream.result

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
            queue_length=len(self._pending), running=self._running, max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
        )

    @property
    def adapter(self) -> AdapterInfo:
        return self._adapter

    @property
    def uptime_s(self) -> float:
        return time.time() - self._started

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
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._controls or self._closed)
                if self._controls:
                    control = self._controls.popleft()
                    batch: list[_Job] = []
                elif self._pending:
                    control = None
                    if len(self._pending) < self.max_batch_size and self.batch_window_s > 0:
                        self._cv.wait_for(lambda: len(self._pending) >= self.max_batch_size or self._closed,
                                          timeout=self.batch_window_s)
                    batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch_size))]
                    self._running = len(batch)
                else:
                    return
            if control is not None:
                self._run_control(control)
                continue
            try:
                self._run_batch([job for job in batch if not job.cancelled])
            except Exception as exc:  # one broken batch must not kill the worker
                log.exception("generation failed for a batch of %d", len(batch))
                error = exc if isinstance(exc, ModelError) else ModelError(f"generation failed: {exc!r}")
                for job in batch:
                    job.send(error)
            finally:
                self._running = 0

    def _run_control(self, control: _Control) -> None:
        try:
            value = control.action()
        except BaseException as exc:
            control.loop.call_soon_threadsafe(_settle, control.future, None, exc)
        else:
            control.loop.call_soon_threadsafe(_settle, control.future, value, None)

    def _swap_adapter(self, path: Path) -> AdapterInfo:
        from model.types import AdapterError

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
        log.info("adapter %s (version %s) is serving; loaded in %.3f s", info.name, info.version, info.load_seconds)
        return info

    @torch.inference_mode()
    def _run_batch(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        device = self.loaded.device
        eos, pad = self.loaded.eos_token_id, self.loaded.pad_token_id
        requests = [job.request for job in jobs]
        prompts: list[list[int]] = []
        truncated: list[bool] = []
        for req in requests:
            ids = self.tokenizer.encode(req.prompt, add_special_tokens=False) or [eos]
            room = max(self.max_context - req.max_new_tokens, 1)
            truncated.append(len(ids) > room)
            prompts.append(ids[-room:])  # the safety net; build_prompt trims properly before this
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        sampler = BatchSampler.for_requests(requests, device, self._suppress,
                                            self._token_bytes() if any(r.avoid for r in requests) else None)
        trackers = [TextTracker(self.tokenizer, req.stop) for req in requests]
        new_tokens = [0] * len(jobs)
        first_token_at: list[float | None] = [None] * len(jobs)
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        rows = list(range(len(jobs)))  # batch row → job index, for the rows still running
        seen = input_ids
        step_ids, step_pos = input_ids, position_ids
        while rows:
            out = self._model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                              cache=cache, use_cache=True, logits_to_keep=1)
            young = [b for b, j in enumerate(rows) if new_tokens[j] < requests[j].min_new_tokens]
            chosen = sampler.next_tokens(out.logits[:, -1, :], seen, young, eos, [trackers[j].ids for j in rows])
            chosen_list = chosen.tolist()
            now = time.perf_counter()
            keep: list[int] = []
            for b, j in enumerate(rows):
                job, tracker, token = jobs[j], trackers[j], chosen_list[b]
                if job.cancelled:
                    continue
                new_tokens[j] += 1
                if first_token_at[j] is None:
                    first_token_at[j] = now
                if token == eos:
                    self._finish(job, tracker, "eos", len(prompts[j]), new_tokens[j], first_token_at[j], truncated[j])
                    continue
                delta = tracker.add(token)
                if delta:
                    job.send(delta)
                if tracker.stopped:
                    self._finish(job, tracker, "stop", len(prompts[j]), new_tokens[j], first_token_at[j],
                                 truncated[j], final_delta_sent=True)
                elif new_tokens[j] >= job.request.max_new_tokens:
                    self._finish(job, tracker, "length", len(prompts[j]), new_tokens[j], first_token_at[j],
                                 truncated[j])
                else:
                    keep.append(b)
            if len(keep) < len(rows) and keep:
                # Drop finished rows, so short answers don't keep paying for long ones.
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                chosen, mask, seen = chosen[index], mask[index], seen[index]
                step_pos = step_pos[index]
                sampler = sampler.select(index)
            rows = [rows[b] for b in keep]
            if not rows:
                break
            step_ids = chosen.unsqueeze(1)
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            seen = torch.cat([seen, step_ids], dim=1)

    def _token_bytes(self) -> TokenBytes:
        if self._vocab_bytes is None:
            self._vocab_bytes = TokenBytes(self.tokenizer)
        return self._vocab_bytes

    def _finish(self, job: _Job, tracker: TextTracker, reason: str, prompt_tokens: int, new_tokens: int,
                first_token_at: float | None, truncated: bool, final_delta_sent: bool = False) -> None:
        if not final_delta_sent:
            delta = tracker.finish()
            if delta:
                job.send(delta)
        end = time.perf_counter()
        job.send(GenerationResult(
            text=tracker.final or "", seed=job.request.seed, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
            finish_reason=reason, ttft_s=(first_token_at or end) - job.submitted, total_s=end - job.submitted,
            adapter=self._adapter, prompt_truncated=truncated,
        ))


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
