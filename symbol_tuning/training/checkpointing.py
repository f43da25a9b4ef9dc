"""Orbax checkpoints of the whole training state, laid out as t5x lays out its own:
MODEL_DIR/checkpoint_<step>/ (params, optimizer state, step) plus a JSON `meta` item
with the model config and the data position.

Writes are atomic (orbax writes to a temporary directory and renames it when complete),
so a run killed at any moment, even mid-write, restarts from the last complete one.
"""
import pathlib

import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into this run."""


def manager(model_dir: str, period: int, keep: int | None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=period, max_to_keep=keep, step_prefix="checkpoint", create=True,
      enable_async_checkpointing=False)  # the next step must not race a half-written save
  return ocp.CheckpointManager(pathlib.Path(model_dir).absolute(), options=options,
                               item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict, force=False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=force)


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
