"""Fast stand-ins with exactly the Generator surface of model/generator.py, for unit tests of bot code."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model import AdapterInfo, GenerationRequest, GenerationResult, GeneratorBusy, GeneratorClosed, GeneratorInfo


class CharTokenizer:
    """One token per character: token budgets in tests are easy to reason about."""

    all_special_tokens: tuple[str, ...] = ()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


class FakeStream:
    """AsyncIterator[str] of text deltas; `result` is set once iteration has finished."""

    def __init__(self, gen: FakeGenerator, req: GenerationRequest) -> None:
        self.gen, self.req = gen, req
        self.result: GenerationResult | None = None
        self.closed = False
        self._iter = self._run()

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> str:
        return await self._iter.__anext__()

    async def aclose(self) -> None:
        self.closed = True
        self.gen.closed_streams += 1
        await self._iter.aclose()

    async def _run(self):
        gen, req = self.gen, self.req
        start = time.perf_counter()
        gen.running += 1
        try:
            if gen.block is not None:
                if gen.on_block is not None:
                    gen.on_block(req)
                await gen.block.wait()
            if gen.fail is not None:
                raise gen.fail
            text = gen.answer_for(req)
            pieces = [text[i : i + gen.chunk] for i in range(0, len(text), gen.chunk)] or [""]
            ttft = 0.0
            for i, piece in enumerate(pieces):
                if gen.delay:
                    await asyncio.sleep(gen.delay)
                else:
                    await asyncio.sleep(0)
                if i == 0:
                    ttft = time.perf_counter() - start
                if piece:
                    yield piece
            self.result = GenerationResult(
                text=text, seed=req.seed, prompt_tokens=len(req.prompt), new_tokens=len(text), finish_reason="stop",
                ttft_s=ttft, total_s=time.perf_counter() - start, adapter=gen.adapter,
            )
        finally:
            gen.running -= 1


class FakeGenerator:
    """Answers from a script (a list, used in order, the last one repeating) or a function of (prompt, seed).

    `busy=True` makes stream() raise GeneratorBusy; `fail=exc` makes iteration raise it; `delay` sleeps before each
    delta; `block` (an asyncio.Event) holds every generation until it is set; `on_call(req)` runs synchronously inside
    stream(), before anything is yielded. Every request is recorded in `requests` (prompts in `prompts`).
    """

    def __init__(
        self,
        answers: Sequence[str] | Callable[[str, int], str] = ("김치찌개 어때요?",),
        *,
        max_context: int = 512,
        chunk: int = 4,
        delay: float = 0.0,
        busy: bool = False,
        fail: BaseException | None = None,
        block: asyncio.Event | None = None,
        on_block: Callable[[GenerationRequest], None] | None = None,
        on_call: Callable[[GenerationRequest], None] | None = None,
    ) -> None:
        self.answers = answers
        self.tokenizer = CharTokenizer()
        self.max_context = max_context
        self.chunk = chunk
        self.delay = delay
        self.busy = busy
        self.fail = fail
        self.block = block
        self.on_block = on_block
        self.on_call = on_call
        self.requests: list[GenerationRequest] = []
        self.adapter = AdapterInfo()
        self.running = 0
        self.closed_streams = 0
        self.is_closed = False
        self._script_pos = 0

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.requests]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.requests]

    def answer_for(self, req: GenerationRequest) -> str:
        if callable(self.answers):
            return self.answers(req.prompt, req.seed)
        index = min(self._script_pos, len(self.answers) - 1)
        self._script_pos += 1
        return self.answers[index]

    def stream(self, req: GenerationRequest) -> FakeStream:
        if self.is_closed:
            raise GeneratorClosed("the generator was closed")
        if self.busy:
            raise GeneratorBusy("queue full (fake)")
        self.requests.append(req)
        if self.on_call is not None:
            self.on_call(req)
        return FakeStream(self, req)

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        stream = self.stream(req)
        async for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    async def reload_adapter(self, path: str | Path) -> AdapterInfo:
        path = Path(path)
        version = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        self.adapter = AdapterInfo(name=path.name, path=str(path), version=version, loaded_at=time.time())
        return self.adapter

    def info(self) -> GeneratorInfo:
        return GeneratorInfo(
            base="fake", adapter=self.adapter, quantization="none", device="cpu", dtype="none",
            max_context=self.max_context, queue_length=0, running=self.running, max_batch_size=1, max_queue=1,
        )

    async def close(self) -> None:
        self.is_closed = True


class FakeCatalog:
    """A DishCatalog stand-in: `names_in(text)` lists the known dishes the text names, in catalog order."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def names_in(self, text: str) -> list[str]:
        return [n for n in self.names if n in text]
