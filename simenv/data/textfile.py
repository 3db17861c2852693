"""Read delimited text files whole, with vectorised checks that point at the first bad line.

Every loader goes through `read_table`, so every source reports bad encoding and wrong column counts the
same way: `DataError("<file> line <n>: ...")`. Values come back as strings; `numeric_column` and
`check_range` turn them into numbers and complain about the first value that does not fit.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simenv.data.dataset import DataError

_NEWLINE = 0x0A
# Control bytes that never occur in a text file (everything below 0x20 except tab, LF and CR).
_BINARY_BYTES = np.zeros(256, dtype=bool)
_BINARY_BYTES[[b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D)]] = True
_UNIT_SEPARATOR = b"\x1f"
_NUMPY_KIND = {"float": np.float64, "int": np.int64}


@dataclass(frozen=True)
class Table:
    """The rows of one file as string columns; row i came from line `first_line + i` (1-based).

    `raw` is the file's text as bytes (BOM removed, line ends normalised to LF) in `encoding`, kept so that an
    error can quote the offending line."""

    path: Path
    frame: pd.DataFrame
    first_line: int
    raw: bytes = b""
    encoding: str = "utf-8"

    def line(self, row: int) -> int:
        return self.first_line + int(row)

    def line_text(self, row: int) -> str:
        """The content of the line of `row` (at most MAX_QUOTED characters), or "" when unknown."""
        return quoted_line(self.raw, self.line(row), self.encoding)

    def fail(self, row: int, message: str) -> DataError:
        """An error naming this file, the line of `row` and its content."""
        content = self.line_text(row)
        return DataError(f"{self.path} line {self.line(row)}: {message}" + (f" in {content}" if content else ""))


MAX_QUOTED = 120
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def short(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters (a 200,000-digit id must not become a 200,000-character message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def quoted_line(raw: bytes, line: int, encoding: str) -> str:
    """repr() of line `line` (1-based) of `raw`, truncated to MAX_QUOTED characters; "" if there is none."""
    if not raw or line < 1:
        return ""
    start = 0
    for _ in range(line - 1):
        start = raw.find(b"\n", start) + 1
        if start == 0:
            return ""
    end = raw.find(b"\n", start)
    text = raw[start : end if end >= 0 else len(raw)].decode(encoding, errors="replace")
    if len(text) > MAX_QUOTED:
        text = text[: MAX_QUOTED - 3] + "..."
    return repr(text)


def normalise_text(path: Path, raw: bytes, encoding: str) -> tuple[bytes, str]:
    """Strip a UTF-8 byte-order mark, turn CRLF (and lone CR) line ends into LF, and pick the encoding.

    `encoding="auto"` means UTF-8 when the whole file decodes as UTF-8, else latin-1 (the official MovieLens
    files are latin-1; re-saved copies are often UTF-8). A UTF-16 file is an error saying so."""
    if raw.startswith(UTF16_BOMS):
        raise DataError(f"{path} line 1: bad encoding: the file is UTF-16 (byte-order mark); save it as UTF-8")
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
        if encoding == "auto":
            encoding = "utf-8"
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if encoding == "auto":
        try:
            raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "latin-1"
    return raw, encoding


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def decode_check(path: Path, raw: bytes, encoding: str) -> None:
    """Raise a DataError naming the line of the first byte that is not valid text in `encoding` (not "auto").

    latin-1 decodes any byte, so for it (and as a guard for UTF-8 too) a control byte such as NUL - the
    signature of a UTF-16 or binary file - counts as bad encoding.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    allowed = raw.count(b"\t") + raw.count(b"\n") + raw.count(b"\r")
    if np.count_nonzero(data < 0x20) != allowed:
        offset = int(np.flatnonzero(_BINARY_BYTES[data])[0])
        raise DataError(
            f"{path} line {_line_of_offset(raw, offset)}: bad encoding: control byte 0x{raw[offset]:02x} at byte "
            f"offset {offset} (expected {encoding} text; is the file binary or UTF-16?)"
        )
    if encoding.lower().replace("-", "") in ("latin1", "iso88591"):
        return  # every other byte is a latin-1 character
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} line {_line_of_offset(raw, exc.start)}: bad encoding: byte 0x{raw[exc.start]:02x} at byte "
            f"offset {exc.start} is not valid {encoding}"
        ) from exc


def _field_counts(data: np.ndarray, sep: int) -> np.ndarray:
    """Number of fields on each line of `data` (which ends with a newline)."""
    newlines = np.flatnonzero(data == _NEWLINE)
    seps = np.flatnonzero(data == sep)
    return np.bincount(np.searchsorted(newlines, seps), minlength=newlines.size) + 1


def _raise_on_bad_line(
    path: Path,
    raw: bytes,
    sep_byte: bytes,
    n_fields: int,
    header: bool,
    sep: str,
    text_raw: bytes = b"",
    encoding: str = "utf-8",
) -> None:
    """Count the fields of every line and raise naming the first line that does not have `n_fields`."""
    counts = _field_counts(np.frombuffer(raw, dtype=np.uint8), sep_byte[0])[1 if header else 0 :]
    bad = np.flatnonzero(counts != n_fields)
    if bad.size:
        row = int(bad[0])
        line = row + (2 if header else 1)
        content = quoted_line(text_raw, line, encoding)
        raise DataError(
            f"{path} line {line}: expected {n_fields} fields separated by {sep!r}, found {counts[row]}"
            + (f" in {content}" if content else "")
        )


