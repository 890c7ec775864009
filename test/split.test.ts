import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLASSES, type Label } from '../lib/config.js';
import { ConfigError } from '../lib/errors.js';
import { createRng, shuffled } from '../lib/random.js';
import { patientGroupedSplit, type SplitRow } from '../lib/split.js';

/** Patients with 1 to 4 images each; a few pneumonia patients have both bacteria and virus images. */
function makeRows(seed: number, patientsPerLabel = 120): SplitRow[] {
  const rng = createRng(seed);
  const rows: SplitRow[] = [];
  for (const label of CLASSES) {
    for (let p = 0; p < patientsPerLabel; p++) {
      const n = 1 + Math.floor(rng() * 4);
      for (let k = 0; k < n; k++) rows.push({ label, patientId: `${label}-${p}` });
      if (label === 'bacteria' && p % 10 === 0) rows.push({ label: 'virus', patientId: `${label}-${p}` });
    }
  }
  return shuffled(rows, rng);
}

function patientsOf(rows: readonly SplitRow[], idx: readonly number[]): Set<string> {
  return new Set(idx.map((i) => (rows[i] as SplitRow).patientId));
}

function checkPartition(rows: readonly SplitRow[], train: readonly number[], val: readonly number[]): void {
  assert.deepEqual([...train, ...val].sort((a, b) => a - b), rows.map((_, i) => i), 'every row exactly once');
  assert.deepEqual(train, [...train].sort((a, b) => a - b));
  assert.deepEqual(val, [...val].sort((a, b) => a - b));
  const t = patientsOf(rows, train);
  for (const p of patientsOf(rows, val)) assert.ok(!t.has(p), `patient ${p} is in train and val`);
}

test('no patient is on both sides, and every row is on exactly one', () => {
  const rows = makeRows(1);
  const { train, val } = patientGroupedSplit(rows, { valFraction: 0.2, seed: 42 });
  checkPartition(rows, train, val);
});

test('each label contributes about valFraction of its images', () => {
  const rows = makeRows(2);
  const { val } = patientGroupedSplit(rows, { valFraction: 0.2, seed: 7 });
  for (const label of CLASSES) {
    const all = rows.filter((r) => r.label === label).length;
    const inVal = val.filter((i) => rows[i]?.label === label).length;
    assert.ok(Math.abs(inVal / all - 0.2) < 0.04, `${label}: ${inVal} of ${all} in val`);
  }
});

test('the split is deterministic per seed and independent of row order', () => {
  const rows = makeRows(3);
  const a = patientGroupedSplit(rows, { valFraction: 0.1, seed: 5 });
  assert.deepEqual(patientGroupedSplit(rows, { valFraction: 0.1, seed: 5 }), a);
  const b = patientGroupedSplit(rows, { valFraction: 0.1, seed: 6 });
  assert.notDeepEqual(patientsOf(rows, b.val), patientsOf(rows, a.val));
  const reordered = shuffled(rows, createRng(99));
  const c = patientGroupedSplit(reordered, { valFraction: 0.1, seed: 5 });
  assert.deepEqual(patientsOf(reordered, c.val), patientsOf(rows, a.val));
});

test('valFraction 0 keeps everything in train; out-of-range fractions are refused', () => {
  const rows = makeRows(4, 5);
  const { train, val } = patientGroupedSplit(rows, { valFraction: 0, seed: 1 });
  assert.deepEqual(val, []);
  assert.equal(train.length, rows.length);
  for (const bad of [-0.1, 1, 1.5, Number.NaN]) {
    assert.throws(
      () => patientGroupedSplit(rows, { valFraction: bad, seed: 1 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === `valFraction ${String(bad)} is not valid: expected a number from 0 up to (not including) 1`,
    );
  }
});

test('edge cases: no rows, one patient, tiny strata, mixed-label patients, missing ids', () => {
  assert.deepEqual(patientGroupedSplit([], { valFraction: 0.5, seed: 1 }), { train: [], val: [] });

  const one: SplitRow[] = [
    { label: 'normal', patientId: 'a' },
    { label: 'normal', patientId: 'a' },
  ];
  assert.deepEqual(patientGroupedSplit(one, { valFraction: 0.5, seed: 1 }), { train: [0, 1], val: [] });

  // Two patients per label and a tiny fraction: each label still gets a validation patient, and keeps one in train.
  const tiny: SplitRow[] = CLASSES.flatMap((label: Label) => [
    { label, patientId: `${label}1` },
    { label, patientId: `${label}1` },
    { label, patientId: `${label}2` },
  ]);
  const s = patientGroupedSplit(tiny, { valFraction: 0.01, seed: 3 });
  checkPartition(tiny, s.train, s.val);
  for (const label of CLASSES) {
    assert.equal(patientsOf(tiny, s.val.filter((i) => tiny[i]?.label === label)).size, 1, `${label} in val`);
    assert.equal(patientsOf(tiny, s.train.filter((i) => tiny[i]?.label === label)).size, 1, `${label} in train`);
  }
  // A large fraction never empties a label's train side.
  const big = patientGroupedSplit(tiny, { valFraction: 0.99, seed: 3 });
  for (const label of CLASSES) assert.ok(big.train.some((i) => tiny[i]?.label === label), `${label} kept in train`);

  // Virus only appears in patients whose majority is bacteria: one of them is still moved to validation.
  const mixed: SplitRow[] = [];
  // The greedy pick alone would take a one-image patient; the fix-up pass must add a (larger) virus carrier.
  for (let p = 0; p < 6; p++) {
    const n = p < 2 ? 4 : 1;
    for (let k = 0; k < n; k++) mixed.push({ label: 'bacteria', patientId: `m${p}` });
    if (p < 2) mixed.push({ label: 'virus', patientId: `m${p}` });
  }
  const m = patientGroupedSplit(mixed, { valFraction: 0.1, seed: 8 });
  checkPartition(mixed, m.train, m.val);
  assert.ok(m.val.some((i) => mixed[i]?.label === 'virus'), 'virus in val');
  assert.ok(m.train.some((i) => mixed[i]?.label === 'virus'), 'virus in train');

  // Mixed patients of several strata cannot together take a label's last training images: virus appears only in
  // two bacteria-majority patients, and across 200 seeds at least one of them always stays in train.
  const twoCarriers: SplitRow[] = [];
  for (let p = 0; p < 10; p++) for (let k = 0; k < 3; k++) twoCarriers.push({ label: 'normal', patientId: `n${p}` }, { label: 'bacteria', patientId: `b${p}` });
  twoCarriers.push({ label: 'virus', patientId: 'b0' }, { label: 'virus', patientId: 'b1' });
  for (let seed = 0; seed < 200; seed++) {
    const t = patientGroupedSplit(twoCarriers, { valFraction: 0.3, seed });
    assert.ok(t.train.some((i) => twoCarriers[i]?.label === 'virus'), `virus kept in train (seed ${seed})`);
  }

  // Rows without a patient id are patients of their own.
  const anon: SplitRow[] = Array.from({ length: 20 }, () => ({ label: 'normal' as const, patientId: '' }));
  const an = patientGroupedSplit(anon, { valFraction: 0.25, seed: 2 });
  assert.equal(an.val.length, 5);
});
