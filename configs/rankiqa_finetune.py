r"""RankIQA stage 2: fine-tune the ranked backbone on MOS (CPU-sized).

    python -m musiq_jax.main --config=configs/rankiqa_finetune.py \
        --workdir=W2 --config.init.pretrained_workdir=W1

W1 is a finished configs/rankiqa_pretrain.py run (its best.npz); the head is
re-initialised (`init.dont_load`), everything else is loaded. Trains MSE on
MOS over random crops + horizontal flips of synthetic_iqa/small's train
split, keeps the step with the best validation SRCC, and scores
validation/test with the mean over random crops (RankIQA's protocol). Must
use the same `model`/`crop_size` as the pretraining run. Without
`init.pretrained_workdir` it trains from scratch (the no-ranking ablation).

Args: "tiny" = test-sized, to pair with rankiqa_pretrain.py:tiny; "musiq"
= MUSIQ as the backbone, to pair with rankiqa_pretrain.py:musiq.
"""

import importlib.util
import os

from ml_collections import config_dict

from musiq_jax.configs import base


def _pretrain_config(arg):
  # Shares every field with the pretraining config (same backbone, crops,
  # dataset) so the two stages cannot drift apart.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "rankiqa_pretrain.py")
  spec = importlib.util.spec_from_file_location("rankiqa_pretrain", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  words = base.args(arg, ("musiq",), config="rankiqa_finetune.py")
  c = _pretrain_config(arg)
  c.task = "crops"  # musiq_jax.tasks.CropTask on MOS.
  c.stage = "finetune"
  c.loss = config_dict.ConfigDict(dict(kind="mse"))  # RankIQA: L2 on MOS.
  # A fresh head predicting 0 would start with a large MSE on MOS 1..5, so it
  # starts random as RankIQA's new fc layer.
  if c.model_name == "musiq":
    # MUSIQ's head: zero kernel, bias at the MOS range's centre (as the
    # MUSIQ task's regression head, `tasks.head_bias_init`).
    c.model.head_bias_init = 0.5 * (c.mos_range[0] + c.mos_range[1])
  else:
    c.model.zero_init_head = False
  c.input.batch_size = 32  # Crops per step (RankIQA's fine-tune batch: 16+).
  c.input.flip = True  # Random crop + horizontal flip as in RankIQA.
  c.optimizer.name = "sgd"  # RankIQA: SGD, momentum 0.9, wd 5e-4.
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  # RankIQA: 1e-5 (TID) / 1e-6 (LIVE) on VGG-16; scaled up with the
  # pretraining LR for the shallow net and few steps.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "step"
  c.optimizer.step_size = 200  # RankIQA: every 5k of 10k (1/2 of the run).
  c.optimizer.gamma = 0.5  # RankIQA's fine-tune gamma.
  c.optimizer.grad_clip_norm = 1.0  # Guards the random head's first steps.
  c.num_train_steps = 400  # RankIQA: 10k-20k; 535 s on an idle 2-core CPU.
  c.eval_every_steps = 100  # Best-by-validation-SRCC selection.
  if c.model_name == "musiq":
    # Adam as the pretraining stage's MUSIQ (configs/rankiqa_pretrain.py),
    # a smaller step for fine-tuning.
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.weight_decay = 0.0
  if "tiny" in words:
    c.input.batch_size = 8
    c.num_train_steps = 4
    c.optimizer.step_size = 2
    c.eval_every_steps = 2
  return c
