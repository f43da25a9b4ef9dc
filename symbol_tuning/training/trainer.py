"""The embedded trainer: t5x-style finetuning on a device mesh, resumable bit for bit.

One gin-configured `TrainConfig` (macros named as in t5x's finetune.gin) -> `train()`:
seqio batches (packed by the model family's feature converter), the family's forward
pass (models.registry: T5 v1.1 or decoder-only), t5x's loss (cross-entropy + z-loss on
target tokens), optax's Adafactor with t5x's settings, orbax checkpoints every
CHECKPOINT_PERIOD steps. The dropout key of step s is fold_in(seed, s) and the data stream
is a pure function of the seed, so a run killed at any moment and restarted ends with the
same parameters, bit for bit, as one that was never interrupted.
"""
import dataclasses
import sys
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from symbol_tuning import paths, settings
from symbol_tuning.models import registry
from symbol_tuning.training import checkpointing, data, losses, summaries, partitioning


@gin.configurable
@dataclasses.dataclass
class TrainConfig:
  """Everything a training run needs; gin binds it from the macros in gin/local/."""

  model_dir: str  # MODEL_DIR: checkpoints, config.gin, metrics.jsonl, TensorBoard events
  mixture_or_task_name: str  # MIXTURE_OR_TASK_NAME: a registered seqio task or mixture
  train_steps: int  # TRAIN_STEPS: optimizer steps of this run, counted from 0 (= t5x's
  #   TRAIN_STEPS_RELATIVE: our step counter starts at 0 from the initial checkpoint)
  task_feature_lengths: dict | int = dataclasses.field(  # TASK_FEATURE_LENGTHS
      default_factory=lambda: {"inputs": 2048, "targets": 512})  # one-sequence families
  #   (decoder-only) also take one length L ({"targets": L} or L): prompt + EOS + answer +
  #   EOS fit L together (ModelFamily.feature_lengths)
  batch_size: int = 32  # BATCH_SIZE: global batch of packed rows (the paper's 32)
  initial_checkpoint_path: str | None = None  # INITIAL_CHECKPOINT_PATH: HF, t5x or ours
  model_size: str = "small"  # MODEL_SIZE: named config used when there is no checkpoint
  #   (T5: tiny, small, ... xxl; decoder-only: llama-tiny, mistral-tiny, gemma2-tiny,
  #   gemma3-tiny, and <arch>-100m for llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3)
  dropout_rate: float = 0.05  # DROPOUT_RATE: the paper's finetuning dropout
  learning_rate: float = 3e-3  # LEARNING_RATE: constant (1e-3 for the largest model)
  activation_dtype: str = "float32"  # ACTIVATION_DTYPE: float32 or bfloat16
  random_seed: int = 0  # RANDOM_SEED: init, dropout and the data stream
  mesh_data: int = -1  # MESH_DATA: data-parallel axis size; -1 = all devices left
  mesh_model: int = 1  # MESH_MODEL: model-parallel axis size
  num_microbatches: int = 1  # NUM_MICROBATCHES: gradient accumulation steps per batch
  checkpoint_period: int = 1000  # CHECKPOINT_PERIOD: steps between checkpoints
  keep_checkpoints: int | None = None  # KEEP_CHECKPOINTS: newest to keep (None: all)
  log_period: int = 10  # LOG_PERIOD: steps between metric writes
  z_loss: float = 1e-4  # Z_LOSS: t5x's auxiliary softmax-normaliser loss
  loss_normalizing_factor: float | str | None = None  # LOSS_NORMALIZING_FACTOR, as t5x
  decay_rate: float = 0.8  # Adafactor second-moment decay exponent (t5x: 0.8)
  step_offset: int = 0  # Adafactor decay step offset (t5x's step_offset)
  vocabulary: str | None = None  # VOCABULARY: flan_t5 | local | path (else env/default)
  pack: bool = True  # pack examples into rows (t5x's train DatasetConfig.pack)
  prefix_lm: bool = False  # PREFIX_LM: families with ModelFamily.prefix_lm (decoder-only);
  #   bidirectional attention over the prompt (seqio's decoder_causal_attention). False =
  #   causal LM, as HF models are trained
  use_cached: bool = False  # USE_CACHED_TASKS (gin/local/cached.gin): read the mixture's
  #   cached twin at TASK_FEATURE_LENGTHS (MIXTURE_OR_TASK_NAME may name the twin or the
  #   mixture) from seqio's cache, written by cache_tasks_main (README, Data at scale)
  seqio_cache_dirs: tuple = ()  # SEQIO_CACHE_DIRS: folders (or gs://) holding that cache,
  #   added to seqio's global cache dirs (t5x's --seqio_additional_cache_dirs)


