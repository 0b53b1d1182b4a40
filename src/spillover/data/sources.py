"""Read task data: JSONL, CSV, Parquet or a Hugging Face dataset (`hf:owner/name[:config]`).

Every reader returns a list of (location, row) pairs; `location` is what an error message cites
("path/to/train.jsonl:17"), so a bad row can be found without guessing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from spillover.errors import SpilloverError

Row = dict
Located = tuple[str, Row]

# Inputs are checked before any model work: one field of a row may hold at most this many characters
# (a 50 MB field would be tokenised into gigabytes, long after training had started).
MAX_FIELD_CHARS = 1_000_000


class Where(str):
    """A row's location ("path:17"), knowing whether its file was reached through a symbolic link. Rows of
    a linked file may come from anywhere on disk, so error messages must not quote their content."""

    linked: bool = False

    @classmethod
    def of(cls, text: str, linked: bool) -> Where:
        where = cls(text)
        where.linked = linked
        return where


def shown(where: str, value: object) -> str:
    """`value` quoted for an error message about the row at `where` (hidden for a linked file's rows)."""
    if getattr(where, "linked", False):
        return "(not shown: the data file is a symbolic link)"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def read_rows(source: str, base_dir: Path, split: str) -> list[Located]:
    """Read every row of `source` (relative paths resolve against `base_dir`)."""
    if source.startswith("hf:"):
        return _read_hf(source, split)
    path = Path(source)
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise SpilloverError(f"{split} data file not found: {path}")
    readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise SpilloverError(
            f"{path}: unsupported data file type '{path.suffix}'; allowed: .jsonl, .csv, .parquet or hf:owner/name"
        )
    if not path.is_file():
        raise SpilloverError(f"{split} data path is not a file: {path}")
    try:
        rows = reader(path)
    except OSError as e:
        raise SpilloverError(f"{path}: cannot read the {split} data ({e.strerror or e})") from None
    if not rows:
        raise SpilloverError(f"{path}: the {split} split is empty (no rows)")
    linked = path.resolve() != path.absolute()
    for where, row in rows:
        check_field_sizes(where, row)
    return [(Where.of(where, linked), row) for where, row in rows]


def check_field_sizes(where: str, row: Row) -> None:
    """Every text value of the row (also inside lists and mappings) has at most MAX_FIELD_CHARS."""
    stack = [(str(k), v) for k, v in row.items()]
    while stack:
        field, value = stack.pop()
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise SpilloverError(
                f"{where}: field '{field}' holds {len(value):,} characters; at most {MAX_FIELD_CHARS:,} "
                "are allowed per field (split or shorten the example)"
            )
        if isinstance(value, dict):
            stack += [(f"{field}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{field}[{i}]", v) for i, v in enumerate(value)]


def _read_jsonl(path: Path) -> list[Located]:
    rows: list[Located] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpilloverError(f"{path}: not valid UTF-8 (byte {e.start}); save the file as UTF-8") from None
    # "\n" only: str.splitlines() would also split inside JSON strings at U+2028, U+0085, \x1c, ...
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpilloverError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise SpilloverError(f"{where}: each line must be a JSON object, got {type(row).__name__}")
        rows.append((where, row))
    return rows


def _read_csv(path: Path) -> list[Located]:
    rows: list[Located] = []
    _refuse_nul(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:  # `line_num` is the line a (possibly multi-line) record ends on
                if None in row or None in row.values():
                    raise SpilloverError(
                        f"{path}:{reader.line_num}: the row does not have the header's "
                        f"{len(reader.fieldnames or [])} columns (an unquoted comma or quote?)"
                    )
                rows.append((f"{path}:{reader.line_num}", row))
    except UnicodeDecodeError as e:
        raise SpilloverError(f"{path}: not valid UTF-8 (byte {e.start}); save the file as UTF-8") from None
    except csv.Error as e:  # NUL bytes, a field over csv.field_size_limit(), ...
        raise SpilloverError(f"{path}:{reader.line_num + 1}: malformed CSV ({e})") from None
    return rows


def _refuse_nul(path: Path) -> None:
    """A NUL byte in a CSV file is an error (Python's csv module reads it as a character since 3.11)."""
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if b"\0" in line:
                raise SpilloverError(
                    f"{path}:{lineno}: a NUL byte (\\0) in a CSV file; save the file as plain UTF-8 text"
                )


def _read_parquet(path: Path) -> list[Located]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SpilloverError(f"{path}: cannot read Parquet file ({e})") from None
    return [(f"{path}:row {i}", row) for i, row in enumerate(records)]


def _read_hf(source: str, split: str) -> list[Located]:
    """`hf:owner/name[:config]` through the `datasets` library (needs internet or a local HF cache)."""
    spec = source[3:]
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise SpilloverError(f"{source}: Hugging Face datasets need `pip install datasets`") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # network, missing split, missing dataset: all are the user's to fix
        raise SpilloverError(f"{source}: could not load split '{split}' ({type(e).__name__}: {e})") from None
    return [(f"{source}[{split}]:row {i}", dict(row)) for i, row in enumerate(ds)]
