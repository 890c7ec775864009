import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProgressTracker, type Progress } from '../lib/progress.js';

test('ProgressTracker throttles, computes rate and ETA, and always reports the final state', () => {
  const events: Progress[] = [];
  const t = new ProgressTracker({ stage: 'fetch', unit: 'bytes', total: 100, onProgress: (p) => events.push(p), intervalMs: 60_000 });
  t.add(10);
  t.add(10);
  t.note('retry 1 of 5');
  t.add(80);
  t.finish();
  assert.equal(events.length, 3);
  assert.equal(events[0]?.done, 10);
  assert.equal(events[1]?.message, 'retry 1 of 5');
  assert.equal(events[2]?.done, 100);
  assert.equal(events[2]?.total, 100);
  assert.equal(events[2]?.etaSeconds, 0);
  assert.ok((events[2]?.rate ?? 0) > 0);
});
