"""What XLA compiled for each trainer's step: its temp buffer, largest buffers, dot FLOPs.

Run: python benchmarks/trainer_vs_t5x_hlo.py   (needs t5x: bash .ci/install_t5x.sh)
For each case (Flan-T5 small's shape; batch, lengths, activation dtype) it starts t5x.train
and `symbol-tuning train` on the config of benchmarks/trainer_vs_t5x.py with XLA_FLAGS
--xla_dump_to, stops each once the train step's buffer assignment is written (nothing is
trained, so a case that does not fit in memory is read too), and reads from the dump:
- the preallocated temp buffer of the step (XLA on CPU allocates one for all the step's
  temporaries: the memory the step needs beyond its parameters and state);
- its buffers of 100 MB or more, by shape (count, and distinct offsets: held at once);
- the FLOPs of every dot of the optimized HLO (2*M*N*K), the largest by source op, and how
  many dots are bfloat16 and how many converts there are.
Prints and writes benchmarks/results/trainer_vs_t5x_hlo.json.
"""
import collections
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import common

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import t5x_support  # noqa: E402  pylint: disable=wrong-import-position

# (batch, input length, target length, activation dtype)
CASES = ((8, 2048, 32, "float32"), (4, 2048, 32, "float32"), (4, 2048, 32, "bfloat16"),
         (8, 512, 16, "float32"), (8, 512, 16, "bfloat16"))


def _dump_step(cmd, env, dump: pathlib.Path) -> pathlib.Path:
  """Runs `cmd` with an XLA dump until the train step's buffer assignment is complete."""
  env = dict(env, XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text")
  proc = subprocess.Popen(cmd, cwd=t5x_support.REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  pattern, last = "*jit_train_step*buffer-assignment.txt", None
  try:
    while proc.poll() is None:
      time.sleep(2)
      found = sorted(dump.glob(pattern))
      size = [f.stat().st_size for f in found]
      if found and size == last:  # written and no longer growing
        break
      last = size
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  found = sorted(dump.glob(pattern))
  if not found:
    raise RuntimeError(f"no train step was compiled by {cmd[:4]}")
  return found[0]


def temp_buffer(assignment: pathlib.Path, threshold: int = 10**8) -> dict:
  text = assignment.read_text()
  m = re.search(r"^allocation \d+: size (\d+), preallocated-temp:\n((?: value:.*\n)+)", text,
                re.M)
  counts, offsets = collections.Counter(), collections.defaultdict(set)
  for size, offset, shape in re.findall(r"value: <\d+ \S+ @\d+> \(size=(\d+),offset=(\d+)\): "
                                        r"([^{\s]+)", m.group(2)):
    if int(size) >= threshold:
      counts[(shape, int(size))] += 1
      offsets[(shape, int(size))].add(offset)
  big = [{"shape": shape, "megabytes": size / 1e6, "values": n,
          "distinct_offsets": len(offsets[(shape, size)])}
         for (shape, size), n in counts.items()]
  big.sort(key=lambda b: -b["megabytes"] * b["distinct_offsets"])
  return {"temp_gigabytes": int(m.group(1)) / 1e9, "large_buffers": big}


def dot_flops(hlo: pathlib.Path, top: int = 4) -> dict:
  shapes, dots, converts = {}, [], 0
  line = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? ([\w-]+)\((.*)")
  for text in hlo.read_text().splitlines():
    m = line.match(text)
    if m:
      name, shape, op, rest = m.groups()
      shapes[name] = shape
      dots += [(shape, rest)] if op == "dot" else []
      converts += op == "convert"
  dims = lambda s: [int(x) for x in re.match(r"\w+\[([\d,]*)\]", s).group(1).split(",") if x]
  by_op, bf16 = collections.Counter(), 0
  for shape, rest in dots:
    lhs = shapes[re.match(r"%(\S+?),", rest).group(1)]
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
    k = math.prod(dims(lhs)[int(i)] for i in contracting.split(",") if i)
    source = re.search(r'op_name="([^"]*)"', rest)
    source = re.sub(r"layers_\d+", "layers_N", source.group(1) if source else "?")
    by_op[source.replace("jit(train_step)/", "")] += 2 * math.prod(dims(shape)) * k
    bf16 += shape.startswith("bf16") or lhs.startswith("bf16")
  return {"dot_gflop": sum(by_op.values()) / 1e9, "bf16_dots": bf16, "converts": converts,
          "largest_dots_gflop": {op: f / 1e9 for op, f in by_op.most_common(top)}}


def probe(tmp: pathlib.Path, bigbench: str, batch: int, lengths, dtype: str) -> dict:
  env = t5x_support.t5x_env(BIGBENCH_DIR=bigbench)
  init = tmp / "init"
  if not (init / "init_t5x" / "checkpoint_0").exists():
    t5x_support.random_hf_checkpoint(init / "init_hf", "small", 32128)
    t5x_support.run_cli("convert", str(init / "init_hf"), str(init / "init_t5x"), "--to", "t5x",
                        "--step", "0", env=env)
  commands = t5x_support.trainer_commands(tmp / "run", init, steps=2, size="small",
                                          lengths=lengths, batch_size=batch,
                                          activation_dtype=dtype)
  row = {"batch": batch, "input_length": lengths[0], "target_length": lengths[1],
         "activation_dtype": dtype}
  for trainer, cmd in commands.items():
    dump = tmp / f"dump_{trainer}_{batch}_{lengths[0]}_{dtype}"
    assignment = _dump_step(cmd, env, dump)
    hlo = pathlib.Path(str(assignment).replace("-buffer-assignment.txt", ".txt"))
    row[trainer] = {**temp_buffer(assignment), **dot_flops(hlo)}
  print(f"small, batch {batch}, {lengths[0]}/{lengths[1]}, {dtype}: XLA temp buffer "
        f"ours {row['ours']['temp_gigabytes']:.2f} GB, t5x {row['t5x']['temp_gigabytes']:.2f} GB; "
        f"dot GFLOP ours {row['ours']['dot_gflop']:.0f}, t5x {row['t5x']['dot_gflop']:.0f}; "
        f"bf16 dots {row['ours']['bf16_dots']} / {row['t5x']['bf16_dots']}, converts "
        f"{row['ours']['converts']} / {row['t5x']['converts']}", flush=True)
  for trainer in ("ours", "t5x"):
    for b in row[trainer]["large_buffers"][:3]:
      print(f"  {trainer}: {b['shape']} {b['megabytes']:.0f} MB x {b['distinct_offsets']} "
            "held at once")
  return row


def main() -> None:
  reason = t5x_support.t5x_missing()
  if reason:
    sys.exit(f"trainer_vs_t5x_hlo: {reason}")
  common.setup_bigbench()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for batch, input_length, target_length, dtype in CASES:
      rows.append(probe(pathlib.Path(tmp), os.environ["BIGBENCH_DIR"], batch,
                        (input_length, target_length), dtype))
      common.write("trainer_vs_t5x_hlo", {"cases": rows})


if __name__ == "__main__":
  main()
