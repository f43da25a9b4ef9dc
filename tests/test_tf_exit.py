"""A process that ends while holding a tf.data iterator with Python calls in flight exits
(without the atexit close, this script hangs at exit every time)."""
import subprocess
import sys
import textwrap

import tensorflow as tf

from symbol_tuning import tf_exit

# Python calls that are always in flight when the script ends; best-fit packing is one of
# our datasets that run Python inside tf.data (it registers the atexit close itself).
SCRIPT = textwrap.dedent("""
    import time
    import tensorflow as tf
    from symbol_tuning.data import packing

    def slow(x):
      time.sleep(0.02)
      return x

    ds = tf.data.Dataset.range(10**9).map(
        lambda x: tf.numpy_function(slow, [x], tf.int64), num_parallel_calls=4)
    ds = ds.map(lambda x: {"inputs": tf.fill([x % 5 + 1], tf.cast(x, tf.int32)),
                           "targets": tf.fill([x % 2 + 1], tf.cast(x, tf.int32))})
    it = packing.best_fit_pack_dataset(ds, {"inputs": 8, "targets": 4}, 4).prefetch(8)
    it = it.as_numpy_iterator()
    for _ in range(3):
      next(it)
    print("read 3 rows", flush=True)
""")


def test_a_script_ending_with_an_open_iterator_exits():
  done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                        timeout=90)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "read 3 rows" in done.stdout


def test_close_open_iterators_closes_live_iterators():
  it = iter(tf.data.Dataset.range(10).prefetch(2))
  assert int(next(it)) == 0
  assert tf_exit.close_open_iterators() >= 1
  assert "_iterator_resource" not in it.__dict__
