"""Parses and finalizes our gin/t5x files with the real t5x, without running a job.

Run as a script (it must be __main__: our files bind `__main__.train` / `__main__.evaluate`,
as t5x's binaries are run). Reads a JSON list of cases from stdin,
  {"binary": "train" | "evaluate", "files": [...], "bindings": ["NAME = value", ...]},
parses each with t5x's own gin_utils (which adds t5x's gin root to the search path), calls
the configured function, and so evaluates every macro, @reference and REQUIRED value with
t5x's real modules: models, network, Adafactor, partitioner, DatasetConfig. Only the body of
train()/evaluate() is replaced, by one that records the arguments (gin checks them against
the real signatures). Prints one JSON summary per case.
"""
import functools
import json
import sys

import gin


def _capture(fn, store):
  @functools.wraps(fn)  # gin validates bindings against the real signature
  def record(**kwargs):
    store.clear()
    store.update(kwargs)

  return record


def _dataset(cfg):
  if cfg is None:
    return None
  return {"name": cfg.mixture_or_task_name, "lengths": cfg.task_feature_lengths,
          "split": cfg.split, "batch_size": cfg.batch_size, "pack": cfg.pack,
          "use_cached": cfg.use_cached, "seed": cfg.seed}


def _model(model):
  config = model.module.config
  converter = model.FEATURE_CONVERTER_CLS(pack=True, use_custom_packing_ops=False)
  layers = getattr(config, "num_encoder_layers", None) or config.num_layers  # T5 | decoder-only
  return {"emb_dim": getattr(config, "emb_dim", None) or config.d_model,  # T5 | decoder-only
          "num_layers": layers, "config": config.to_dict() if hasattr(config, "to_dict") else None,
          "model_class": type(model).__name__,
          "dropout_rate": config.dropout_rate, "vocab_size": config.vocab_size,
          "optimizer": f"{type(model.optimizer_def).__module__}."
                       f"{type(model.optimizer_def).__name__}",
          "converter": f"{type(converter).__module__}.{type(converter).__name__}",
          "vocabulary_size": model.output_vocabulary.vocab_size,
          "same_vocabulary": model.input_vocabulary is model.output_vocabulary}


def _query(name):
  """A bound value, with macros (%NAME) resolved."""
  value = gin.query_parameter(name)
  while isinstance(value, gin.config.ConfigurableReference) and value.configurable.name == "macro":
    value = gin.query_parameter(f"{value.scoped_selector.split('/')[0]}/macro.value")
  return value


def summarize(binary, args):
  out = {"model": _model(args["model"])}
  if binary == "train":
    out.update(
        total_steps=args["total_steps"], model_dir=args["model_dir"],
        train=_dataset(args["train_dataset_cfg"]),
        train_eval=_dataset(args["train_eval_dataset_cfg"]),
        infer_eval=_dataset(args["infer_eval_dataset_cfg"]),
        restore_path=args["checkpoint_cfg"].restore.path,
        save_period=args["checkpoint_cfg"].save.period,
        num_microbatches=_query("trainer.Trainer.num_microbatches"),
        learning_rate=_query("utils.create_learning_rate_scheduler.base_learning_rate"),
        lr_factors=_query("utils.create_learning_rate_scheduler.factors"))
  else:
    out.update(dataset=_dataset(args["dataset_cfg"]),
               restore_path=args["restore_checkpoint_cfg"].path,
               output_dir=args["output_dir"])
  out["num_partitions"] = args["partitioner"]._num_partitions  # pylint: disable=protected-access
  return out


def main():
  import __main__  # pylint: disable=import-outside-toplevel
  from t5x import eval as t5x_eval  # pylint: disable=import-outside-toplevel
  from t5x import gin_utils  # pylint: disable=import-outside-toplevel
  from t5x import train as t5x_train  # pylint: disable=import-outside-toplevel

  from symbol_tuning.data import vocab  # pylint: disable=import-outside-toplevel

  captured = {}
  __main__.train = _capture(t5x_train.train, captured)
  __main__.evaluate = _capture(t5x_eval.evaluate, captured)
  gin_dir = sys.argv[1]
  results = []
  for case in json.load(sys.stdin):
    gin.clear_config(clear_constants=True)
    vocab.set_vocabulary(None)  # each case chooses its vocabulary afresh
    try:
      gin_utils.parse_gin_flags([gin_dir], case["files"], case.get("bindings", []))
      fn = __main__.train if case["binary"] == "train" else __main__.evaluate
      gin.get_configurable(fn)()
      results.append(summarize(case["binary"], captured))
    except Exception as e:  # pylint: disable=broad-except  (reported per case)
      results.append({"error": f"{type(e).__name__}: {e}"})
  print("PROBE_RESULTS " + json.dumps(results, default=str))


if __name__ == "__main__":
  main()
