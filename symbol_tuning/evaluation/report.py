"""Results of an evaluation run: per-example JSONL, per-task/per-setting JSON, Markdown in
the layout of the paper's Table 1, and before/after comparisons with plots.

A run directory holds:
  predictions.jsonl  one object per prompt: task, setting, position, target, options, scores,
                     rank_prediction, rank_correct, prediction (greedy), exact_match, inputs
  results.json       accuracy per task and setting, the average per setting (unweighted over
                     tasks, as the paper averages), chance levels, skipped tasks and why
  table.md           rows: tasks + average (+ chance); columns: settings
Averages count only the tasks evaluated in that setting; skipped tasks are listed.
"""
import io
import json
import math

from etils import epath

from symbol_tuning import paths
from symbol_tuning.data import metrics

SETTING_TITLES = {
    "instr_labels": "instructions + labels",
    "instr_symbols": "instructions + symbols",
    "labels": "labels only",
    "symbols": "symbols only",
    "flipped": "flipped labels",
    "generative": "exact match",
}
RUN_FILES = ("predictions.jsonl", "results.json", "table.md")


def example_record(item, scores, tokens_text, ignore_case: bool = False) -> dict:
  """The JSONL record of one scored prompt (scores: per-option log-likelihoods or None;
  tokens_text: the greedy prediction or None)."""
  rec = {"task": item.task, "setting": item.setting, "position": item.position,
         "query_index": item.meta.get("query_index"), "template": item.meta.get("template"),
         "target": item.target, "num_input_tokens": len(item.input_ids)}
  if item.options is not None:
    best = max(range(len(scores)), key=lambda j: (scores[j], -j))  # ties: first option
    rec.update(options=item.options, symbols=item.meta.get("symbols"), gold=item.gold,
               scores=[round(float(s), 5) for s in scores],
               rank_prediction=best, rank_correct=best == item.gold)
  if tokens_text is not None:
    rec.update(prediction=tokens_text,
               exact_match=metrics.is_exact_match(tokens_text, item.target, ignore_case))
  rec["inputs"] = item.inputs
  return rec


def _mean(values):
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def summarize(records: list[dict], *, suite: str, settings, names: dict, chance: dict,
              skipped=(), unfit=None, meta=None) -> dict:
  """Aggregates example records into the results.json structure."""
  generative = all(s == "generative" for s in settings)
  cells: dict = {}
  for rec in records:
    cells.setdefault(rec["task"], {}).setdefault(rec["setting"], []).append(rec)
  tasks = {}
  for task, by_setting in cells.items():
    row = {}
    for setting, recs in by_setting.items():
      cell = {"n": len(recs)}
      if "rank_correct" in recs[0]:
        cell["rank_accuracy"] = 100.0 * sum(r["rank_correct"] for r in recs) / len(recs)
      if "exact_match" in recs[0]:
        cell["exact_match"] = 100.0 * sum(r["exact_match"] for r in recs) / len(recs)
      cell["accuracy"] = cell.get("exact_match" if generative else "rank_accuracy")
      row[setting] = cell
    tasks[task] = {"name": names.get(task, task), "settings": row}
  average = {}
  for setting in settings:
    present = [t["settings"][setting] for t in tasks.values() if setting in t["settings"]]
    if present:
      average[setting] = {k: _mean(c.get(k) for c in present)
                          for k in ("accuracy", "rank_accuracy", "exact_match")
                          if any(k in c for c in present)}
      average[setting]["num_tasks"] = len(present)
  return {
      **(meta or {}), "suite": suite, "settings": list(settings),
      "metric": "exact_match" if generative else "rank_classification",
      "num_examples": len(records), "tasks": tasks, "average": average,
      "chance": {s: chance[s] for s in settings},
      "skipped": [dict(task=s.task, settings=s.settings, source=s.source, reason=s.reason)
                  for s in skipped],
      "unfit_prompts": unfit or {},
  }


def _fmt(value) -> str:
  return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _md_escape(text: str) -> str:
  """Turing programs ("+[<o]") would read as Markdown/HTML: show them as code."""
  return f"`{text}`" if any(c in text for c in "[]<>*|+-`") else text


