"""musiq-jax: a JAX/Flax training stack for MUSIQ and the IQA baselines around it."""

import setuptools

# Versions known to work together; lower bounds are the oldest releases whose
# APIs we use (jax.tree, jax.set_mesh, orbax args).
#
# `pip install musiq-jax` installs what scoring needs (`musiq_jax.load_scorer`,
# `python -m musiq_jax.predict`, the differentiable metric): no TensorFlow.
INSTALL_REQUIRES = [
    "jax>=0.7",
    "flax>=0.10",
    "numpy>=1.26",
    "pillow>=10.0",
    # libjpeg-turbo with TF's JPEG settings (fast integer IDCT): the
    # original's pixels without TensorFlow (musiq_jax/image_io.py).
    "simplejpeg>=1.8",
    "absl-py>=2.0",
    # jax's own dependency, held below 0.7: ml_dtypes 0.7.0's extension
    # module spends ~1.2 s of CPU when it is imported (0.6.0: 7 ms; measured
    # with `python -X importtime -c "import ml_dtypes"`), which every process
    # that imports jax pays. 0.6.0 has every dtype jax 0.10 looks up.
    "ml_dtypes>=0.5.1,<0.7",
    # `predict`'s progress bar (images done/total, images/s, time left):
    # the progress bar most of this field's tools already use.
    "tqdm>=4.60",
]

# Drawing (`predict --save_attention`, musiq_jax.visualize's plots).
VIZ = ["matplotlib>=3.8"]

# `musiq-jax[train]`: training, evaluation and the datasets (tf.data input
# pipelines, TFDS builders, checkpoints, TensorBoard).
TRAIN = [
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "tensorflow-cpu>=2.16",
    # clu.metric_writers imports tensorboard, which tensorflow no longer pulls in.
    "tensorboard>=2.16",
    "tensorflow-datasets>=4.9.6",
    # TFDS imports it lazily for builders defined outside its own package
    # (musiq_jax.datasets) but does not declare it.
    "importlib_resources>=5.0",
    # SPAQ's label sheet is .xlsx (musiq_jax/datasets/spaq.py).
    "openpyxl>=3.1",
    "ml-collections>=0.1.1",
    "clu>=0.0.12",
    "scikit-image>=0.22",  # pristine photos for the offline default dataset
    "scipy>=1.11",
] + VIZ

EXTRAS_REQUIRE = {
    "train": TRAIN,
    "viz": VIZ,
    # CLIP heads: weight files and BPE tokenizer files brought by the user.
    "clip": ["safetensors>=0.4", "tokenizers>=0.15"],
    # The tests train too (and use TF as the oracle of the preprocessing).
    "test": TRAIN + [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "safetensors>=0.4",
        "tokenizers>=0.15",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        # Same as "oracle": CI runs the CLIP oracle tests.
        "torch==2.13.0",
        "open_clip_torch==3.3.0",
        "transformers>=5.0",
    ],
    # Reference CLIPs for tests/test_clip_*.py. torch is pinned to the CPU build
    # installed from the local file; open_clip is pinned because the tests import
    # its model code around the (CUDA-only, unimportable) torchvision it pulls in.
    "oracle": ["torch==2.13.0", "open_clip_torch==3.3.0", "transformers>=5.0"],
    # benchmarks/inference_bench.py: pyiqa's MUSIQ runs on torch (pyiqa's own
    # model file is fetched with `pip download pyiqa==0.1.16 --no-deps`);
    # its "before" column and jpeg_decoder_check.py use TF as the reference.
    "benchmarks": TRAIN + ["torch==2.13.0"],
}

setuptools.setup(
    name="musiq-jax",
    version="0.1.0",
    description="MUSIQ (multi-scale image quality transformer) in JAX/Flax: "
    "released-checkpoint inference, training, and IQA baselines.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["musiq_jax", "musiq_jax.*"]) +
    ["musiq_jax.configs"],
    # configs/ lives at the top level (flax/big_vision style) but installs as
    # musiq_jax.configs, so it never clashes with another `configs` package.
    package_dir={"musiq_jax.configs": "configs"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
