"""Our hand-written CSV tables (the dish catalog, the safety notes, the allergen ingredient words) read one way:
blank lines skipped, the header and every row's width checked, each error naming the file, the line and the fix."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator


def table_rows(lines: Iterable[str], source: str, columns: tuple[str, ...], error: type[Exception],
               hint: str = "") -> Iterator[tuple[str, int, tuple[str, ...]]]:
    """(where, line number, stripped cells) per data row; `error` for a wrong header, a wrong width or no header."""
    reader = csv.reader(lines)
    header_seen = False
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{source}, line {reader.line_num}"
        if not header_seen:
            if tuple(cell.strip() for cell in row) != columns:
                raise error(f"{where}: the header must be {','.join(columns)}, got {','.join(row)}")
            header_seen = True
            continue
        if len(row) != len(columns):
            raise error(f"{where}: expected {len(columns)} columns ({','.join(columns)}), got {len(row)}: "
                        f"{','.join(row)!r}" + (f"; {hint}" if hint else ""))
        yield where, reader.line_num, tuple(cell.strip() for cell in row)
    if not header_seen:
        raise error(f"{source}: empty file; the first line must be {','.join(columns)}")
