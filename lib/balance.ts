// Groupings of images read from a CSV (a copy pipeline, a hospital), and sample weights that balance the classes within each group.
//
// When how an image was made correlates with its label (in the shared copies of this dataset, bacteria are mostly
// 224 px copies and normal and virus mostly 227 px copies), a network can learn the making instead of the lungs.
// Weighting every training image by 1 / (images of its class in its group) makes each class weigh the same inside
// every group, so the group no longer says anything about the label; each group keeps its share of the total weight.
import { readFile } from 'node:fs/promises';
import { ConfigError, messageOf, quote } from './errors.js';
import { parseCsv } from './csv.js';

/** A grouping: a CSV with a `file` column (base names) and the column that names each file's group. */
export interface GroupingSource {
  readonly csv: string;
  readonly column: string;
}

/**
 * The group of every file listed in `source.csv`, by base name (e.g. `person1_bacteria_1.jpeg` -> `full-res`).
 *
 * @example const groups = await readGroups({ csv: '../shared/data/chest_xray_train_224.csv', column: 'derived_from' })
 */
export async function readGroups(source: GroupingSource): Promise<Map<string, string>> {
  const text = await readFile(source.csv, 'utf8').catch((err: unknown) => {
    throw new ConfigError(`the grouping CSV ${quote(source.csv)} cannot be read (${messageOf(err)})`, { path: source.csv, cause: err });
  });
  const rows = parseCsv(text, source.csv);
  const first = rows[0] ?? {};
  if (rows.length > 0 && !('file' in first)) {
    throw new ConfigError(`${quote(source.csv)} has no column "file" (columns: ${Object.keys(first).join(', ')})`, { path: source.csv });
  }
  if (rows.length > 0 && !(source.column in first)) {
    throw new ConfigError(`${quote(source.csv)} has no column ${quote(source.column)} (columns: ${Object.keys(first).join(', ')})`, { path: source.csv });
  }
  return new Map(rows.map((r) => [r.file ?? '', r[source.column] ?? '']));
}

/** The group of a file path by its base name, or `(not listed)`. */
export function groupOf(groups: ReadonlyMap<string, string>, file: string): string {
  return groups.get(file.split('/').at(-1) ?? '') ?? '(not listed)';
}

export interface GroupBalanceOptions {
  /** Largest weight relative to the mean (a class with a handful of images in a group gets at most this). Default 10. */
  readonly maxWeight?: number;
}

/**
 * Per-sample weights, mean 1, under which every class present in a group carries the same total weight within that
 * group, and every group its share of the images: w = n_g / (K_g * n_gk), scaled to mean 1 with no weight above
 * `maxWeight` (capped weights stay at the cap, the others share the rest) (n_g: images in the group, K_g: classes present in it, n_gk: images of the class there).
 *
 * @example groupBalancedWeights([0, 1, 1, 1], ['a', 'a', 'a', 'a']) // [2, 0.667, 0.667, 0.667]
 */
export function groupBalancedWeights(labels: readonly number[], groups: readonly string[], options: GroupBalanceOptions = {}): number[] {
  const maxWeight = options.maxWeight ?? 10;
  if (labels.length !== groups.length) throw new ConfigError(`${labels.length} labels but ${groups.length} groups: one group per image expected`);
  if (!(maxWeight >= 1)) throw new ConfigError(`maxWeight ${quote(maxWeight)} is not a number >= 1`);
  const count = new Map<string, number>();
  const groupSize = new Map<string, number>();
  const classesIn = new Map<string, Set<number>>();
  labels.forEach((k, i) => {
    const g = groups[i] as string;
    count.set(`${g}\u0000${k}`, (count.get(`${g}\u0000${k}`) ?? 0) + 1);
    groupSize.set(g, (groupSize.get(g) ?? 0) + 1);
    classesIn.set(g, (classesIn.get(g) ?? new Set()).add(k));
  });
  const raw = labels.map((k, i) => {
    const g = groups[i] as string;
    return (groupSize.get(g) ?? 0) / ((classesIn.get(g)?.size ?? 1) * (count.get(`${g}\u0000${k}`) ?? 1));
  });
  const mean = (ws: number[]): number => ws.reduce((a, b) => a + b, 0) / Math.max(1, ws.length);
  // Cap, then bring the mean back to 1, until no weight is above the cap: scaling up after one cap would lift the
  // capped weights past it again (a rare class could end at 1.7x the cap). Converges: each round caps more weights.
  const rawMean = mean(raw) || 1;
  let w = raw.map((x) => x / rawMean);
  for (let round = 0; round < 100 && w.some((x) => x > maxWeight * (1 + 1e-12)); round++) {
    const capped = w.map((x) => Math.min(x, maxWeight));
    const m = mean(capped);
    w = capped.map((x) => x / m);
  }
  return w;
}