def read_table(
    path: Path,
    names: tuple[str, ...],
    sep: str,
    encoding: str,
    header: bool = False,
    numeric: dict[str, str] | None = None,
) -> Table:
    """Read a whole delimited file as string columns `names`, checking encoding and field counts first.

    `sep` may be several characters (MovieLens's "::"). Blank lines are errors (they are a wrong column
    count) except trailing ones at the end of the file. `numeric` maps columns to "float" or "int": they
    are parsed by the C parser directly (fast), and if any value does not parse the file is re-read as
    text so that `numeric_column` can name the first bad line.

    Field counts: when the file holds exactly (fields - 1) separators per line in total and the first line
    is right, no line can be short without another being long, and the C parser rejects long lines; only
    then (or when the totals differ) are separators counted line by line to name the bad line.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    raw, encoding = normalise_text(path, raw, encoding)
    decode_check(path, raw, encoding)
    text_raw = raw
    sep_bytes = sep.encode(encoding)
    if len(sep_bytes) > 1:
        # Control bytes were rejected above, so the unit separator cannot already be in the file.
        raw = raw.replace(sep_bytes, _UNIT_SEPARATOR)
        sep_bytes = _UNIT_SEPARATOR
    raw = raw.rstrip(b"\r\n") + b"\n"
    first_line = 2 if header else 1
    empty = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    if raw == b"\n":  # an empty file has no rows (and no wrong ones)
        return Table(path=path, frame=empty, first_line=1, raw=text_raw, encoding=encoding)
    body = raw.find(b"\n") + 1 if header else 0
    n_rows = raw.count(b"\n", body)
    if n_rows == 0:
        return Table(path=path, frame=empty, first_line=first_line, raw=text_raw, encoding=encoding)
    first_end = raw.find(b"\n", body)
    k = len(names)
    if raw.count(sep_bytes, body) != (k - 1) * n_rows or raw.count(sep_bytes, body, first_end) != k - 1:
        _raise_on_bad_line(path, raw, sep_bytes, k, header, sep, text_raw, encoding)
    try:
        frame = _parse_columns(raw, names, sep_bytes.decode(encoding), encoding, header, numeric)
    except pd.errors.ParserError as exc:
        _raise_on_bad_line(path, raw, sep_bytes, k, header, sep, text_raw, encoding)
        raise DataError(f"{path}: cannot parse: {exc}") from exc
    if len(frame) != n_rows:  # defensive: the C parser and the byte count must agree on the rows
        raise DataError(f"{path}: parsed {len(frame)} rows but the file has {n_rows} lines")
    return Table(path=path, frame=frame, first_line=first_line, raw=text_raw, encoding=encoding)


def _parse_columns(
    raw: bytes, names: tuple[str, ...], sep: str, encoding: str, header: bool, numeric: dict[str, str] | None
) -> pd.DataFrame:
    """The `numeric` columns parsed as numbers when every value parses to a finite one, else every column as text
    (so that `numeric_column` can name the bad line). A pandas ParserError (bad line) propagates."""
    if numeric:
        dtypes = {name: _NUMPY_KIND[numeric[name]] if name in numeric else object for name in names}
        try:
            frame = _parse(raw, names, sep, encoding, header, dtypes)
        except pd.errors.ParserError:
            raise
        except (ValueError, OverflowError):
            pass  # some value is not a number: re-read as text below to find it
        else:
            if all(np.isfinite(frame[c].to_numpy()).all() for c in numeric):
                return frame
    return _parse(raw, names, sep, encoding, header, dict.fromkeys(names, object))


def _parse(
    raw: bytes, names: tuple[str, ...], sep: str, encoding: str, header: bool, dtypes: dict[str, object]
) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(raw),
        sep=sep,
        header=None,
        names=list(names),
        skiprows=1 if header else 0,
        dtype=dtypes,
        encoding=encoding,
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        skip_blank_lines=False,
        engine="c",
    )


def numeric_column(table: Table, column: str, kind: str = "float") -> np.ndarray:
    """Column `column` as float64 (`kind="float"`) or int64 (`kind="int"`); the first bad value is an error."""
    if pd.api.types.is_numeric_dtype(table.frame[column]):
        return table.frame[column].to_numpy(dtype=np.int64 if kind == "int" else np.float64)
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if kind == "int":
        bad |= np.isfinite(values) & (values != np.round(values))
    rows = np.flatnonzero(bad)
    if rows.size:
        row = int(rows[0])
        expected = "an integer" if kind == "int" else "a number"
        raise table.fail(row, f"{column} {short(table.frame[column].iloc[row])} is not {expected}")
    return values.astype(np.int64) if kind == "int" else values


def check_range(table: Table, column: str, values: np.ndarray, low: float, high: float) -> None:
    """Raise naming the first row whose value lies outside [low, high]."""
    rows = np.flatnonzero((values < low) | (values > high))
    if rows.size:
        row = int(rows[0])
        raise table.fail(row, f"{column} {shown_value(table, column, row)} outside {low:g}..{high:g}")


def shown_value(table: Table, column: str, row: int) -> str:
    """The value as it appeared in the file, quoted (numbers parsed on the fast path are re-formatted)."""
    value = table.frame[column].iloc[row]
    if isinstance(value, str):
        return short(value)
    if isinstance(value, (int, np.integer)) or float(value).is_integer():
        return repr(str(int(value)))
    return repr(f"{float(value):g}")


def check_nonempty(table: Table, column: str) -> None:
    """Raise naming the first row whose `column` is empty or blank."""
    rows = np.flatnonzero((table.frame[column].str.strip() == "").to_numpy())
    if rows.size:
        raise table.fail(int(rows[0]), f"{column} is empty")
