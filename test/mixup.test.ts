// Mixup: the Beta draw, the in-place blend of images and label rows, and its seeded use in training batches.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkMixup, mixBatch, sampleBeta } from '../lib/mixup.js';
import { createRng } from '../lib/random.js';

test('sampleBeta: draws in [0, 1] with mean 1/2; small alphas pile up near 0 and 1, large ones near 1/2', () => {
  const draws = (alpha: number): number[] => {
    const rng = createRng(5);
    return Array.from({ length: 4000 }, () => sampleBeta(alpha, rng));
  };
  for (const alpha of [0.2, 1, 4]) {
    const d = draws(alpha);
    assert.ok(d.every((v) => v >= 0 && v <= 1), `alpha ${alpha}`);
    const mean = d.reduce((a, b) => a + b, 0) / d.length;
    assert.ok(Math.abs(mean - 0.5) < 0.02, `alpha ${alpha}: mean ${mean}`);
    // Var Beta(a, a) = 1 / (4 (2a + 1)).
    const variance = d.reduce((a, b) => a + (b - mean) ** 2, 0) / d.length;
    const expected = 1 / (4 * (2 * alpha + 1));
    assert.ok(Math.abs(variance - expected) < 0.1 * expected, `alpha ${alpha}: variance ${variance}, expected ${expected}`);
  }
  assert.deepEqual(draws(0.2).slice(0, 5), draws(0.2).slice(0, 5));
});

test('mixBatch blends each image with a partner and its label row alike; its own class stays the larger part', () => {
  // Image i is a constant value[i] with label i: every blend can be read back from the label row.
  const value = [0, 0.5, 1];
  const pixels = 5;
  let changed = 0;
  for (let seed = 0; seed < 20; seed++) {
    const x = new Float32Array(value.flatMap((v) => Array<number>(pixels).fill(v)));
    const y = new Float32Array([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    mixBatch(x, y, { count: 3, classes: 3, alpha: 0.4, seed });
    for (let i = 0; i < 3; i++) {
      const row = Array.from(y.subarray(i * 3, i * 3 + 3));
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-6);
      const lam = row[i] as number;
      assert.ok(lam >= 0.5 && lam <= 1, `seed ${seed} image ${i}: own share ${lam}`);
      const j = row.findIndex((v, k) => k !== i && v > 0);
      const expected = j < 0 ? (value[i] as number) : lam * (value[i] as number) + (1 - lam) * (value[j] as number);
      if (j >= 0) changed++;
      for (let p = 0; p < pixels; p++) assert.ok(Math.abs((x[i * pixels + p] as number) - expected) < 1e-6);
    }
  }
  assert.ok(changed > 20);
  const x = new Float32Array([0.1, 0.2]);
  const y = new Float32Array([1, 0, 0, 0, 1, 0]);
  mixBatch(x, y, { count: 2, classes: 3, alpha: 0, seed: 1 });
  assert.deepEqual(Array.from(x), [0.1, 0.2].map(Math.fround));
  assert.deepEqual(Array.from(y), [1, 0, 0, 0, 1, 0]);
});

test('a bad alpha is refused with an exact message', () => {
  assert.equal(checkMixup(0.2), 0.2);
  assert.equal(checkMixup(0.01), 0.01);
  // Smaller alphas underflow to a blend of one half, the opposite of what they ask for.
  for (const bad of [-1, Number.NaN, '0.2', 0.001]) {
    assert.throws(() => checkMixup(bad), { name: 'ConfigError', message: `mixup ${typeof bad === 'string' ? '"0.2"' : String(bad)} is not valid: expected 0 (off) or a number of at least 0.01, e.g. 0.2` });
  }
});
