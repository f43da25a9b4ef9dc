"""Data commands: list, inspect, export, stats."""
import collections
import contextlib
import difflib
import json
import sys

from symbol_tuning.commands import CliError

PASSTHROUGH = ("inputs_pretokenized", "targets_pretokenized", "template", "k", "k_drawn",
               "num_dropped", "gold", "labels_json", "task", "query", "query_index")


def register(subparsers) -> None:
  p = subparsers.add_parser("list", help="tasks and mixtures with example counts and rates")
  p.add_argument("--json", action="store_true", help="one JSON object per line")
  p.add_argument("--filter", default="", help="only names containing this text")
  p.set_defaults(func=run_list)

  for name, func, help_ in (("inspect", run_inspect, "print prompts of a task or mixture"),
                            ("export", run_export, "write prompts of a task or mixture as JSONL"),
                            ("stats", run_stats, "statistics over sampled prompts")):
    p = subparsers.add_parser(name, help=help_)
    p.add_argument("name", help="task or mixture name (see `symbol-tuning list`)")
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default={"inspect": 3, "export": 1000, "stats": 10_000}[name])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input_length", type=int, default=2048, help="input token budget")
    p.add_argument("--target_length", type=int, default=512)
    if name == "inspect":
      p.add_argument("--json", action="store_true", help="one JSON object per line")
    if name == "export":
      p.add_argument("--out", required=True, help="output .jsonl file (local or gs://)")
    if name == "stats":
      p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=func)


