// Test helper: twin models trained step by step, one by tfjs (trainStep) and one by the graph, must agree.
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
