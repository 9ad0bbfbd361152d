"""CLIP heads for IQA in Flax: CLIP towers, weight import, LIQE, CLIP-IQA, linear probe.

Modules: `model` (CLIP), `model_sizes` (size registry), `weights` (safetensors
import, both layouts), `convert_torch` (PyTorch .pt/.bin -> safetensors, needs
torch), `tokenizer` (BPE via `tokenizers`), `prompts`, `heads` (LIQE, CLIPIQA,
ClipLinearProbe and read-outs), `losses`, `preprocess` (TF ops), `train_lib`
(a pure train step). See docs/clip.md.
"""
