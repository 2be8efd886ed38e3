"""Row formats of the dataset pipeline and a forgiving JSONL reader.

Two formats:
- Self-Instruct seed tasks (`id, name, instruction, instances[{input, output}], is_classification`), written by us.
- Alpaca rows (`instruction, input, output`): what `generate` writes, `filter` keeps and `export` hands to training.

The reader never stops at a bad line: it reports `path:line: why` and goes on, because one truncated line at the end
of a crashed run must not cost the rest of the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

ALPACA_FIELDS = ("instruction", "input", "output")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only spaces")
    return value


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = ""
    output: str

    _check_output = field_validator("output")(_not_blank)


class SeedTask(BaseModel):
    """One hand-written Self-Instruct seed task."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    instruction: str
    instances: list[Instance] = Field(min_length=1)
    is_classification: bool = False

    _check_instruction = field_validator("instruction")(_not_blank)

    def to_alpaca_rows(self) -> list[AlpacaRow]:
        return [AlpacaRow(instruction=self.instruction, input=i.input, output=i.output) for i in self.instances]


class AlpacaRow(BaseModel):
    """One training example. Extra keys (e.g. a `reason` in a dropped-rows file) are ignored on read."""

    model_config = ConfigDict(extra="ignore")

    instruction: str
    input: str = ""
    output: str

    _check_instruction = field_validator("instruction")(_not_blank)
    _check_output = field_validator("output")(_not_blank)

    def question(self) -> str:
        """The user's side of the row: what near-duplicate checks compare."""
        return f"{self.instruction}\n{self.input}" if self.input.strip() else self.instruction

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in ALPACA_FIELDS}, ensure_ascii=False)


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    error: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.error}"


Model = TypeVar("Model", bound=BaseModel)


def _short_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "row"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def read_jsonl(
    path: str | Path, model: type[Model], bad_lines: list[BadLine] | None = None
) -> Iterator[tuple[int, Model]]:
    """Yield (1-based line number, validated row) for each good line of `path`.

    Bad lines (not JSON, not an object, failing the schema) are logged with their line number, appended to
    `bad_lines` if given, and skipped. Blank lines are skipped silently.
    """
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            error = None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                error = f"not valid JSON ({exc.msg} at column {exc.colno})"
            else:
                if not isinstance(obj, dict):
                    error = f"expected a JSON object, got {type(obj).__name__}"
                else:
                    try:
                        row = model.model_validate(obj)
                    except ValidationError as exc:
                        error = f"does not match {model.__name__}: {_short_error(exc)}"
            if error is not None:
                bad = BadLine(str(path), line_no, error)
                log.warning("skipping bad line %s", bad)
                if bad_lines is not None:
                    bad_lines.append(bad)
                continue
            yield line_no, row


def read_alpaca_or_seed(path: str | Path, bad_lines: list[BadLine] | None = None) -> Iterator[tuple[int, AlpacaRow]]:
    """Read a file of Alpaca rows, or of seed tasks (one Alpaca row per instance), told apart by the first row."""
    path = Path(path)
    if _first_row_keys(path) >= {"instruction", "instances"}:
        for line_no, task in read_jsonl(path, SeedTask, bad_lines):
            for row in task.to_alpaca_rows():
                yield line_no, row
    else:
        yield from read_jsonl(path, AlpacaRow, bad_lines)


def _first_row_keys(path: Path) -> set[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return set()
                return set(obj) if isinstance(obj, dict) else set()
    return set()


def repair_torn_tail(path: Path) -> bool:
    """Before appending to a file a crash may have cut mid-line: drop a torn last line, or end a whole one.

    Returns True if a torn line was removed (that row was in flight when the process died, so it is lost anyway).
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return False
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
        except ValueError:
            log.warning("%s: removing torn last line %d (%d bytes)", path, data.count(b"\n") + 1, len(data) - cut)
            f.truncate(cut)
            return True
        f.write(b"\n")
        return False
