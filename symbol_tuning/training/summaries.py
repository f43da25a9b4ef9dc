"""Metric writing: TensorBoard event files (clu) plus a JSONL log, and a progress display.
Both go to MODEL_DIR, a local folder or gs://."""
import json
import shutil
import sys
import tempfile
import time
import weakref

from clu import metric_writers

from symbol_tuning import paths


class JsonlWriter(metric_writers.MetricWriter):
  """Writes {"step": s, **scalars} lines to a file (local or gs://). Lines past `resume_step` (the step
  the run restarts from; 0 when no checkpoint survived) were logged by a run that died
  before its next checkpoint; they are dropped, since those steps are trained again."""

  def __init__(self, path, resume_step: int = 0):
    self.path = paths.path(path)
    self._lines = []
    if self.path.exists():
      self._lines = [line + "\n" for line in self.path.read_text().splitlines()
                     if line and json.loads(line).get("step", 0) <= resume_step]
    # GCS objects cannot be appended to: there the whole log is rewritten at each flush
    # (a few hundred bytes a row); a local file is appended to.
    self._remote = paths.is_remote(self.path)
    self._file = None
    if not self._remote:
      self.path.write_text("".join(self._lines))
      self._file = self.path.open("a")  # pylint: disable=consider-using-with

  def _write(self, line: str) -> None:
    if self._remote:
      self._lines.append(line)
    else:
      self._file.write(line)

  def write_scalars(self, step, scalars):
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._write(json.dumps(row) + "\n")

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_pointcloud(self, step, point_clouds, *, point_colors=None, configs=None):
    del step, point_clouds, point_colors, configs

  def write_hparams(self, hparams):
    self._write(json.dumps({"hparams": {k: str(v) for k, v in hparams.items()}}) + "\n")

  def flush(self):
    if self._remote:
      self.path.write_text("".join(self._lines))
    else:
      self._file.flush()

  def close(self):
    self.flush()
    if self._file is not None:
      self._file.close()


class UploadedWriter(metric_writers.MultiWriter):
  """TensorBoard events written to a local staging folder and copied to `dest` (gs://) at
  each flush: the event writer goes through TF's own filesystem, the copy through epath, so
  every gs:// write uses one client. The staging folder is removed by close(), and, should
  a failed run never close the writer, when the writer is collected or the process exits
  (only a killed process leaves it: nothing runs then)."""

  def __init__(self, dest):
    self._local = tempfile.mkdtemp(prefix="symbol_tuning_tb_")
    self._dest = dest
    # Holds the folder's name, not the writer: a finalizer referring to self never runs.
    self._remove_staging = weakref.finalize(self, shutil.rmtree, self._local,
                                            ignore_errors=True)
    super().__init__([metric_writers.create_default_writer(self._local, asynchronous=False)])

  @property
  def staging_dir(self) -> str:
    return self._local

  def flush(self):
    super().flush()
    paths.upload_dir(self._local, self._dest)

  def close(self):
    try:
      super().close()
      paths.upload_dir(self._local, self._dest)
    finally:
      self._remove_staging()


def make_writer(model_dir: str, is_chief: bool, resume_step: int):
  """TensorBoard events under MODEL_DIR/train and MODEL_DIR/metrics.jsonl (chief only)."""
  if not is_chief:
    return metric_writers.MultiWriter([])
  train_dir = paths.path(model_dir) / "train"
  tb = (UploadedWriter(train_dir) if paths.is_remote(train_dir)
        else metric_writers.create_default_writer(str(train_dir), asynchronous=False))
  return metric_writers.MultiWriter(
      [tb, JsonlWriter(paths.path(model_dir) / "metrics.jsonl", resume_step)])


class Progress:
  """A rich progress bar on a terminal; one plain line per log period otherwise."""

  def __init__(self, total: int, start: int, enabled: bool = True, bar: bool = True):
    # enabled: this process reports (the chief of a multi-host job); bar: a live bar
    # rather than plain lines (only on a terminal).
    self.total, self.start_time, self.enabled = total, time.time(), enabled
    self.live = enabled and bar and sys.stderr.isatty()
    self._bar = None
    if self.live:
      from rich import progress  # pylint: disable=g-import-not-at-top

      self._bar = progress.Progress(
          progress.TextColumn("[bold]train"), progress.BarColumn(),
          progress.MofNCompleteColumn(), progress.TextColumn("{task.fields[info]}"),
          progress.TimeRemainingColumn(), transient=False)
      self._task = self._bar.add_task("train", total=total, completed=start, info="")
      self._bar.start()

  def update(self, step: int, scalars: dict | None = None) -> None:
    info = ""
    if scalars:
      info = (f"loss {scalars['loss']:.4f}  lr {scalars['learning_rate']:.1e}  "
              f"{scalars['examples_per_s']:.1f} ex/s  {scalars['tokens_per_s']:.0f} tok/s")
    if self.live:
      self._bar.update(self._task, completed=step, **({"info": info} if info else {}))
    elif scalars and self.enabled:  # one host prints, not every host
      print(f"step {step}/{self.total}  {info}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.stop()