class TrainError(ValueError):
  """A configuration problem found before any long work starts."""


def _model_config_and_params(cfg: TrainConfig, vocab_size: int):
  """(model config, host params or None) from the initial checkpoint or the named config."""
  overrides = {"dropout_rate": cfg.dropout_rate, "dtype": cfg.activation_dtype}
  if cfg.initial_checkpoint_path:
    from symbol_tuning.checkpoints import convert  # pylint: disable=g-import-not-at-top

    path = cfg.initial_checkpoint_path
    if not paths.is_remote(path) and not paths.path(path).exists():
      raise TrainError(f"INITIAL_CHECKPOINT_PATH {cfg.initial_checkpoint_path!r} does not exist")
    config, params = convert.load_any(cfg.initial_checkpoint_path)
    config = config.replace(**overrides)
  else:
    rounded = -(-vocab_size // 128) * 128  # t5x pads the vocabulary to a multiple of 128
    config = registry.get_config(cfg.model_size, vocab_size=rounded, **overrides)
    params = None
  if config.vocab_size < vocab_size:
    raise TrainError(f"the model's vocabulary ({config.vocab_size}) is smaller than the "
                     f"tasks' ({vocab_size}); pick the matching VOCABULARY")
  return config, params


def feature_lengths(family, lengths) -> dict:
  """TASK_FEATURE_LENGTHS as the data pipeline takes them (the family decides what it
  accepts: ModelFamily.feature_lengths); TrainError otherwise."""
  try:
    return family.feature_lengths(lengths)
  except ValueError as e:
    raise TrainError(str(e)) from None


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Adafactor as t5x configures it for finetuning: factored second moments, decay rate
  0.8, update clipping at 1, updates scaled by the parameter RMS, no momentum."""
  return optax.adafactor(
      learning_rate=cfg.learning_rate, decay_rate=cfg.decay_rate, decay_offset=cfg.step_offset,
      multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
      factored=True, min_dim_size_to_factor=128, eps=1e-30)


def make_train_step(model, optimizer, cfg: TrainConfig, family):
  """(state, batch, rng) -> (state, metrics), with gradient accumulation over microbatches;
  `family` (a ModelFamily) runs `model`'s training forward pass on a batch."""
  enable_dropout = cfg.dropout_rate > 0

  def forward(params, batch, rng):
    return family.forward(model, params, batch, enable_dropout=enable_dropout,
                          rngs={"dropout": rng}, prefix_lm=cfg.prefix_lm)

  def loss_sums(params, batch, rng):
    logits = forward(params, batch, rng)
    total, z, weights = losses.cross_entropy_with_z_loss(
        logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], cfg.z_loss)
    return total, (z, weights)

  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def train_step(state, batch, rng):
    params = state["params"]
    rng = jax.random.fold_in(rng, state["step"])
    if cfg.num_microbatches == 1:
      (total, (z, weights)), grads = grad_fn(params, batch, rng)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape((cfg.num_microbatches, -1) + x.shape[1:]), batch)

      def accumulate(carry, mb_and_index):
        mb, index = mb_and_index
        (t, (zz, w)), g = grad_fn(params, mb, jax.random.fold_in(rng, index))
        acc_g, acc_t, acc_z, acc_w = carry
        return (jax.tree.map(jnp.add, acc_g, g), acc_t + t, acc_z + zz, acc_w + w), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      (grads, total, z, weights), _ = jax.lax.scan(
          accumulate, (zeros, 0.0, 0.0, 0.0), (micro, jnp.arange(cfg.num_microbatches)))
    norm = losses.normalizer(cfg.loss_normalizing_factor, weights)
    grads = jax.tree.map(lambda g: g / norm, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                 "step": state["step"] + 1}
    per_token = lambda x: x / jnp.maximum(weights, 1.0)
    metrics = {"loss": per_token(total), "z_loss": per_token(z), "target_tokens": weights,
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return train_step


class Trainer:
  """Holds the compiled step, the mesh and the state; `run()` trains to TRAIN_STEPS."""

  def __init__(self, cfg: TrainConfig, devices=None):
    from symbol_tuning.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    import symbol_tuning.data.tasks  # pylint: disable=g-import-not-at-top,unused-import

    self.cfg = cfg
    if cfg.vocabulary:
      vocab_lib.set_vocabulary(cfg.vocabulary)
    data.check_name(cfg.mixture_or_task_name)
    if cfg.train_steps < 0:
      raise TrainError(f"TRAIN_STEPS must be >= 0, got {cfg.train_steps}")
    self.mesh = partitioning.make_mesh(cfg.mesh_data, cfg.mesh_model, devices)
    partitioning.check_batch(cfg.batch_size, self.mesh, cfg.num_microbatches)
    self.model_config, host_params = _model_config_and_params(
        cfg, vocab_lib.resolve().vocab_size)
    self.family = registry.family_of(self.model_config)
    if cfg.prefix_lm and not self.family.prefix_lm:
      raise TrainError(f"PREFIX_LM applies to decoder-only models only, not "
                       f"{self.family.name}")
    self.model = self.family.module(self.model_config)
    self.optimizer = make_optimizer(cfg)
    logical_axes = self.family.get_logical_axes(self.model_config)
    # Axes the mesh cannot split evenly (the tiny model's 4 heads on MESH_MODEL=8) are
    # replicated rather than failing in jax with an uneven-sharding error.
    self.rules, replicated = partitioning.fit_rules(
        self.mesh, logical_axes, self.family.param_shapes(self.model_config))
    if replicated and jax.process_index() == 0:
      print(f"mesh: {'; '.join(replicated)}", file=sys.stderr)
    self.param_shardings = partitioning.logical_to_shardings(self.mesh, logical_axes,
                                                             self.rules)
    self.state = self._initial_state(host_params)
    lengths = feature_lengths(self.family, cfg.task_feature_lengths)
    self.data_cfg = data.DataConfig(data.mixture_to_read(cfg.mixture_or_task_name, lengths,
                                                         cfg.use_cached, cfg.seqio_cache_dirs),
                                    lengths, cfg.batch_size, seed=cfg.random_seed,
                                    pack=cfg.pack, family=self.family.name,
                                    use_cached=cfg.use_cached)
    rep = partitioning.replicated(self.mesh)
    state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
    self._step = jax.jit(make_train_step(self.model, self.optimizer, cfg, self.family),
                         in_shardings=(state_shardings, partitioning.batch_sharding(self.mesh),
                                       rep),
                         out_shardings=(state_shardings, rep), donate_argnums=(0,))
    self.rng = jax.random.PRNGKey(cfg.random_seed)

  def _initial_state(self, host_params):
    # Random init runs on the host-independent jax PRNG, so every mesh gets the same
    # values; checkpoint params are placed shard by shard.
    """Params (from the checkpoint or random) and fresh optimizer state, on the mesh."""
    rep = partitioning.replicated(self.mesh)
    with self.context():
      if host_params is None:
        init = jax.jit(lambda r: self.family.init_params(self.model_config, r),
                       out_shardings=self.param_shardings)
        params = init(jax.random.PRNGKey(self.cfg.random_seed))
      else:
        params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x, np.float32), s),
                              host_params, self.param_shardings)
      opt_state = jax.jit(self.optimizer.init, out_shardings=rep)(params)
    return {"params": params, "opt_state": opt_state,
            "step": jax.device_put(jnp.zeros((), jnp.int32), rep)}

  def context(self):
    """Mesh and logical-axis rules for tracing the model (its activation constraints)."""
    import contextlib  # pylint: disable=g-import-not-at-top

    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def global_batch(self, host_batch):
    sharding = partitioning.batch_sharding(self.mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}

  def step(self, batch):
    with self.context():
      self.state, metrics = self._step(self.state, self.global_batch(batch), self.rng)
    return metrics

  def meta(self) -> dict:
    return {"model_config": self.model_config.to_dict(),
            "mixture_or_task_name": self.cfg.mixture_or_task_name,
            "task_feature_lengths": dict(self.data_cfg.task_feature_lengths),
            "batch_size": self.cfg.batch_size, "random_seed": self.cfg.random_seed}

  def run(self, progress: bool = True) -> dict:
    """Trains from the newest checkpoint in MODEL_DIR (or the start) to TRAIN_STEPS."""
    cfg, chief = self.cfg, jax.process_index() == 0
    try:
      model_dir = paths.make_dir(cfg.model_dir, "MODEL_DIR", settings.storage_timeout())
    except paths.StoragePathError as e:
      raise TrainError(str(e)) from None
    mngr = checkpointing.manager(str(model_dir), cfg.checkpoint_period, cfg.keep_checkpoints)
    restored = checkpointing.restore_latest(mngr, self.state)
    start = 0
    if restored is not None:
      start, self.state, _ = restored
    if chief:
      (model_dir / "config.gin").write_text(gin.config_str())
    writer = summaries.make_writer(str(model_dir), chief, start)
    bar = summaries.Progress(cfg.train_steps, start, enabled=chief, bar=progress)
    last = {"step": start}
    batches = self._batches(mngr, start)
    window = {"time": time.time(), "examples": 0, "tokens": 0, "steps": 0}
    step = start
    try:
      for step in range(start + 1, cfg.train_steps + 1):
        batch = next(batches)
        metrics = self.step(batch)
        window["steps"] += 1
        examples, tokens = self.family.batch_counts(batch)
        window["examples"] += examples
        window["tokens"] += tokens
        if step % cfg.log_period == 0 or step == cfg.train_steps:
          last = self._log(step, metrics, window, writer, bar)
        if step % cfg.checkpoint_period == 0 or step == cfg.train_steps:
          checkpointing.save(mngr, step, self.state, self.meta(), force=step == cfg.train_steps,
                             batches=batches)
        bar.update(step)
    except KeyboardInterrupt:
      # Ctrl-C: keep what was trained since the last checkpoint, then stop. If the
      # interrupt hit mid-step the state may be gone; the last checkpoint still holds.
      bar.close()
      try:
        current = int(jax.device_get(self.state["step"]))
        if mngr.latest_step() != current:  # the data position only if it is this step's
          checkpointing.save(mngr, current, self.state, self.meta(), force=True,
                             batches=batches)
      except RuntimeError:
        pass
      raise
    bar.close()
    mngr.wait_until_finished()
    writer.close()  # flushes; a gs:// run's TensorBoard staging folder goes
    return last

  def _batches(self, mngr, start: int) -> data.HostBatches:
    """The data stream at step `start`: restored from the checkpoint in seconds, or (a
    checkpoint without a data position) rebuilt and skipped to it."""
    if start:
      batches = data.HostBatches(self.data_cfg)
      if checkpointing.restore_data(mngr, start, batches):
        return batches
      if jax.process_index() == 0:
        print(f"data: checkpoint_{start} holds no data position for this stream; "
              f"rebuilding and skipping {start} batches", file=sys.stderr)
    return data.HostBatches(self.data_cfg, start_step=start)

  def _log(self, step, metrics, window, writer, bar) -> dict:
    # Fetch first: steps are dispatched asynchronously, and this waits for all of them.
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    elapsed = max(time.time() - window["time"], 1e-9)
    scalars.update(learning_rate=self.cfg.learning_rate,
                   examples_per_s=window["examples"] / elapsed,
                   tokens_per_s=window["tokens"] / elapsed,
                   seconds_per_step=elapsed / max(window["steps"], 1))
    writer.write_scalars(step, scalars)
    writer.flush()
    bar.update(step, scalars)
    window.update(time=time.time(), examples=0, tokens=0, steps=0)
    return {"step": step, **scalars}


def train(cfg: TrainConfig | None = None, progress: bool = True) -> dict:
  """Builds the trainer from gin (or `cfg`) and runs it; returns the last metrics."""
  partitioning.maybe_initialize_distributed()
  trainer = Trainer(cfg if cfg is not None else TrainConfig())  # pylint: disable=no-value-for-parameter
  return trainer.run(progress=progress)

