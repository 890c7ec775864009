// Bounded concurrency: results in input order, at most `limit` calls at once, and a limit that could run nothing refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mapPool } from '../lib/pool.js';

test('mapPool keeps input order with at most `limit` calls in flight', async () => {
  let inFlight = 0;
  let most = 0;
  const out = await mapPool([5, 1, 4, 2, 3], 2, async (n, i) => {
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, n));
    inFlight--;
    return n * 10 + i;
  });
  assert.deepEqual(out, [50, 11, 42, 23, 34]);
  assert.equal(most, 2);
  assert.deepEqual(await mapPool([], 3, async () => 1), []);
});

test('mapPool refuses a limit that is not a whole number of at least 1, before any call', async () => {
  for (const [limit, shown] of [[Number.NaN, 'NaN'], [0, '0'], [-1, '-1'], [2.5, '2.5'], [Number.POSITIVE_INFINITY, 'Infinity']] as const) {
    let calls = 0;
    await assert.rejects(mapPool([1, 2, 3], limit, async (x) => { calls++; return x; }), {
      name: 'ConfigError',
      message: `concurrency ${shown} is not valid: expected an integer of at least 1`,
    });
    assert.equal(calls, 0);
  }
});