def _provider(name: str):
  import seqio  # pylint: disable=g-import-not-at-top

  import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import

  known = list(seqio.MixtureRegistry.names()) + list(seqio.TaskRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `symbol-tuning list`"
    raise CliError(f"no task or mixture named {name!r}{hint}")
  return seqio.get_mixture_or_task(name)


# Prompts converted to Python per tf.data step. One at a time, tf.data's eager per-element
# structure conversion took 10.3 s of a 15,000-prompt export (#25's profile), ~0.7 ms each.
RECORD_BATCH = 256
_RECORD_FEATURES = ("task", "inputs_pretokenized", "targets_pretokenized", "template", "k",
                    "k_drawn", "num_dropped", "labels_json", "gold", "query_index")


def _batches(name: str, split: str, num: int, seed: int, input_length: int,
             target_length: int):
  """Yields the prompts of a task or mixture as the seqio pipeline makes them, RECORD_BATCH
  at a time: numpy columns of the features a record shows, token counts for the ids.

  Data is read and validated when the dataset is built, before tf.data runs; an error that
  still happens inside the pipeline becomes a CliError once the iterator is released (a
  live iterator in a traceback makes the process hang at exit).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import packing, pipeline, vocab  # pylint: disable=g-import-not-at-top

  vocab.resolve()  # a vocabulary that cannot load fails here, not wrapped by tf.data tracing
  provider = _provider(name)
  if split not in provider.splits:
    raise CliError(f"{name} has no split {split!r}; it has {sorted(provider.splits)}")
  kwargs = {"passthrough_features": list(PASSTHROUGH)} if hasattr(provider, "tasks") else {}
  ds = provider.get_dataset({"inputs": input_length, "targets": target_length}, split=split,
                            shuffle=True, seed=seed, num_epochs=1, **kwargs)

  def columns(batch):  # one function per batch: the features a record shows, ids as counts
    out = {k: batch[k] for k in _RECORD_FEATURES}
    out["num_input_tokens"] = batch["inputs"].row_lengths()  # including EOS
    out["num_target_tokens"] = batch["targets"].row_lengths()
    return out

  ds = packing.with_pipeline_options(ds.take(num).ragged_batch(RECORD_BATCH).map(columns))
  iterator, failure = ds.prefetch(1).as_numpy_iterator(), None
  while failure is None:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      failure = pipeline.python_error(e)
      break
    yield {k: v.tolist() for k, v in batch.items()}  # numpy -> Python values in one call
  del iterator, ds
  raise CliError(f"building the prompts of {name} ({split}) failed: {failure}")


def records(name: str, split: str, num: int, seed: int, input_length: int,
            target_length: int):
  """Yields up to `num` prompt records of a task or mixture, as the seqio pipeline makes
  them (read RECORD_BATCH at a time: the same prompts in the same order as one at a time)."""
  for columns in _batches(name, split, num, seed, input_length, target_length):
    for i in range(len(columns["task"])):
      yield _record(columns, i)


def json_lines(name: str, split: str, num: int, seed: int, input_length: int,
               target_length: int):
  """The records as JSON lines, each `json.dumps(record, ensure_ascii=False) + "\\n"`."""
  for columns in _batches(name, split, num, seed, input_length, target_length):
    for i in range(len(columns["task"])):
      yield _json_line(columns, i)


def _record(c: dict, i: int) -> dict:
  """Record i of a batch of columns."""
  labels = json.loads(c["labels_json"][i])
  return {
      "task": c["task"][i].decode(),
      "inputs": c["inputs_pretokenized"][i].decode(),
      "targets": c["targets_pretokenized"][i].decode(),
      "template": c["template"][i],
      "k": c["k"][i],
      "k_drawn": c["k_drawn"][i],
      "num_dropped": c["num_dropped"][i],
      "symbols": labels["symbols"],
      "options": labels["options"],
      "gold": c["gold"][i],
      "query_index": c["query_index"][i],  # index in the dataset split, as eval writes
      "num_input_tokens": c["num_input_tokens"][i],  # including EOS
      "num_target_tokens": c["num_target_tokens"][i],
  }


def _json_line(c: dict, i: int) -> str:
  """`json.dumps(_record(c, i), ensure_ascii=False) + "\\n"`, written from the columns
  without building the record: json.dumps of the dict took ~35 us of export's ~60 us of
  Python per prompt, which competes with prompt building for the GIL."""
  text = json.encoder.encode_basestring  # json.dumps's own escaping with ensure_ascii=False
  labels = c["labels_json"][i]
  # '{"symbols": ..., "options": ...}' written with ASCII escapes: its inside is the record's
  # text unless it escapes a non-ASCII character.
  inner = (labels[1:-1].decode() if b"\\u" not in labels else
           json.dumps(json.loads(labels), ensure_ascii=False)[1:-1])
  return (f'{{"task": {text(c["task"][i].decode())}, '
          f'"inputs": {text(c["inputs_pretokenized"][i].decode())}, '
          f'"targets": {text(c["targets_pretokenized"][i].decode())}, '
          f'"template": {c["template"][i]}, "k": {c["k"][i]}, "k_drawn": {c["k_drawn"][i]}, '
          f'"num_dropped": {c["num_dropped"][i]}, {inner}, "gold": {c["gold"][i]}, '
          f'"query_index": {c["query_index"][i]}, '
          f'"num_input_tokens": {c["num_input_tokens"][i]}, '
          f'"num_target_tokens": {c["num_target_tokens"][i]}}}\n')


def _skipped_counts() -> collections.Counter:
  from symbol_tuning.data import pipeline  # pylint: disable=g-import-not-at-top

  return collections.Counter(pipeline.SKIPPED)


def _skipped_note(before: collections.Counter) -> str:
  """The prompts skipped since `before` (_skipped_counts()), tasks with none left out."""
  skipped = _skipped_counts()
  skipped.subtract(before)
  counts = sorted((task, n) for task, n in skipped.items() if n > 0)
  if not counts:
    return ""
  return "skipped (prompt cannot fit with one exemplar per class): " + ", ".join(
      f"{task}: {n}" for task, n in counts)


@contextlib.contextmanager
def _progress(total: int, what: str):
  """Yields update(done): a rich bar of prompts written on a terminal (stderr), else a
  no-op (a log or a pipe gets the final `wrote N prompts` line only)."""
  if not sys.stderr.isatty():
    yield lambda done: None
    return
  from rich import console, progress  # pylint: disable=g-import-not-at-top

  with progress.Progress(progress.TextColumn(what), progress.BarColumn(),
                         progress.MofNCompleteColumn(), progress.TimeRemainingColumn(),
                         console=console.Console(stderr=True), transient=True) as bar:
    task = bar.add_task(what, total=total)
    yield lambda done: bar.update(task, completed=done)


def run_inspect(args) -> None:
  before = _skipped_counts()
  for rec in records(args.name, args.split, args.num, args.seed, args.input_length,
                     args.target_length):
    if args.json:
      print(json.dumps(rec, ensure_ascii=False))
      continue
    print(f"=== {rec['task']}  template {rec['template']}  k={rec['k']} per class"
          f" (drawn {rec['k_drawn']})  {rec['num_input_tokens']} input tokens")
    print("    labels: " + ", ".join(f"{k} -> {v}" for k, v in rec["symbols"].items()))
    print(rec["inputs"])
    print(f"--- target: {rec['targets']}\n")
  note = _skipped_note(before)
  if note:
    print(note, file=sys.stderr)


def _out_file(out: str):
  """--out as an epath.Path (a local file or gs://), its folder created; a gs:// folder in
  a missing bucket or one that does not answer (no credentials) is one line, within
  SYMBOL_TUNING_STORAGE_TIMEOUT."""
  from symbol_tuning import paths, settings  # pylint: disable=g-import-not-at-top

  target = paths.path(out)
  try:
    paths.make_dir(target.parent, "--out", settings.storage_timeout())
  except paths.StoragePathError as e:
    raise CliError(str(e)) from None
  return target


def run_export(args) -> None:
  before, n = _skipped_counts(), 0
  # Bytes, not text: the file is the same whichever filesystem (local, gcsfs, TF's gfile).
  with _out_file(args.out).open("wb") as f, \
      _progress(args.num, f"export {args.name}") as update:
    for line in json_lines(args.name, args.split, args.num, args.seed, args.input_length,
                           args.target_length):
      f.write(line.encode("utf-8"))
      n += 1
      if n % RECORD_BATCH == 0:
        update(n)
  print(f"wrote {n} prompts of {args.name} ({args.split}) to {args.out}", file=sys.stderr)
  read_from = _data_note(args.name)
  if read_from:
    print(read_from, file=sys.stderr)
  note = _skipped_note(before)
  if note:
    print(note, file=sys.stderr)


def origin_text(entry) -> str:
  """Where a hub or TFDS dataset is read, with its pin: 'hf:nyu-mll/glue/sst2@main
  (unpinned)', 'hf:...@<sha>', 'tfds:glue/sst2:2.0.0', 'local:/data/sst2 (hub revision main,
  unpinned)' (README, 'Dataset pins')."""
  from symbol_tuning.data import sources  # pylint: disable=g-import-not-at-top

  where = sources.origin(entry)
  if where.startswith("tfds:"):
    return where
  pin = "" if entry.pinned else "unpinned"
  if where.startswith("local:"):
    return f"{where} (hub revision {entry.hf_revision}" + (f", {pin})" if pin else ")")
  return where + (f" ({pin})" if pin else "")


def _data_note(name: str) -> str:
  """'data: rte hf:aps/super_glue/rte@refs/convert/parquet (unpinned); ...': the hub and
  TFDS datasets a task or mixture read (BIG-bench's are in the package), one line."""
  provider = _provider(name)
  entries = {}
  for task in getattr(provider, "tasks", [provider]):
    spec = getattr(task.source, "spec", None)
    if spec is not None and spec.entry.source == "hf":
      entries[spec.entry.key] = spec.entry
  return "data: " + "; ".join(f"{k} {origin_text(e)}" for k, e in sorted(entries.items())) \
      if entries else ""


def prompt_stats(recs, count_tokens) -> dict:
  """Spread of k, templates and symbol kinds; fitting and query-cut counts."""
  from symbol_tuning.data import symbols  # pylint: disable=g-import-not-at-top

  ks, templates, kinds, tasks = (collections.Counter() for _ in range(4))
  n = dropped = cut = 0
  for rec in recs:
    n += 1
    ks[rec["k_drawn"]] += 1
    templates[rec["template"]] += 1
    tasks[rec["task"]] += 1
    dropped += rec["num_dropped"] > 0
    # The query is cut if the pipeline trimmed the prompt: the ids (less EOS) would then be
    # fewer than the tokens of the prompt text.
    cut += rec["num_input_tokens"] - 1 != count_tokens(rec["inputs"])
    for option in rec["options"]:
      kinds[symbols.SymbolPool.kind_of(option)] += 1
  def share(counter):
    total = max(sum(counter.values()), 1)
    return {str(k): round(v / total, 4) for k, v in sorted(counter.items())}

  return {"num_prompts": n, "k_drawn": share(ks), "template": share(templates),
          "symbol_kind": share(kinds), "share_with_dropped_exemplars": round(dropped / max(n, 1), 4),
          "num_query_cut": cut, "tasks": len(tasks)}


def run_stats(args) -> None:
  from symbol_tuning.data import vocab  # pylint: disable=g-import-not-at-top

  counter, before = vocab.TokenCounter(), _skipped_counts()
  stats = prompt_stats(records(args.name, args.split, args.num, args.seed, args.input_length,
                               args.target_length), counter)
  stats["name"], stats["split"], stats["input_length"] = args.name, args.split, args.input_length
  if args.json:
    print(json.dumps(stats))
    return
  print(f"{stats['num_prompts']} prompts of {args.name} ({args.split}), "
        f"{stats['tasks']} tasks, input budget {args.input_length} tokens")
  for key in ("k_drawn", "template", "symbol_kind"):
    print(f"  {key:12s} " + "  ".join(f"{k}: {v:.1%}" for k, v in stats[key].items()))
  print(f"  exemplars dropped to fit: {stats['share_with_dropped_exemplars']:.1%} of prompts")
  print(f"  prompts whose query was cut: {stats['num_query_cut']}")
  note = _skipped_note(before)
  if note:
    print("  " + note)


def _task_row(task, name: str) -> dict:
  """One `list` row: the task's query count and, for evaluation tasks, its exemplar
  split's; both splits' filtered counts; every split the task reads is loaded and checked
  (a broken exemplar file makes the task unavailable, as it would make it fail)."""
  from symbol_tuning.data import pipeline, sources  # pylint: disable=g-import-not-at-top

  split = "train" if "train" in task.splits else "validation"
  row = {"name": name, "kind": "task", "split": split}
  spec = getattr(task.source, "spec", None)  # algorithmic eval tasks have no catalogue entry
  if spec is None:
    row["num_examples"] = task.num_input_examples(split)
    return row
  pipeline.validate(spec, split)
  queries = sources.load_split(spec.entry, spec.dataset_split(split))
  row.update(data_split=queries.split, num_examples=task.num_input_examples(split),
             filtered=queries.filtered, origin=queries.origin)
  if spec.entry.source == "hf":
    row.update(read_from=origin_text(spec.entry), revision=spec.entry.hf_revision,
               pinned=spec.entry.pinned)
  notes = list(queries.notes)
  if spec.setting.name not in ("tune", "instruct"):  # evaluation: exemplars too
    exemplars = sources.load_split(spec.entry, spec.entry.train_split)
    row["exemplars"] = {"split": exemplars.split, "num_examples": len(exemplars.examples),
                        "filtered": exemplars.filtered}
    notes += [n for n in exemplars.notes if n not in notes]
  if notes:
    row["notes"] = notes
  return row


def run_list(args) -> None:
  import seqio  # pylint: disable=g-import-not-at-top

  from symbol_tuning.data import sources  # pylint: disable=g-import-not-at-top

  _provider("symbol_tuning")  # registers
  counts = {}
  for name in sorted(seqio.TaskRegistry.names()):
    if not name.startswith("symbol_tuning.") or args.filter not in name:
      continue
    try:
      row = _task_row(seqio.TaskRegistry.get(name), name)
      counts[name] = row["num_examples"]
    except (sources.DataSourceError, ValueError) as e:
      task = seqio.TaskRegistry.get(name)
      row = {"name": name, "kind": "task",
             "split": "train" if "train" in task.splits else "validation", "error": str(e)}
    _emit(row, args.json)
  for name in sorted(seqio.MixtureRegistry.names()):
    if args.filter not in name:
      continue
    mixture = seqio.MixtureRegistry.get(name)
    rates = {}
    try:
      rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
      total = sum(rates.values()) or 1.0
      row = {"name": name, "kind": "mixture", "num_tasks": len(rates),
             "num_examples": sum(counts.get(t, 0) for t in rates),
             "rates": {t: round(r / total, 5) for t, r in sorted(rates.items())}}
    except (sources.DataSourceError, ValueError) as e:
      row = {"name": name, "kind": "mixture", "num_tasks": len(mixture.tasks), "error": str(e)}
    _emit(row, args.json)


def _counts(num: int, split: str, filtered: dict) -> str:
  """'800 train' or '100 test (3 filtered: {"empty_input:text": 3})'."""
  total = sum(filtered.values())
  return f"{num} {split}" + (f" ({total} filtered: {filtered})" if total else "")


def _emit(row: dict, as_json: bool) -> None:
  if as_json:
    print(json.dumps(row))
    return
  if "error" in row:
    print(f"{row['kind']:8s} {row['name']:60s} unavailable: {row['error']}")
  elif row["kind"] == "task":
    text = _counts(row["num_examples"], row.get("data_split", row["split"]),
                   row.get("filtered", {}))
    if "exemplars" in row:
      ex = row["exemplars"]
      text = (f"queries {text}; exemplars "
              + _counts(ex["num_examples"], ex["split"], ex["filtered"]))
    if row.get("notes"):
      text += "; labels remapped by class name"
    if row.get("read_from"):
      text += f"; from {row['read_from']}"
    print(f"task     {row['name']:60s} {text}")
  else:
    top = sorted(row["rates"].items(), key=lambda kv: -kv[1])[:3]
    print(f"mixture  {row['name']:60s} {row['num_tasks']:>3d} tasks, "
          f"{row['num_examples']} examples; top rates "
          + ", ".join(f"{t.split('.')[-1]} {r:.1%}" for t, r in top))
