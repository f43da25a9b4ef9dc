"""The training stream's position is checkpointed: a restored stream continues with exactly
the batches an uninterrupted one yields, without rebuilding the skipped prompts."""
import numpy as np

import symbol_tuning.data.tasks  # noqa: F401  (registers the tasks)

from symbol_tuning.training import checkpointing, data

CFG = data.DataConfig("symbol_tuning.bigbench.navigate", {"inputs": 256, "targets": 16}, 4,
                      seed=5, pack_buffer=32)


def assert_same(a, b):
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_restored_stream_continues_where_it_was_saved(tmp_path, bigbench_dir):
  reference = data.HostBatches(CFG)
  want = [next(reference) for _ in range(12)]
  saved = data.HostBatches(CFG)
  for _ in range(7):
    next(saved)
  saved.save(tmp_path / "data")
  restored = data.HostBatches(CFG)
  assert restored.restore(tmp_path / "data", position=7)
  assert restored.position == 7
  for step in range(7, 12):
    assert_same(next(restored), want[step])
  # The skipping fallback yields the same batches.
  assert_same(next(data.HostBatches(CFG, start_step=11)), want[11])


def test_a_position_of_another_stream_is_not_restored(tmp_path, bigbench_dir):
  saved = data.HostBatches(CFG)
  next(saved)
  saved.save(tmp_path / "data")
  other = data.HostBatches(data.DataConfig(**{**CFG.__dict__, "seed": 6}))
  assert not other.restore(tmp_path / "data", position=1)  # another seed
  assert not data.HostBatches(CFG).restore(tmp_path / "data", position=2)  # another step
  assert not data.HostBatches(CFG).restore(tmp_path / "missing", position=1)


def test_orbax_checkpoint_carries_the_position(tmp_path, bigbench_dir):
  mngr = checkpointing.manager(str(tmp_path), 1, None)
  batches = data.HostBatches(CFG)
  for _ in range(3):
    next(batches)
  want = next(data.HostBatches(CFG, start_step=3))
  checkpointing.save(mngr, 3, {"x": np.zeros(2, np.float32)}, {"note": "test"},
                     batches=batches)
  checkpointing.save(mngr, 4, {"x": np.zeros(2, np.float32)}, {}, batches=batches)
  mngr.wait_until_finished()
  assert not (tmp_path / "checkpoint_4" / "data").exists()  # the iterator was at step 3
  resumed = data.HostBatches(CFG)
  assert checkpointing.restore_data(mngr, 3, resumed)
  assert_same(next(resumed), want)
  assert not checkpointing.restore_data(mngr, 4, data.HostBatches(CFG))
