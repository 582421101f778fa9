"""One parse of a delimited MovieLens text file that knows where it failed.

Each file is parsed once, by pyarrow's streaming CSV reader, so ML-32M loads in seconds. That one
parse reports where it failed: the row it rejects (a wrong number of columns), or, since numeric
columns are read as text and converted batch by batch, the first value that is not a number. Errors
give the 1-based line number (header lines count; pyarrow skips empty lines, and the line numbers
account for them).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from armor.errors import DataError

_INT_RE = r"^-?[0-9]{1,18}$"
_FLOAT_RE = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|nan|inf|infinity)$"
_ONE_BYTE_SEP = "\x1f"  # ASCII unit separator: never in MovieLens text, stands in for "::"


@dataclasses.dataclass
class TextFile:
    path: Path
    delimiter: str  # the one byte pyarrow splits on
    label: str  # the separator as the user's file spells it, for messages
    header_lines: int = 0
    encoding: str = "utf8"
    quoted: bool = False
    data: bytes | None = None  # content already rewritten for pyarrow (ml-1m's "::" -> one byte)
    _nonempty: np.ndarray | None = None
    _counted: bool = False

    def source(self) -> pa.BufferReader | str:
        return pa.BufferReader(self.data) if self.data is not None else str(self.path)

    def line_of_ordinal(self, ordinal: int) -> int:
        """Physical 1-based line of the ``ordinal``-th (1-based) non-empty line, as pyarrow counts rows."""
        if not self._counted:
            self._nonempty, self._counted = _nonempty_lines(self.path), True
        if self._nonempty is not None and 1 <= ordinal <= self._nonempty.size:
            return int(self._nonempty[ordinal - 1])
        return ordinal

    def line_of_row(self, row: int) -> int:
        """Physical line of 0-based data row ``row`` (header lines are non-empty: checked or absent)."""
        return self.line_of_ordinal(self.header_lines + row + 1)

    def error(self, message: str, row: int | None = None) -> DataError:
        return DataError(message, self.path, None if row is None else self.line_of_row(row))


def _nonempty_lines(path: Path) -> np.ndarray | None:
    """Physical line numbers of the non-empty lines, or None when no line is empty (then row = line)."""
    # pyarrow skips empty lines, so its row numbers count only the others. Error path only, but
    # ML-32M is 800 MB: memory-map it and skip the count when no line is empty.
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return np.zeros(0, dtype=np.int64)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped[:1] not in (b"\n", b"\r") and mapped.find(b"\n\n") < 0 and mapped.find(b"\n\r\n") < 0:
                return None
            raw = np.frombuffer(mapped, dtype=np.uint8)
            try:
                nl = np.flatnonzero(raw == 10)
                starts = np.concatenate(([0], nl + 1))
                ends = np.concatenate((nl, [raw.size]))
                length = ends - starts
                crlf = (length > 0) & (raw[np.maximum(ends - 1, 0)] == 13)
                return np.flatnonzero(length - crlf > 0) + 1
            finally:
                del raw  # the mmap cannot close while a numpy view holds it


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def read(f: TextFile, names: Sequence[str], types: Mapping[str, pa.DataType],
          nullable: Sequence[str] = ()) -> pa.Table:
    """Parse ``f`` into the columns of ``types`` (a subset of ``names``), or raise a DataError with a line.

    One serial, streaming parse. Serial, because only then does pyarrow number the row it rejects;
    streaming, because batches come in file order, so the first batch that fails holds the first
    bad row. Numeric columns are parsed as text and converted batch by batch, so a value that does
    not convert is found in the text already parsed, with no second pass over the file.
    """
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    text_types = {c: pa.string() if _is_number(t) else t for c, t in types.items()}
    schema = pa.schema(list(types.items()))
    batches: list[pa.RecordBatch] = []
    rows = 0
    try:
        reader = pacsv.open_csv(
            f.source(),
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=f.header_lines,
                                           encoding=f.encoding, block_size=8 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=f.delimiter, quote_char='"' if f.quoted else False,
                                             invalid_row_handler=on_invalid),
            # An unquoted empty value is null (then "empty <column>" unless nullable); a quoted one
            # stays "", which is not a number, as in pyarrow's own typed conversion.
            convert_options=pacsv.ConvertOptions(column_types=text_types, include_columns=list(types),
                                                 null_values=[""], strings_can_be_null=True,
                                                 quoted_strings_can_be_null=False))
        for batch in reader:
            batches.append(_convert(f, batch, schema, first_row=rows))
            rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):  # no rows at all: the caller decides whether that is an error
            return schema.empty_table()
        if invalid:
            raise _column_count_error(f, invalid[0]) from exc
        if "UTF8" in str(exc) and f.encoding == "utf8":
            raise _utf8_error(f.path) from exc
        raise DataError(f"cannot parse: {exc}", f.path) from exc
    table = pa.Table.from_batches(batches, schema=schema)
    for column in types:
        if column not in nullable and table[column].null_count:
            row = pc.index(pc.is_null(table[column]), True).as_py()
            raise f.error(f"empty {column}", row)
    return table


def _convert(f: TextFile, batch: pa.RecordBatch, schema: pa.Schema, first_row: int) -> pa.RecordBatch:
    """``batch`` with its numeric text columns converted to ``schema``; rows count from ``first_row``."""
    columns = []
    for field in schema:
        values = batch[field.name]
        if not _is_number(field.type):
            values = pc.fill_null(values, "")  # text may be empty, never missing
        elif (values := _to_number(values, field.type)) is None:
            row, column, value, kind = _first_bad_number(batch, schema)
            raise f.error(f"{column} {value!r} is not {kind}", first_row + row)
        columns.append(values)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _to_number(values: pa.Array, kind: pa.DataType) -> pa.Array | None:
    """Text ``values`` as ``kind``, or None when one does not convert. Spaces and tabs around a
    number are allowed, as in pyarrow's own typed CSV conversion."""
    try:
        return pc.cast(values, kind)
    except pa.ArrowInvalid:
        pass  # a padded value or a bad one: trimming first tells which
    try:
        return pc.cast(pc.utf8_trim(values, " \t"), kind)
    except pa.ArrowInvalid:
        return None


