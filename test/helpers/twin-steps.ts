// Test helper: twin models trained step by step, one by tfjs (trainStep) and one by the graph, must agree; and how far apart their tensors are.
import assert from 'node:assert/strict';
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs';
import { loadTf } from '../../lib/tf.js';
import { trainStep } from '../../lib/train.js';

/** What one training step returns: the batch loss and the count of right answers. */
interface StepResult {
  readonly loss: Tensor;
  readonly correct: Tensor;
}

/**
 * Runs `steps` steps on one batch, `eager` through trainStep and the graph twin through `graphStep`, both with label
 * smoothing 0.05, and asserts each step's losses agree within `tolerance` (and the correct counts, with
 * `sameCorrect`). `beforeStep` runs first at each step (to set learning rates, say).
 */
export async function assertStepsAgree(options: {
  readonly eager: LayersModel;
  readonly optimizer: Optimizer;
  readonly graphStep: (xs: Tensor, ys: Tensor) => StepResult;
  readonly xs: Tensor;
  readonly ys: Tensor;
  readonly classWeights: Tensor;
  readonly steps: number;
  readonly tolerance: number;
  readonly sameCorrect?: boolean;
  readonly beforeStep?: (step: number) => void;
}): Promise<void> {
  const tf = loadTf();
  const { eager, optimizer, xs, ys, classWeights } = options;
  for (let step = 0; step < options.steps; step++) {
    options.beforeStep?.(step);
    const a = trainStep({ model: eager, optimizer, xs, ys, classWeights, labelSmoothing: 0.05 });
    const b = options.graphStep(xs, ys);
    const [la, lb] = [(await a.loss.data())[0] ?? 0, (await b.loss.data())[0] ?? 0];
    assert.ok(Math.abs(la - lb) < options.tolerance, `step ${step + 1}: loss ${la} vs ${lb}`);
    if (options.sameCorrect) assert.equal((await b.correct.data())[0], (await a.correct.data())[0]);
    tf.dispose([a.loss, a.correct, b.loss, b.correct]);
  }
}

/** The largest difference between two lists of tensors, relative to each tensor's largest magnitude (at least 1). */
export async function maxDifference(a: Array<{ tensor: Tensor } | Tensor>, b: Array<{ tensor: Tensor } | Tensor>): Promise<number> {
  const tf = loadTf();
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as { tensor: Tensor } | Tensor;
    const y = b[i] as { tensor: Tensor } | Tensor;
    const [tx, ty] = ['tensor' in x ? x.tensor : x, 'tensor' in y ? y.tensor : y];
    const d = tf.tidy(() => tf.div(tf.max(tf.abs(tf.sub(tx, ty))), tf.maximum(1, tf.max(tf.abs(tx)))));
    max = Math.max(max, (await d.data())[0] ?? Number.NaN);
    d.dispose();
  }
  return max;
}
