"""XLA_FLAGS of the test processes (this one, and the train commands, t5x binaries and hosts
it starts): a number of fake CPU devices, and LLVM's -O0 for XLA:CPU's generated code.

The tests run tiny programs, each compiled once or twice: compiling is most of their time.
With -O0, test_model.py's seven cache and packing tests took 93 s instead of 128 s, and those
with a 16-step `symbol-tuning train` took 104 s instead of 114 s (one run each, -n 0); level 1
and --xla_llvm_disable_expensive_passes saved less. Matmuls are library calls either way. Every comparison in the suite
is between runs under these same flags (resume, sharding, t5x against ours) or within a
tolerance (transformers). Benchmarks do not use them: they measure the default build.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a process with `devices` fake CPU devices (None: XLA's one)."""
  flags = [f"--xla_force_host_platform_device_count={devices}"] if devices else []
  return " ".join(flags + [FAST_COMPILE])
