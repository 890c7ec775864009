// Test helper: fails a test when a call leaves TensorFlow.js tensors behind (after one warm-up call).
import assert from 'node:assert/strict';
import { loadTf } from '../../lib/tf.js';

/**
 * Runs `fn` once to warm up (lazy variables, kernels), then again, and asserts the number of live tensors did not
 * grow during the second call.
 */
export async function assertNoTensorLeak(name: string, fn: () => unknown | Promise<unknown>): Promise<void> {
  const tf = loadTf();
  await fn();
  const before = tf.memory().numTensors;
  await fn();
  const after = tf.memory().numTensors;
  assert.equal(after, before, `${name} leaked ${after - before} tensor(s)`);
}