def markdown_table(results: dict, key: str = "accuracy") -> str:
  settings = results["settings"]
  lines = ["| task | " + " | ".join(SETTING_TITLES.get(s, s) for s in settings) + " |",
           "|---|" + "---|" * len(settings)]
  for task, row in results["tasks"].items():
    cells = [_fmt(row["settings"].get(s, {}).get(key)) for s in settings]
    lines.append(f"| {_md_escape(row['name'])} | " + " | ".join(cells) + " |")
  avg = [_fmt(results["average"].get(s, {}).get(key)) for s in settings]
  lines.append("| **average** | " + " | ".join(f"**{a}**" for a in avg) + " |")
  if results["metric"] == "rank_classification" and key in ("accuracy", "rank_accuracy"):
    lines.append("| chance | " + " | ".join(_fmt(results["chance"][s]) for s in settings) + " |")
  return "\n".join(lines)


def _skipped_md(results: dict) -> list[str]:
  out = []
  if results["skipped"]:
    out += ["", "Skipped (no data or too little):", ""]
    out += [f"- {s['task']} ({', '.join(s['settings'])}), {s['source']}: {s['reason']}"
            for s in results["skipped"]]
  if results.get("unfit_prompts"):
    out += ["", "Prompts that could not fit the input length even with one exemplar per class "
            "(not scored): " + ", ".join(f"{k}: {v}" for k, v in results["unfit_prompts"].items())]
  return out


def run_markdown(results: dict) -> str:
  primary = ("exact match" if results["metric"] == "exact_match"
             else "rank-classification accuracy")
  head = [f"# {results['suite']}: {results.get('label', '')}", "",
          f"{primary} (%), {results['num_examples']} prompts, seed {results.get('seed', 0)}",
          "", markdown_table(results)]
  if results["metric"] == "rank_classification":
    head += ["", "Greedy decoding, exact match (%):", "", markdown_table(results, "exact_match")]
  return "\n".join(head + _skipped_md(results)) + "\n"


def write_run(out, records: list[dict], results: dict) -> list[epath.Path]:
  """The RUN_FILES into folder `out` (local or gs://)."""
  out = paths.path(out)
  out.mkdir(parents=True, exist_ok=True)
  files = [out / name for name in RUN_FILES]
  files[0].write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))
  files[1].write_text(json.dumps(results, indent=1, ensure_ascii=False))
  files[2].write_text(run_markdown(results))
  return files


def load_results(path) -> dict:
  """results.json of a run directory (or the file itself)."""
  path = paths.path(path)
  if path.is_dir():
    path = path / "results.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no results.json (run `symbol-tuning eval --out DIR`)")
  return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------
# Comparing two runs.
# ------------------------------------------------------------------------------------------
def compare(a: dict, b: dict, names=("A", "B")) -> dict:
  """Before/after accuracies and deltas per setting (averages) and per task."""
  if a["suite"] != b["suite"]:
    raise ValueError(f"cannot compare suite {a['suite']!r} with suite {b['suite']!r}")
  settings = [s for s in a["settings"] if s in b["settings"]]

  def pair(x, y):
    x = None if x is None else round(x, 4)
    y = None if y is None else round(y, 4)
    return {"a": x, "b": y, "delta": None if x is None or y is None else round(y - x, 4)}

  tasks = {}
  for task in dict.fromkeys(list(a["tasks"]) + list(b["tasks"])):
    ra, rb = a["tasks"].get(task, {}), b["tasks"].get(task, {})
    tasks[task] = {"name": (ra or rb)["name"], "settings": {
        s: pair(ra.get("settings", {}).get(s, {}).get("accuracy"),
                rb.get("settings", {}).get(s, {}).get("accuracy")) for s in settings}}
  return {"suite": a["suite"], "metric": a["metric"], "names": list(names),
          "runs": [a.get("label"), b.get("label")], "settings": settings,
          "average": {s: pair(a["average"].get(s, {}).get("accuracy"),
                              b["average"].get(s, {}).get("accuracy")) for s in settings},
          "chance": {s: a["chance"].get(s) for s in settings}, "tasks": tasks}


def _delta_cell(c: dict) -> str:
  if c["a"] is None and c["b"] is None:
    return "–"  # not applicable (e.g. flipped labels on a 3-class task)
  if c["a"] is None or c["b"] is None:
    return f"{_fmt(c['a'])} → {_fmt(c['b'])}"
  return f"{c['a']:.1f} → {c['b']:.1f} ({c['delta']:+.1f})"


