"""A local copy's file read with the types written in it: JSON, JSON Lines, CSV, parquet.

`datasets.load_dataset("json")` infers one type per column: a single number among strings
turns the column into its `Json` type, which parses every string in it as JSON, so a tweet
written as "\\"quoted\\"" loses its quotes and one reading `123`, `true` or `null` becomes a
number, a boolean or a missing value. Here every value stays as the file writes it, and
to_examples (sources/examples.py) checks the types: input fields must be text.

  train.jsonl  {"text": "\\"quoted\\"", "label": 0}  -> {"text": '"quoted"', "label": 0}
               {"text": "null", "label": 1}        -> {"text": 'null', "label": 1}
               {"text": 12345, "label": 1}         -> {"text": 12345, "label": 1} (refused
                                                      later: a number in a text field)
  train.json   [{"text": "a", "label": 0}, ...]    -> the same records (an array of objects,
                                                      or one object per line as in .jsonl)
  train.csv    <BOM>text,label\\n"a, b",1           -> {"text": "a, b", "label": "1"} (every
                                                      cell is text: "NA", "007" stay as written)
  train.parquet                                    -> its columns with their own types and
                                                      ClassLabel names
Text files are UTF-8, with or without a byte-order mark (spreadsheet programs write one).
Files are read through etils.epath, so a copy may lie on gs://.
A file that cannot be read is a FileReadError naming the line (and column) at fault.
"""
import codecs
import contextlib
import csv
import io
import json

from etils import epath

# suffix -> format
FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class FileReadError(ValueError):
  """A file that is not what its suffix says: 'line N, column C: reason'."""


def _text(path: epath.Path) -> str:
  """The file as text: UTF-8, less a leading byte-order mark."""
  data = path.read_bytes()
  skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
  try:
    return data[skip:].decode("utf-8")
  except UnicodeDecodeError as e:
    at = skip + e.start  # in the file, BOM included
    line = data[:at].count(b"\n") + 1
    raise FileReadError(f"line {line}: not UTF-8 text (byte {data[at]:#04x} at offset {at}); "
                        "save the file as UTF-8") from None


def _object(value, where: str) -> dict:
  if not isinstance(value, dict):
    raise FileReadError(f"{where}: a JSON {_json_type(value)}, not an object (a record)")
  return value


def _json_type(value) -> str:
  return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
          float: "number"}.get(type(value), "null")


def _json_lines(text: str) -> list[dict]:
  records = []
  # Lines end at "\n" only: str.splitlines would also cut at U+2028 or U+0085, which JSON
  # strings may hold as they are.
  for number, line in enumerate(text.split("\n"), 1):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise FileReadError(f"line {number}, column {e.colno}: {e.msg}") from None
    records.append(_object(value, f"line {number}"))
  return records


def _json(text: str) -> list[dict]:
  """A JSON array of records, or (as datasets reads .json files too) one record per line."""
  if not text.lstrip().startswith("["):
    try:
      return _json_lines(text)
    except FileReadError as lines_error:
      try:  # one document that is not an array: say so rather than blame its first line
        value = json.loads(text)
      except json.JSONDecodeError:
        raise lines_error from None  # it names the line at fault
      raise FileReadError(f"line 1: one JSON {_json_type(value)}, not an array of records or "
                          "one record per line") from None
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise FileReadError(f"line {e.lineno}, column {e.colno}: {e.msg}") from None
  return [_object(item, f"record {i} of the array") for i, item in enumerate(value)]


@contextlib.contextmanager
def _csv_field_limit(limit: int):
  """csv's per-field limit (131,072 characters by default) raised while reading: a long
  passage is data, not an error."""
  saved = csv.field_size_limit(limit)
  try:
    yield
  finally:
    csv.field_size_limit(saved)


def _csv(path: epath.Path) -> list[dict]:
  """Records of a CSV file with a header row; every cell as text; blank lines skipped."""
  records = []
  text = _text(path)  # decoded first, so a byte that is not UTF-8 is found by its line
  with _csv_field_limit(2**31 - 1):
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
      header = next(reader, None)
      if header is None:
        return records
      seen = set()
      for name in header:
        if name in seen:
          raise FileReadError(f"line 1: the header names column {name!r} twice")
        seen.add(name)
      start = reader.line_num + 1
      for row in reader:
        if row:  # a blank line is no record
          if len(row) != len(header):
            raise FileReadError(f"line {start}: {len(row)} fields, but the header has "
                                f"{len(header)} ({header})")
          records.append(dict(zip(header, row)))
        start = reader.line_num + 1
    except csv.Error as e:
      raise FileReadError(f"line {reader.line_num}: {e}") from None
  return records


def read_records(path: epath.Path) -> tuple[list[dict], list | dict]:
  """(records, features) of a local copy's file (a local or gs:// epath.Path); features are
  the datasets.Features of a parquet file (class names included), {} for the text formats."""
  fmt = FORMATS[path.suffix]
  if fmt == "csv":
    return _csv(path), {}
  if fmt in ("json", "jsonl"):
    text = _text(path)
    return (_json_lines(text) if fmt == "jsonl" else _json(text)), {}
  import datasets  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  with path.open("rb") as f:  # a file object: local or gs:// alike
    table = pq.read_table(f)
  # Our export and datasets' to_parquet keep the features (ClassLabel names) in the schema.
  features = datasets.Features.from_arrow_schema(table.schema)
  columns = table.to_pydict()
  names = list(columns)
  n = table.num_rows
  return [{name: columns[name][i] for name in names} for i in range(n)], features
