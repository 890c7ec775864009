// The labelled dataset's manifest.csv: one row per image, the contract between relabel, prepare, upload and training.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CLASSES, SPLIT_NAMES, type Label, type Split } from './config.js';
import { csvRowOf, parseCsv, toCsv } from './csv.js';
import { LabelError, quote } from './errors.js';
import { isRootedAnywhere, sha256, writeFileAtomic } from './fsx.js';

/** One image of the labelled dataset. `file` is relative to the labelled folder: `train/virus/person1_virus_6.jpeg`. */
export interface ManifestRow {
  readonly split: Split;
  readonly label: Label;
  readonly file: string;
  /** Patient id, meaningful within one split only (see relabel). */
  readonly patientId: string;
  readonly bytes: number;
  readonly sha256: string;
  /** Pixel size as stored in the file (0 when the image is not decodable; such rows are listed in summary.json). */
  readonly width: number;
  readonly height: number;
  readonly channels: number;
}

export const MANIFEST_COLUMNS = [
  'split',
  'label',
  'file',
  'patientId',
  'bytes',
  'sha256',
  'width',
  'height',
  'channels',
] as const satisfies readonly (keyof ManifestRow)[];

export const MANIFEST_FILE = 'manifest.csv';


/** Writes `DIR/manifest.csv` atomically, rows sorted by split, label and file. */
export async function writeManifest(dir: string, rows: readonly ManifestRow[]): Promise<void> {
  const sorted = [...rows].sort(
    (a, b) => a.split.localeCompare(b.split) || a.label.localeCompare(b.label) || a.file.localeCompare(b.file),
  );
  await writeFileAtomic(join(dir, MANIFEST_FILE), toCsv(MANIFEST_COLUMNS, sorted));
}

/**
 * Reads and validates `DIR/manifest.csv`. `relabel` is how a missing manifest's message tells the user to make it
 * (default "`pneumotype relabel`"; the notebooks say which notebook).
 */
export async function readManifest(dir: string, options: { relabel?: string } = {}): Promise<ManifestRow[]> {
  return (await readManifestAndDigest(dir, options)).rows;
}

/**
 * {@link readManifest}, with the SHA-256 of the very bytes it parsed: what a cache or a model records of its data, taken
 * from one read, so that a manifest rewritten meanwhile cannot pair one version's rows with another's digest.
 *
 * @example const { rows, sha256 } = await readManifestAndDigest('data/labeled')
 */
export async function readManifestAndDigest(dir: string, options: { relabel?: string } = {}): Promise<{ rows: ManifestRow[]; sha256: string }> {
  const path = join(dir, MANIFEST_FILE);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new LabelError(`no manifest at ${quote(path)}: run ${options.relabel ?? '`pneumotype relabel`'} first`, { path, cause: err });
  }
  return { rows: parseManifest(bytes.toString('utf8'), path, dir), sha256: sha256(bytes) };
}

/**
 * The rows whose file is not in `dir` as the manifest lists it, each said in a few words ("…" is missing, or has N
 * bytes, expected M); empty when every file is there with its size. What a relabelled folder, or a channel an upload
 * filled, is judged complete by.
 *
 * @example await filesNotAsListed('data/labeled', await readManifest('data/labeled')) // []
 */
export async function filesNotAsListed(dir: string, rows: readonly ManifestRow[]): Promise<string[]> {
  const bad: string[] = [];
  for (const row of rows) {
    const s = await stat(join(dir, row.file)).catch(() => undefined);
    if (s?.isFile() !== true) bad.push(`${quote(row.file)} is missing`);
    else if (s.size !== row.bytes) bad.push(`${quote(row.file)} has ${s.size} bytes, expected ${row.bytes}`);
  }
  return bad;
}

function parseManifest(text: string, path: string, dir: string): ManifestRow[] {
  return parseCsv(text, path).map((r, i) => {
    const where = `row ${csvRowOf(r) ?? i + 2} of ${quote(path)}`;
    // A missing column would read as '' and surface far away (a file named '', a split of undefined).
    const missing = MANIFEST_COLUMNS.filter((c) => r[c] === undefined);
    if (missing.length > 0) {
      throw new LabelError(`${where} has no ${missing.join(', ')} column${missing.length > 1 ? 's' : ''}: expected the columns ${MANIFEST_COLUMNS.join(', ')}`, { path });
    }
    const split = r.split as Split;
    if (!SPLIT_NAMES.includes(split)) {
      throw new LabelError(`${where}: split ${quote(r.split)} is not one of ${SPLIT_NAMES.join(', ')}`, { path });
    }
    const label = r.label as Label;
    if (!CLASSES.includes(label)) {
      throw new LabelError(`${where}: label ${quote(r.label)} is not one of ${CLASSES.join(', ')}`, { path });
    }
    const file = r.file ?? '';
    if (file === '') throw new LabelError(`${where}: file ${quote(file)} is empty; expected a path relative to ${quote(dir)}`, { path });
    // Rows are read from folders that others made (a SageMaker channel): none may point outside its folder.
    if (isRootedAnywhere(file) || file.split(/[\\/]/).includes('..')) {
      throw new LabelError(`${where}: file ${quote(file)} points outside ${quote(dir)}; expected a path inside it`, { path });
    }
    const sha256 = r.sha256 ?? '';
    if (!/^[0-9a-f]{64}$/.test(sha256)) {
      throw new LabelError(`${where}: sha256 ${quote(sha256)} is not a SHA-256; expected 64 lowercase hexadecimal digits`, { path });
    }
    const num = (k: string): number => {
      const v = Number(r[k]);
      if (!Number.isFinite(v)) throw new LabelError(`${where}: ${k} ${quote(r[k])} is not a number`, { path });
      return v;
    };
    return {
      split,
      label,
      file,
      patientId: r.patientId ?? '',
      bytes: num('bytes'),
      sha256,
      width: num('width'),
      height: num('height'),
      channels: num('channels'),
    };
  });
}