def _first_bad_number(batch: pa.RecordBatch, schema: pa.Schema) -> tuple[int, str, str, str]:
    """(row in ``batch``, column, value, what it should be) of the earliest value that is not a number."""
    best: tuple[int, str, str, str] | None = None
    for field in schema:
        if not _is_number(field.type):
            continue
        values = batch[field.name]
        trimmed = pc.utf8_trim(values, " \t")  # nulls stay null: the empty-value check reports them
        if pa.types.is_integer(field.type):
            info = np.iinfo(field.type.to_pandas_dtype())
            syntax = pc.fill_null(pc.match_substring_regex(trimmed, _INT_RE), True)
            as_int = pc.cast(pc.if_else(syntax, trimmed, "0"), pa.int64())
            fits = pc.fill_null(pc.and_(pc.greater_equal(as_int, int(info.min)),
                                        pc.less_equal(as_int, int(info.max))), True)
            checks = [(syntax, "an integer"),
                      (pc.or_(pc.invert(syntax), fits), f"an integer in [{info.min}, {info.max}]")]
        else:
            checks = [(pc.fill_null(pc.match_substring_regex(trimmed, _FLOAT_RE), True), "a number")]
        for ok, description in checks:
            row = pc.index(ok, False).as_py()
            if row >= 0 and (best is None or row < best[0]):
                best = (row, field.name, values[row].as_py(), description)
    if best is None:  # the cast and the checks above disagree: a bug here, not in the file
        raise AssertionError(f"no bad value found in a batch that failed to convert: {schema}")
    return best


def _column_count_error(f: TextFile, row: pacsv.InvalidRow) -> DataError:
    line = f.line_of_ordinal(row.number) if row.number is not None else None
    text = row.text.replace(_ONE_BYTE_SEP, "::") if f.data is not None else row.text
    if len(text) > 120:
        text = text[:117] + "..."
    return DataError(f"expected {row.expected_columns} columns separated by {f.label}, found "
                     f"{row.actual_columns}: {text!r}. Is the separator right for this format?", f.path, line)


def _utf8_error(path: Path) -> DataError:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataError(f"not valid UTF-8 (byte {data[exc.start]:#04x}); MovieLens CSV releases are UTF-8, "
                         "re-save the file as UTF-8", path, line)
    return DataError("invalid UTF-8 text", path)


def read_header(path: Path, expected: Sequence[str] | None, sep: str, encoding: str = "utf8") -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError("empty file or empty header line" if first else "empty file", path, 1)
    fields = first.decode(encoding, errors="replace").lstrip("\ufeff").rstrip("\r\n").split(sep)
    fields = [x.strip().strip('"') for x in fields]
    if expected is not None and fields != list(expected):
        raise DataError(f"expected the header {sep.join(expected)!r}, found {sep.join(fields)!r}; "
                        "is this the right file and separator?", path, 1)
    return fields


def dat_file(path: Path) -> TextFile:
    """An ML-1M ``.dat`` file, its "::" separators rewritten to the one byte pyarrow splits on."""
    raw = path.read_bytes()
    return TextFile(path, _ONE_BYTE_SEP, "'::'", encoding="latin-1", data=raw.replace(b"::", _ONE_BYTE_SEP.encode()))
