"""Writes test/fixtures/keras3-models.json.gz: three models as Keras 3 saves their topology, and their outputs.

The fixture of test/keras3.test.ts: a MobileNetV2, a Sequential model and a functional model nested in another. No
weights are stored: every weight is a hash of its position (below, and again in the test), so the test rebuilds the
same weights in TensorFlow.js and compares its predictions with the ones Keras computed here. Run it with the Python
that `npm run bench:train` installs (TensorFlow 2.21, Keras 3):
    .bench-venv/bin/python scripts/make-keras3-fixture.py
"""
import gzip
import json
import math
import os

import numpy as np
import keras

ALPHA, SIZE, CLASSES = 0.35, 96, 10


def uniform(count, salt):
    """`count` values in [-1, 1) from an integer hash of their position: exact in float64, so also in JavaScript."""
    i = np.arange(count, dtype=np.float64)
    return ((i * 2654435761 + salt * 40503) % 4294967296) / 4294967296 * 2 - 1


def weight_values(index, name, shape):
    """Weight `index` (in the model's order) named `name`: spread around each kind's usual values."""
    u = uniform(int(np.prod(shape)), index)
    if name.endswith('moving_variance'):
        values = 1 + 0.2 * u
    elif name.endswith('gamma'):
        values = 1 + 0.1 * u
    elif name.endswith('kernel'):
        # He-like scale: the fan-in is a kernel's all but last axes (a depthwise kernel's first two).
        fan_in = int(np.prod(shape[:2] if len(shape) == 4 and shape[-1] == 1 else shape[:-1]))
        values = math.sqrt(6.0 / fan_in) * u
    else:
        values = 0.1 * u
    return values.astype(np.float32).reshape(shape)


def input_values(shape):
    return uniform(int(np.prod(shape)), 1000).astype(np.float32).reshape(shape)


def case(model, about, input_shape):
    """One model of the fixture: its Keras 3 configuration, weight paths and shapes, and its predictions."""
    weights = [(w.path, list(w.shape)) for w in model.weights]
    model.set_weights([weight_values(k, path, shape) for k, (path, shape) in enumerate(weights)])
    expected = model.predict(input_values(input_shape), verbose=0)
    print(about, 'params', model.count_params(), 'expected', np.round(expected, 4).tolist())
    return {'about': about, 'modelConfig': json.loads(model.to_json()), 'weights': weights, 'inputShape': list(input_shape),
            'expected': expected.tolist()}


L = keras.layers
mobilenet = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None, classes=CLASSES)
sequential = keras.Sequential([
    keras.Input((16, 16, 3)), L.Conv2D(4, 3, name='seq_conv'), L.BatchNormalization(name='seq_bn'), L.ReLU(name='seq_relu'),
    L.GlobalAveragePooling2D(name='seq_pool'), L.Dense(5, activation='softmax', name='seq_out'),
], name='small_sequential')
trunk_in = keras.Input((16, 16, 3), name='trunk_input')
trunk_x = L.DepthwiseConv2D(3, padding='same', name='trunk_dw')(trunk_in)
trunk_x = L.BatchNormalization(name='trunk_bn')(trunk_x)
trunk = keras.Model(trunk_in, L.Add(name='trunk_add')([trunk_in, trunk_x]), name='trunk')
outer_in = keras.Input((16, 16, 3), name='outer_input')
outer_x = L.GlobalAveragePooling2D(name='outer_pool')(trunk(outer_in))
nested = keras.Model(outer_in, L.Dense(4, activation='softmax', name='outer_out')(L.Dropout(0.2, name='outer_drop')(outer_x)), name='nested')

fixture = {
    'kerasVersion': keras.__version__,
    'models': {
        'mobilenetv2': case(mobilenet, 'keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)', (2, SIZE, SIZE, 3)),
        'sequential': case(sequential, 'a Sequential model with an Input', (2, 16, 16, 3)),
        'nested': case(nested, 'a functional model inside a functional model', (2, 16, 16, 3)),
    },
}
out = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'keras3-models.json.gz')
with gzip.GzipFile(out, 'wb', mtime=0) as f:
    f.write(json.dumps(fixture, sort_keys=True).encode('utf-8'))
print('wrote', os.path.normpath(out), 'with Keras', keras.__version__)