def compare_markdown(cmp: dict) -> str:
  settings = cmp["settings"]
  a, b = cmp["names"]
  # Say which run each name stands for, unless the name is the run's own label.
  sources = [f"{name} = {run}" for name, run in zip(cmp["names"], cmp["runs"])
             if run and run != name]
  metric = "exact match" if cmp["metric"] == "exact_match" else "rank-classification accuracy"
  lines = [f"# {cmp['suite']}: {a} → {b}", "",
           f"{metric} (%)" + (f"; {', '.join(sources)}" if sources else ""), "",
           "| task | " + " | ".join(SETTING_TITLES.get(s, s) for s in settings) + " |",
           "|---|" + "---|" * len(settings)]
  for row in cmp["tasks"].values():
    lines.append(f"| {_md_escape(row['name'])} | "
                 + " | ".join(_delta_cell(row["settings"][s]) for s in settings) + " |")
  lines.append("| **average** | " + " | ".join(
      f"**{_delta_cell(cmp['average'][s])}**" for s in settings) + " |")
  return "\n".join(lines) + "\n"


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # files only, no display needed
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save_png(fig, path) -> epath.Path:
  """Writes a matplotlib figure to `path` (local or gs://) and closes it."""
  path = paths.path(path)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=110)
  _pyplot().close(fig)
  path.write_bytes(buffer.getvalue())
  return path


def plot_settings(cmp: dict, path) -> epath.Path:
  """Grouped bars: average accuracy per setting, A vs B, with each setting's chance level."""
  plt = _pyplot()
  settings = cmp["settings"]
  fig, ax = plt.subplots(figsize=(1.6 * len(settings) + 2.5, 4))
  width = 0.38
  for k, (label, key) in enumerate(zip(cmp["names"], ("a", "b"))):
    values = [cmp["average"][s][key] or 0.0 for s in settings]
    xs = [i + (k - 0.5) * width for i in range(len(settings))]
    bars = ax.bar(xs, values, width, label=label)
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
  for i, s in enumerate(settings):
    level = cmp["chance"].get(s)
    if level:
      ax.hlines(level, i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                label="chance" if i == 0 else None)
  ax.set_xticks(range(len(settings)), [SETTING_TITLES.get(s, s) for s in settings],
                rotation=15, fontsize=9)
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"{cmp['suite']}: average over tasks")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return _save_png(fig, path)


def plot_tasks(cmp: dict, path) -> epath.Path:
  """Horizontal grouped bars per task, one panel per setting."""
  plt = _pyplot()
  settings, tasks = cmp["settings"], list(cmp["tasks"].values())
  height = max(3.0, 0.28 * len(tasks) + 1.5)
  fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings) + 1.5, height),
                           sharey=True, squeeze=False)
  ys = list(range(len(tasks)))
  for ax, s in zip(axes[0], settings):
    for k, (label, key) in enumerate(zip(cmp["names"], ("a", "b"))):
      values = [t["settings"][s][key] or 0.0 for t in tasks]
      ax.barh([y + (k - 0.5) * 0.4 for y in ys], values, 0.4, label=label)
    level = cmp["chance"].get(s)
    if level:
      ax.axvline(level, color="black", linestyle="dashed", linewidth=1, label="chance")
    ax.set_xlim(0, 100)
    ax.set_title(SETTING_TITLES.get(s, s), fontsize=9)
    ax.set_xlabel("accuracy (%)", fontsize=8)
  axes[0][0].set_yticks(ys, [t["name"] for t in tasks], fontsize=7)
  axes[0][0].invert_yaxis()
  axes[0][-1].legend(fontsize=7, loc="lower right")
  fig.suptitle(f"{cmp['suite']}: per task", fontsize=10)
  fig.tight_layout()
  return _save_png(fig, path)


def write_compare(out, cmp: dict) -> list[epath.Path]:
  out = paths.path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "compare.json").write_text(json.dumps(cmp, indent=1, ensure_ascii=False))
  (out / "compare.md").write_text(compare_markdown(cmp))
  return [out / "compare.json", out / "compare.md",
          plot_settings(cmp, out / "settings.png"), plot_tasks(cmp, out / "tasks.png")]
