"""Small synthetic local copies of the 22 tuning datasets (SYMBOL_TUNING_DATA_DIR layout), for
runs of the real 'symbol_tuning' mixture without the HuggingFace hub."""
import json
import pathlib

from symbol_tuning.data import catalogue


def write_tune_copies(root: pathlib.Path, rows_per_dataset: int = 40) -> pathlib.Path:
  """Writes <root>/<key>/<train split>.jsonl for every dataset in tasks/tune.json: each input
  field a short distinct text, the label field cycling through the entry's raw class values
  (label_values, else 0..n-1). Returns `root`."""
  entries = catalogue.load("tune")
  assert len(entries) == 22 and {e.source for e in entries} == {"hf"}
  for entry in entries:
    values = entry.raw_label_values
    rows = [{**{field: f"{entry.key} {field} {i}" for field in entry.input_fields},
             entry.label_field: values[i % len(values)]} for i in range(rows_per_dataset)]
    folder = root / entry.key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{entry.train_split}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
  return root
