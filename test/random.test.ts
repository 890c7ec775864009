import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRng, shuffled } from '../lib/random.js';

test('createRng is deterministic per seed and uniform-ish', () => {
  const a = createRng(7);
  const b = createRng(7);
  const xs = Array.from({ length: 10_000 }, () => a());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  assert.notEqual(createRng(8)(), createRng(7)());
});

test('shuffled permutes a copy and leaves the input alone', () => {
  const input = Array.from({ length: 50 }, (_, i) => i);
  const out = shuffled(input, createRng(1));
  assert.deepEqual([...out].sort((x, y) => x - y), input);
  assert.notDeepEqual(out, input);
  assert.deepEqual(shuffled(input, createRng(1)), out);
});
