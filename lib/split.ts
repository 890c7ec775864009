// The validation split: carves validation patients out of train, stratified by label, never splitting a patient.
import { CLASSES, type Label } from './config.js';
import { ConfigError, quote } from './errors.js';
import { createRng, shuffled, type Rng } from './random.js';

/** What the split needs of a row: its label and its patient. */
export interface SplitRow {
  readonly label: Label;
  /** Rows with the same id belong to one patient; an empty id makes the row a patient of its own. */
  readonly patientId: string;
}

/** Options of {@link patientGroupedSplit}. */
export interface SplitOptions {
  /** Share of each label's images to put in validation, in [0, 1). */
  valFraction: number;
  seed: number;
}

interface Patient {
  readonly id: string;
  readonly rows: number[];
  readonly labels: Set<Label>;
  /** The label most of the patient's images carry (ties: the first in CLASSES order). */
  stratum: Label;
}

function groupPatients(rows: readonly SplitRow[]): Patient[] {
  const byId = new Map<string, Patient>();
  rows.forEach((row, i) => {
    const id = row.patientId === '' ? `\u0000row:${i}` : row.patientId;
    let p = byId.get(id);
    if (!p) {
      p = { id, rows: [], labels: new Set(), stratum: row.label };
      byId.set(id, p);
    }
    p.rows.push(i);
    p.labels.add(row.label);
  });
  for (const p of byId.values()) {
    const counts = new Map<Label, number>();
    for (const i of p.rows) {
      const label = (rows[i] as SplitRow).label;
      counts.set(label, (counts.get(label) ?? 0) + 1);
    }
    let best = -1;
    for (const label of CLASSES) {
      const n = counts.get(label) ?? 0;
      if (n > best) {
        best = n;
        p.stratum = label;
      }
    }
  }
  // Sorted ids: the result does not depend on the order of the rows, only on their content and the seed.
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Greedy pick in shuffled order: take a patient when it brings the stratum's validation images closer to target. */
function pickStratum(patients: readonly Patient[], valFraction: number, rng: Rng, val: Set<Patient>): void {
  const total = patients.reduce((n, p) => n + p.rows.length, 0);
  const target = valFraction * total;
  let taken = 0;
  let left = patients.length;
  for (const p of shuffled(patients, rng)) {
    if (left <= 1) break; // keep at least one patient of every stratum in train
    const n = p.rows.length;
    if (Math.abs(taken + n - target) < Math.abs(taken - target)) {
      val.add(p);
      taken += n;
      left--;
    }
  }
  // A small stratum whose every patient overshoots the target still gets one (the smallest) when it can spare it.
  if (taken === 0 && valFraction > 0 && patients.length >= 2) {
    const smallest = shuffled(patients, rng).reduce((a, b) => (b.rows.length < a.rows.length ? b : a));
    val.add(smallest);
  }
}

/**
 * Splits train rows into train and validation by patient: all images of a patient land on one side. Patients are
 * stratified by their majority label and, within each label, picked in a seeded shuffled order until about
 * `valFraction` of that label's images are in validation, leaving every stratum at least one patient in train. Then a
 * label carried by at least two patients gets a validation patient (when `valFraction > 0`) where one can be moved
 * without taking any label's last training images; such a move of a patient with mixed labels may take the last
 * patient of its stratum (only every label, not every stratum, is sure to keep images in train). The result
 * depends only on the rows' labels and patient ids and on the seed, not on the order of the rows (except for rows
 * without a patient id, each a patient of its own, known by its position).
 *
 * @example
 * const { train, val } = patientGroupedSplit(rows, { valFraction: 0.1, seed: 42 }) // indices into rows, ascending
 */
export function patientGroupedSplit(
  rows: readonly SplitRow[],
  options: SplitOptions,
): { train: number[]; val: number[] } {
  const { valFraction, seed } = options;
  if (typeof valFraction !== 'number' || !Number.isFinite(valFraction) || valFraction < 0 || valFraction >= 1) {
    throw new ConfigError(`valFraction ${quote(valFraction)} is not valid: expected a number from 0 up to (not including) 1`);
  }
  if (typeof seed !== 'number' || !Number.isFinite(seed)) {
    throw new ConfigError(`seed ${quote(seed)} is not valid: expected a finite number`);
  }
  const patients = groupPatients(rows);
  const rng = createRng(seed);
  const val = new Set<Patient>();
  if (valFraction > 0) {
    for (const label of CLASSES) pickStratum(patients.filter((p) => p.stratum === label), valFraction, rng, val);
    // A label that is never a majority (only in mixed patients) may still be missing from validation: move the
    // smallest patient carrying it, provided every label of that patient stays present in train.
    for (const label of CLASSES) {
      const carriers = patients.filter((p) => p.labels.has(label));
      if (carriers.length < 2 || carriers.some((p) => val.has(p))) continue;
      const movable = carriers.filter((p) =>
        [...p.labels].every((l) => patients.some((q) => q !== p && !val.has(q) && q.labels.has(l))),
      );
      const pick = movable.reduce<Patient | undefined>((a, b) => (a === undefined || b.rows.length < a.rows.length ? b : a), undefined);
      if (pick) val.add(pick);
    }
    // Every label keeps images in train: strata are picked one at a time, so mixed patients of several strata can
    // together take a label's last training images; the smallest of them goes back.
    for (const label of CLASSES) {
      if (patients.some((p) => !val.has(p) && p.labels.has(label))) continue;
      const back = [...val].filter((p) => p.labels.has(label)).reduce<Patient | undefined>((a, b) => (a === undefined || b.rows.length < a.rows.length ? b : a), undefined);
      if (back) val.delete(back);
    }
  }
  const train: number[] = [];
  const valRows: number[] = [];
  for (const p of patients) (val.has(p) ? valRows : train).push(...p.rows);
  return { train: train.sort((a, b) => a - b), val: valRows.sort((a, b) => a - b) };
}
