import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadTf, loadTfWithInfo } from '../lib/tf.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

test('loadTf picks a backend once and says why', () => {
  const { tf, info } = loadTfWithInfo();
  assert.equal(loadTf(), tf);
  assert.ok(info.reasons.length > 0);
  assert.equal(info.backend, tf.getBackend());
  if (process.env.PNEUMOTYPE_REQUIRE_NATIVE === '1' || process.env.CI === 'true') {
    assert.equal(info.backend, 'tensorflow', `native backend required: ${info.reasons.join('; ')}`);
    assert.match(info.libtensorflowVersion ?? '', /^\d+\.\d+/);
  }
});

test('the leak checker sees leaks and passes clean code', async () => {
  const tf = loadTf();
  await assertNoTensorLeak('tidy sum', () => tf.tidy(() => tf.ones([4, 4]).sum().dataSync()));
  const kept: unknown[] = [];
  await assert.rejects(assertNoTensorLeak('leaky', () => kept.push(tf.ones([2]))), /leaky leaked 1 tensor\(s\)/);
  for (const t of kept) (t as { dispose(): void }).dispose();
});
