import re

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', open("vcar_tf/__init__.py").read()).group(1)

setup(
    name="vcar_tf",
    version=version,
    description="Compression-artifact removal for video in TensorFlow/Keras",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["vcar_tf", "vcar_tf.*"]) + ["vcar_tf._custom_ops"],
    # the C++ sources travel with the package; vcar_tf.ops.build compiles them on first use
    package_dir={"vcar_tf._custom_ops": "custom_ops"},
    package_data={"vcar_tf._custom_ops": ["*/*.cc", "*/*.h", "README.md"],
                  "vcar_tf": ["presets/*/card.json", "presets/*/model.weights.h5"]},
    install_requires=[
        "tensorflow-cpu==2.21.0",  # one TF wheel only; tensorflow-serving-api would pull `tensorflow`
        "keras==3.15.1",
        "numpy==2.4.6",
        "scipy==1.17.1",  # ndimage filters for SSIM
        "av==18.1.0",  # FFmpeg with libx265/libx264 inside the wheel
        "matplotlib==3.11.2",  # per-frame PSNR plots
        "tqdm==4.70.1",  # progress bars
        "absl-py==2.5.1",  # train_main.py flags
        "tensorboard==2.21.0",  # tf.summary needs it; tensorflow-cpu does not pull it in
        "scikit-image==0.26.0",  # ships the photographs of the embedded sample set; SSIM reference in tests
        "safetensors==0.8.0",  # reads released weights converted to safetensors (vcar-import)
        "ai-edge-litert==2.3.0",  # the LiteRT interpreter that runs .tflite exports (tf.lite.Interpreter is deprecated)
        "tf2onnx==1.17.0",  # ONNX export (opset 18); installs a top-level `tests` package of its own
        "onnx==1.23.2",  # tf2onnx's model format
        "onnxruntime==1.32.0",  # runs .onnx exports (vcar-evaluate, vcar-enhance, tests)
        # vcar-serve (tensorflow-serving-api is installed apart with --no-deps: see requirements.txt)
        "starlette==1.10.0",  # the REST app (maintained ASGI toolkit: routing, request streams, no hand parsing)
        "uvicorn==0.54.0",  # the HTTP server that runs it (h11)
        "grpcio==1.85.3",  # the gRPC server; the version tensorflow-cpu 2.21 already installs
        "prometheus-client==0.26.0",  # /monitoring/prometheus/metrics
    ],
    extras_require={
        # requests: the REST client of tests/test_serve.py; PyYAML: test_serve_deploy reads compose.yaml and
        # the Kubernetes manifests (it skipped where PyYAML came with no other package)
        "test": ["pytest==9.0.3", "requests==2.34.2", "PyYAML==6.0.3"],
        # benchmarks/bench_peer.py only: STDF-PyTorch's network with torchvision's deform_conv2d, the
        # peer issue 21 compares against; never imported by vcar_tf (torchvision 0.29.1 needs torch >= 2.14)
        "peer-bench": ["torch==2.14.1", "torchvision==0.29.1"],
    },
    entry_points={
        "console_scripts": [
            "vcar-prepare=vcar_tf.cli.prepare:main",
            "vcar-report=vcar_tf.cli.report:main",
            "vcar-evaluate=vcar_tf.cli.evaluate:main",
            "vcar-export=vcar_tf.cli.export:main",
            "vcar-enhance=vcar_tf.cli.enhance:main",
            "vcar-compare=vcar_tf.cli.compare:main",
            "vcar-import=vcar_tf.cli.import_weights:main",
            "vcar-serve=vcar_tf.cli.serve:main",
        ]
    },
)
