"""Orbax checkpoints of the whole training state, laid out as t5x lays out its own:
MODEL_DIR/checkpoint_<step>/ (params, optimizer state, step) plus a JSON `meta` item
with the model config, and a `data` item with the data iterator's position (tf.data's
iterator checkpoint, one per host, as t5x saves its train_ds).

Writes are atomic: on a local disk orbax writes to a temporary directory and renames it
when complete; on gs:// (no renames) it writes commit_success.txt last and skips a
checkpoint without it. A run killed at any moment, even mid-write, restarts from the last
complete one. MODEL_DIR is a local folder or gs:// (tensorstore writes the arrays, epath
the rest).
"""
import dataclasses
from typing import Any

import orbax.checkpoint as ocp

from symbol_tuning import paths


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into this run."""


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves and restores a training.data.HostBatches position inside an orbax checkpoint
  (so it is written atomically with the parameters)."""

  def save(self, directory, args: "DataIteratorSave"):
    args.batches.save(directory)

  def restore(self, directory, args: "DataIteratorRestore"):
    return args.batches.restore(directory, args.position)


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  batches: Any  # training.data.HostBatches


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  batches: Any  # training.data.HostBatches, restored in place
  position: int  # the checkpoint's step: the batches consumed when it was saved


def manager(model_dir: str, period: int, keep: int | None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=period, max_to_keep=keep, step_prefix="checkpoint", create=True,
      enable_async_checkpointing=False)  # the next step must not race a half-written save
  return ocp.CheckpointManager(paths.path(model_dir), options=options,
                               item_names=("state", "meta", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict, force=False,
         batches=None) -> bool:
  """Saves the state; with `batches` (a HostBatches at this step) its position too."""
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if batches is not None and batches.position == step:
    items["data"] = DataIteratorSave(batches)
  return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """(step, state, meta) of the newest complete checkpoint, or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError) as e:
    raise CheckpointError(
        f"{mngr.directory}/checkpoint_{step} does not match this run's model or optimizer "
        f"({str(e).splitlines()[0][:200]}); use a fresh MODEL_DIR") from None
  return step, restored.state, restored.meta


def restore_data(mngr: ocp.CheckpointManager, step: int, batches) -> bool:
  """Moves `batches` (a fresh HostBatches) to the position saved at `step`; False if the
  checkpoint holds none for this stream (the caller then skips `step` batches)."""
  if not (paths.path(mngr.directory) / f"checkpoint_{step}" / "data").is_dir():
    return False
  return bool(mngr.restore(step, args=ocp.args.Composite(
      data=DataIteratorRestore(batches, step))).data)
