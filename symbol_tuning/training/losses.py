"""t5x's loss: token cross-entropy with z-loss, on target tokens only."""
import jax
import jax.numpy as jnp

NUM_REAL_TARGET_TOKENS = "NUM_REAL_TARGET_TOKENS"


def cross_entropy_with_z_loss(logits, targets, weights, z_loss: float):
  """(sum of weighted token losses, sum of weighted z-losses, sum of weights).

  Per token: -log softmax(logits)[target] + z_loss * logsumexp(logits)^2, the auxiliary
  term t5x uses to keep the softmax normaliser near 1 (Z_LOSS = 1e-4 in t5_1_1 gin files).
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  token_loss = log_z - target_logit
  token_z = z_loss * jnp.square(log_z)
  weights = weights.astype(jnp.float32)
  return (jnp.sum((token_loss + token_z) * weights), jnp.sum(token_z * weights),
          jnp.sum(weights))


def normalizer(loss_normalizing_factor, weight_sum):
  """What the summed loss is divided by, as in t5x: None = 1 (the sum, t5x's default),
  a number (e.g. pretraining batch x target length), or 'NUM_REAL_TARGET_TOKENS'."""
  if loss_normalizing_factor is None:
    return jnp.float32(1.0)
  if loss_normalizing_factor == NUM_REAL_TARGET_TOKENS:
    return jnp.maximum(weight_sum, 1.0)
  if isinstance(loss_normalizing_factor, str):
    raise ValueError(f"LOSS_NORMALIZING_FACTOR: unknown {loss_normalizing_factor!r}; use "
                     f"None, a number or {NUM_REAL_TARGET_TOKENS!r}")
  return jnp.float32(loss_normalizing_factor)
