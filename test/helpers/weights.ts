// Test helper: which weights of a model a training step moved.
import type { Tensor } from '@tensorflow/tfjs';
import { loadTf } from '../../lib/tf.js';

/**
 * The names of `model`'s weights whose values differ anywhere from `reference` (tensors in the model's weight order:
 * clones taken before a step, or another model's weights).
 */
export function movedWeights(model: { weights: ReadonlyArray<{ read(): Tensor; originalName: string }> }, reference: readonly Tensor[]): string[] {
  const tf = loadTf();
  return model.weights
    .filter((w, i) => tf.tidy(() => tf.any(tf.notEqual(w.read(), reference[i] ?? w.read())).dataSync()[0]) === 1)
    .map((w) => w.originalName);
}
