"""Device mesh and logical-axis sharding, with t5x's names and standard rules.

Parameters and activations carry t5x's logical axis names ('batch', 'embed', 'mlp',
'joined_kv', ...); rules map them to the two mesh axes 'data' and 'model', so a config
that runs under t5x's PjitPartitioner partitions the same way here.
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flax import linen as nn

from symbol_tuning import settings

# t5x's partitioning.standard_logical_axis_rules() with 1-D activation and parameter
# partitioning: the batch over 'data', the wide matmul dims over 'model'.
STANDARD_RULES = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
)
MESH_AXES = ("data", "model")


class MeshError(ValueError):
  """The mesh does not fit the devices or the batch."""


def maybe_initialize_distributed() -> None:
  """Joins a multi-host job when the environment describes one; a single host needs nothing.

  TPU pod slices and SLURM are detected by jax itself. Elsewhere (several GPU or CPU
  machines, or processes on one machine) set JAX_COORDINATOR_ADDRESS=host:port (process
  0's address), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process.
  """
  found = settings.cluster()
  if found.multi_host:
    explicit = {name: value for name, value in (("num_processes", found.num_processes),
                                                ("process_id", found.process_id))
                if value is not None}
    jax.distributed.initialize(**explicit)


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
  """A (data, model) mesh over all devices; data = -1 takes what model leaves."""
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  if model < 1 or n % model:
    raise MeshError(f"mesh: model axis {model} does not divide the {n} devices")
  data = n // model if data == -1 else data
  if data * model != n:
    raise MeshError(f"mesh: data {data} x model {model} = {data * model} devices, "
                    f"but there are {n}")
  axis_types = (jax.sharding.AxisType.Auto,) * 2  # logical constraints need Auto axes
  return jax.make_mesh((data, model), MESH_AXES, axis_types=axis_types, devices=devices)


def fit_rules(mesh: Mesh, logical_tree, shape_tree, rules=STANDARD_RULES):
  """(rules, notes): `rules` with each logical axis that some parameter dimension of that
  name cannot be split over (size not a multiple of its mesh axis) mapped to None, i.e.
  replicated, in parameters and activations alike; `notes` names what was replicated.

  E.g. the tiny model's 4 heads on a model axis of 8 ('heads' -> None): the run works
  (jax refuses uneven shardings, so it used to fail) and only that axis loses model
  parallelism; every other axis keeps its mesh axis. Flan-T5 large, xl and xxl divide
  evenly on model axes up to 8 and keep the rules unchanged; small (6 heads) replicates its
  heads on 4 or 8, base (12 heads) on 8.
  """
  sizes = {}
  is_spec = lambda x: isinstance(x, P)
  for spec, shape in zip(jax.tree.leaves(logical_tree, is_leaf=is_spec),
                         jax.tree.leaves(shape_tree)):
    for name, dim in zip(spec, shape.shape):
      if name is not None:
        sizes.setdefault(name, set()).add(dim)
  fitted, notes = [], []
  for name, axis in rules:
    parts = mesh.shape[axis] if axis is not None else 1
    uneven = sorted(d for d in sizes.get(name, ()) if d % parts)
    if uneven:
      notes.append(f"{name} ({uneven[0]}) replicated, the {axis} axis ({parts}) does not "
                   f"divide it")
      axis = None
    fitted.append((name, axis))
  return tuple(fitted), notes


def logical_to_shardings(mesh: Mesh, logical_tree, rules=STANDARD_RULES):
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  mesh_specs = nn.logical_to_mesh(logical_tree, rules)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), mesh_specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(batch_size: int, mesh: Mesh, num_microbatches: int = 1) -> None:
  data = mesh.shape["data"]
  if batch_size % (num_microbatches * data):
    raise MeshError(f"BATCH_SIZE {batch_size} must be divisible by the data axis ({data}) "
                    f"times num_microbatches ({num_microbatches})")
  if batch_size % jax.process_count():
    raise MeshError(f"BATCH_SIZE {batch_size} must be divisible by the number of hosts "
                    f"({jax.process_count()})")
  # Each host feeds its own rows of the batch (jax.make_array_from_process_local_data), so
  # a data-axis index must live on one host: the model axis cannot span hosts.
  for row in mesh.devices.reshape(data, -1):
    hosts = sorted({device.process_index for device in row})
    if len(hosts) > 1:
      raise MeshError(f"mesh: the model axis ({mesh.shape['model']}) spans hosts {hosts}; "
                      f"MESH_MODEL must divide one host's device count")
