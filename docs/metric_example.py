r"""MUSIQ as a loss: raise the score of a blurred photo by gradient steps.

    python docs/metric_example.py --ckpt_path=workdirs/synthetic/best.npz \
        [--photo=chelsea] [--steps=10] [--out=docs/images/metric_deblur.png]

Blurs a scikit-image photo, then takes `--steps` Adam steps on the pixels
with `loss = -musiq(x)` (`Scorer.as_loss()`), keeping them in [0, 1], and
prints the score before, during and after; writes the three images side by
side when `--out` is given. See docs/metric.md.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageFilter
from skimage import data as skdata

import musiq_jax


def blurred_photo(name: str, max_side: int, radius: float) -> np.ndarray:
  im = Image.fromarray(getattr(skdata, name)())
  scale = max_side / max(im.size)
  im = im.resize((round(im.width * scale), round(im.height * scale)),
                 Image.BICUBIC)
  sharp = np.asarray(im)
  blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(radius)))
  return sharp, blurred


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--ckpt_path", required=True)
  ap.add_argument("--photo", default="chelsea")
  ap.add_argument("--max_side", type=int, default=256)
  ap.add_argument("--blur", type=float, default=2.0,
                  help="Gaussian blur radius in pixels.")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--lr", type=float, default=0.01)
  ap.add_argument("--out", default=None)
  args = ap.parse_args()

  scorer = musiq_jax.load_scorer(args.ckpt_path)
  musiq = scorer.as_loss()
  sharp, blurred = blurred_photo(args.photo, args.max_side, args.blur)
  x = jnp.asarray(blurred[None] / 255.0, jnp.float32)
  opt = optax.adam(args.lr)
  state = opt.init(x)

  @jax.jit
  def step(x, state, params):
    loss, grad = jax.value_and_grad(lambda x: -musiq(x, params).mean())(x)
    updates, state = opt.update(grad, state)
    return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), state, loss

  s_sharp = float(musiq(jnp.asarray(sharp[None] / 255.0, jnp.float32))[0])
  s_blur = float(musiq(x)[0])
  print(f"{args.photo} {sharp.shape[1]}x{sharp.shape[0]}: sharp "
        f"{s_sharp:.3f}, blurred (radius {args.blur}) {s_blur:.3f}")
  for i in range(args.steps):
    x, state, loss = step(x, state, scorer.params)
    print(f"step {i + 1:2d}: score before the step {-float(loss):.3f}")
  s_after = float(musiq(x)[0])
  change = np.abs(np.asarray(x[0]) - blurred / 255.0)
  print(f"after {args.steps} steps: {s_after:.3f} (blurred {s_blur:.3f}, "
        f"sharp {s_sharp:.3f}); mean |pixel change| {change.mean() * 255:.1f} "
        f"/ 255, max {change.max() * 255:.0f}")
  if args.out:
    optimised = np.round(np.asarray(x[0]) * 255).astype(np.uint8)
    # The saved image is rounded to uint8: score what is shown.
    s_shown = float(musiq(jnp.asarray(optimised[None] / 255.0,
                                      jnp.float32))[0])
    row = np.concatenate([sharp, blurred, optimised], axis=1)
    Image.fromarray(row).save(args.out)
    print(f"wrote {args.out}: sharp {s_sharp:.3f} | blurred {s_blur:.3f} | "
          f"after {args.steps} steps {s_shown:.3f} (as saved, uint8)")


if __name__ == "__main__":
  main()
