"""CLIP heads for IQA in Flax: CLIP towers, weight import, LIQE, CLIP-IQA, linear probe.

Modules: `model` (CLIP), `model_sizes` (size registry), `weights` (safetensors
import, both layouts), `convert_torch` (PyTorch .pt/.bin -> safetensors, needs
torch), `tokenizer` (BPE via `tokenizers`), `prompts`, `heads` (LIQE, CLIPIQA,
ClipLinearProbe and read-outs), `preprocess` (TF ops). Their losses are the
fidelity head of `musiq_jax.losses`; they train through `musiq_jax.trainer`
(task "crops"). See docs/clip.md.
"""
