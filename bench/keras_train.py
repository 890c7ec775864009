# Keras side of `npm run bench:train`: the same classifier as lib/models.ts, trained with model.fit, images/s as JSON.
"""Builds the pneumotype architectures (resnet, mobile, tiny) in Keras 3 on TensorFlow and times model.fit's steps.

Every knob that changes the amount of work is a command-line option, so that bench/train.ts can pass exactly what
the TensorFlow.js model uses (it reads them back from the tfjs layers' configurations).

Two ways to run it:
  python bench/keras_train.py --model resnet --image-size 128 --batch 32 --width 16 --blocks 2 --steps 10
      builds, warms up, runs the timed blocks and prints one JSON object as its last line.
  python bench/keras_train.py ... --serve
      builds and warms up, prints {"event": "ready", ...}, then for each line "run" on stdin runs one timed block and
      prints {"event": "block", ...}; "quit" (or the end of stdin) stops it. bench/train.ts uses this to alternate
      tfjs and Keras blocks, so that load from other processes affects both sides alike.
Protocol lines are the only thing written to stdout; TensorFlow's own logging goes to stderr.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet", choices=["resnet", "mobile", "tiny"])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", default="2,2,2,2", help="resnet blocks per stage, comma-separated")
    p.add_argument("--stem-kernel", type=int, default=0, help="resnet stem kernel; 0: 7 from 128 px, else 5")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--bn-momentum", type=float, default=0.9)
    p.add_argument("--bn-epsilon", type=float, default=1e-3)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--class-weights", default="", help="comma-separated, one per class; empty: none")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--adam-epsilon", type=float, default=1e-7)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (graph tracing included)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per block")
    p.add_argument("--blocks", type=int, default=2, help="timed blocks (not with --serve)")
    p.add_argument("--serve", action="store_true", help="wait for 'run' lines on stdin, one timed block each")
    p.add_argument("--eager", action="store_true", help="diagnosis: run_eagerly=True (op by op, as tfjs does)")
    p.add_argument("--jit", action="store_true", help="diagnosis: jit_compile=True (XLA)")
    p.add_argument("--no-bn", action="store_true", help="diagnosis: leave the BatchNormalization layers out")
    return p.parse_args(argv)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def build(keras, a):
    """The architecture of lib/models.ts, layer for layer (names included)."""
    layers = keras.layers
    reg = keras.regularizers.L2(a.l2) if a.l2 > 0 else None
    seeds = iter(range(a.seed, a.seed + 10_000))

    def conv(x, name, filters, kernel, strides=1):
        return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name,
                             kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
                             kernel_regularizer=reg)(x)

    def depthwise(x, name, strides):
        return layers.DepthwiseConv2D(3, strides=strides, padding="same", depth_multiplier=1, use_bias=False,
                                      name=name,
                                      depthwise_initializer=keras.initializers.HeNormal(seed=next(seeds)))(x)

    def bn(x, name, zero_gamma=False):
        if a.no_bn:
            return x
        return layers.BatchNormalization(momentum=a.bn_momentum, epsilon=a.bn_epsilon, name=name,
                                         gamma_initializer="zeros" if zero_gamma else "ones")(x)

    def relu(x, name, max_value=None):
        return layers.ReLU(max_value=max_value, name=name)(x)

    def head(x):
        y = layers.GlobalAveragePooling2D(name="pool")(x)
        if a.dropout > 0:
            y = layers.Dropout(a.dropout, seed=next(seeds), name="dropout")(y)
        return layers.Dense(a.classes, activation="softmax", name="logits",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
                            kernel_regularizer=reg)(y)

    inp = keras.Input(shape=(a.image_size, a.image_size, 1), name="image", dtype="float32")
    w = a.width
    if a.model == "resnet":
        stem = a.stem_kernel or (7 if a.image_size >= 128 else 5)
        y = relu(bn(conv(inp, "stem_conv", w, stem, 2), "stem_bn"), "stem_relu")
        y = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(y)
        channels = w
        for s, blocks in enumerate(int(d) for d in a.depth.split(",")):
            out = w * 2 ** s
            for i in range(blocks):
                p = f"stage{s + 1}_block{i + 1}"
                stride = 2 if s > 0 and i == 0 else 1
                shortcut = y
                if stride != 1 or channels != out:
                    shortcut = bn(conv(y, f"{p}_proj", out, 1, stride), f"{p}_proj_bn")
                r = relu(bn(conv(y, f"{p}_conv1", out, 3, stride), f"{p}_bn1"), f"{p}_relu1")
                r = bn(conv(r, f"{p}_conv2", out, 3), f"{p}_bn2", True)
                y = relu(layers.Add(name=f"{p}_add")([shortcut, r]), f"{p}_relu2")
                channels = out
    elif a.model == "mobile":
        def ch(mult):  # Math.round of JavaScript (halves up), not Python's banker's rounding
            return max(1, math.floor(w * mult + 0.5))
        stages = [(1, 1, 1, 1), (6, 1.5, 2, 2), (6, 2, 3, 2), (6, 4, 4, 2), (6, 6, 3, 1), (6, 10, 3, 2), (6, 20, 1, 1)]
        channels = ch(2)
        y = relu(bn(conv(inp, "stem_conv", channels, 3, 2), "stem_bn"), "stem_relu", 6)
        index = 0
        for t, c, n, s in stages:
            out = ch(c)
            for i in range(n):
                index += 1
                p = f"block{index}"
                stride = s if i == 0 else 1
                residual = stride == 1 and channels == out
                r = y
                if t != 1:
                    r = relu(bn(conv(r, f"{p}_expand", channels * t, 1), f"{p}_expand_bn"), f"{p}_expand_relu", 6)
                r = relu(bn(depthwise(r, f"{p}_depthwise", stride), f"{p}_depthwise_bn"), f"{p}_depthwise_relu", 6)
                r = bn(conv(r, f"{p}_project", out, 1), f"{p}_project_bn", residual)
                y = layers.Add(name=f"{p}_add")([y, r]) if residual else r
                channels = out
        y = relu(bn(conv(y, "top_conv", ch(80), 1), "top_bn"), "top_relu", 6)
    else:
        y = inp
        for i in range(4):
            p = f"block{i + 1}"
            y = relu(bn(conv(y, f"{p}_conv", w * 2 ** i, 3), f"{p}_bn"), f"{p}_relu")
            y = layers.MaxPooling2D(2, strides=2, padding="same", name=f"{p}_pool")(y)
    return keras.Model(inp, head(y), name=a.model)


def main(argv):
    a = parse_args(argv)
    t0 = time.perf_counter()
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(a.seed)
    model = build(keras, a)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=a.learning_rate, epsilon=a.adam_epsilon),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=a.label_smoothing),
        metrics=["accuracy"],
        run_eagerly=a.eager,
        jit_compile=True if a.jit else "auto",
    )
    rng = np.random.default_rng(a.seed)
    n = a.batch * 4
    x = rng.random((n, a.image_size, a.image_size, 1), dtype=np.float32)
    y = np.eye(a.classes, dtype=np.float32)[rng.integers(0, a.classes, n)]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(a.batch, drop_remainder=True).repeat()
    ds = ds.prefetch(tf.data.AUTOTUNE)
    weights = [float(v) for v in a.class_weights.split(",") if v.strip()]
    class_weight = {i: v for i, v in enumerate(weights)} if weights else None

    class BatchTimer(keras.callbacks.Callback):
        """The time from the first batch's begin to the last batch's end of one fit. Each timed block is a fit of its
        own, and fit's start-up (callbacks, the data iterator, class_weight's ds.map; about 50 ms) and wind-down are
        not training: the tfjs side's timed loop has neither. A callback with on_train_batch_end makes Keras call the
        batch-end hooks in order instead of on a thread (reading the step's loss and accuracy back, a few scalars after
        a step that is already done on the CPU), so the end is taken when the last step's results are there."""

        def __init__(self):
            super().__init__()
            self.start = self.end = None

        def on_train_batch_begin(self, batch, logs=None):
            if self.start is None:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    def fit(steps):
        """Runs `steps` steps in one model.fit; returns the seconds from the first step's start to the last one's end."""
        timer = BatchTimer()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, class_weight=class_weight, shuffle=False,
                  callbacks=[timer])
        if timer.start is None or timer.end is None:
            raise RuntimeError(f"model.fit ran no batch (steps_per_epoch={steps})")
        return timer.end - timer.start

    started = time.perf_counter()
    fit(max(1, a.warmup))
    warm_seconds = time.perf_counter() - started
    info = {
        "model": a.model,
        "imageSize": a.image_size,
        "batchSize": a.batch,
        "parameters": int(model.count_params()),
        "trainableParameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "weightShapes": sorted(json.dumps([int(d) for d in w.shape], separators=(",", ":")) for w in model.weights),
        "layers": len(model.layers),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "jitCompile": bool(getattr(model, "jit_compile", False)),
        "runEagerly": bool(model.run_eagerly),
        "intraOpThreads": tf.config.threading.get_intra_op_parallelism_threads(),
        "interOpThreads": tf.config.threading.get_inter_op_parallelism_threads(),
        "oneDnn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "method": "model.fit on a repeated tf.data dataset, steps_per_epoch=steps, verbose=0, class_weight; timed from "
                  "the first batch's begin to the last batch's end (a callback), fit's start-up left out",
        "warmupSteps": max(1, a.warmup),
        "warmupSeconds": round(warm_seconds, 3),
        "startupSeconds": round(time.perf_counter() - t0, 3),
    }

    def block():
        seconds = fit(a.steps)
        return {"steps": a.steps, "seconds": round(seconds, 4), "imagesPerSecond": a.steps * a.batch / seconds}

    if a.serve:
        emit({"event": "ready", **info})
        for line in sys.stdin:
            command = line.strip()
            if command == "run":
                emit({"event": "block", **block()})
            elif command == "quit":
                break
            elif command:
                emit({"event": "error", "message": f"unknown command {command!r}: expected 'run' or 'quit'"})
        return
    blocks = [block() for _ in range(a.blocks)]
    rates = [b["imagesPerSecond"] for b in blocks]
    emit({**info, "blocks": blocks, "kerasImagesPerSecond": statistics.median(rates)})


if __name__ == "__main__":
    main(sys.argv[1:])
