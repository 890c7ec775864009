// The relabel step's effects: link or copy the planned images, then write manifest.csv and summary.json.
import { link, mkdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CLASSES, DEFAULTS, SPLIT_NAMES, type ClassCounts, type Split } from './config.js';
import { LabelError, messageOf, quote } from './errors.js';
import { exists, listFiles, readJsonFile, sha256, sha256File, writeJsonAtomic } from './fsx.js';
import { withLock } from './lock.js';
import { readImageInfo, type FailedImage } from './images.js';
import { datasetEntryFilter, planRelabel, type PlannedImage, type RelabelPlan } from './labels.js';
import { MANIFEST_FILE, readManifest, writeManifest, type ManifestRow } from './manifest.js';
import { auditLeakage, dhash, type LeakageAudit } from './phash.js';
import { mapPool } from './pool.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';
import { extractZip, isJunkEntry, type ExtractResult } from './zip.js';

export const SUMMARY_FILE = 'summary.json';


export interface RelabelOptions {
  /** An extracted dataset folder, or a zip archive (extracted first into `extractedDir`). */
  readonly from: string;
  /** Output folder (DEFAULTS.labeledDir). */
  readonly out?: string;
  /** Where a zip `from` is extracted (DEFAULTS.extractedDir). */
  readonly extractedDir?: string;
  /** Set unlabelled PNEUMONIA names aside in `rejected/` instead of failing. */
  readonly allowUnknown?: boolean;
  /** Near-duplicate threshold of the leakage audit, in bits of a 256-bit dHash (10: no two patients of the real
   * train split are that close, while 28 same-patient pairs are). */
  readonly nearDuplicateBits?: number;
  /** Images read, hashed and linked at once (DEFAULTS.prepareConcurrency). */
  readonly concurrency?: number;
  readonly onProgress?: ProgressCallback;
  /**
   * Wait while another process relabels into `out` (its lock), then check again, instead of a BusyError: `run` waits
   * so, re-checking a complete labelled folder while a notebook does the same.
   */
  readonly waitForLock?: boolean;
  /**
   * The way on that the error names when the output was made from another source (default "choose another --out or
   * remove it first"): `run` names its --data-dir.
   */
  readonly otherSourceHint?: string;
}


const OTHER_SOURCE_HINT = 'choose another --out or remove it first';

/** summary.json: what relabel found and did. */
export interface RelabelSummary {
  readonly version: 1;
  readonly source: {
    /** The source as given to relabel: relative to the working directory of that run when it was given so. */
    readonly path: string;
    /** The same, absolute (summaries written before lack it). */
    readonly absolute?: string;
    /** The same, relative to the output folder: still right after the data folder moved as a whole (lacking before). */
    readonly fromOut?: string;
    readonly kind: 'zip' | 'folder';
    readonly root: string;
  };
  /** Images per split and label. `val` appears only when the source has Kaggle's val/ folder. */
  readonly counts: Partial<Record<Split, ClassCounts>>;
  /** Distinct patient ids per split and label (ids group images within a split only). */
  readonly patients: Partial<Record<Split, ClassCounts>>;
  /** Names whose patient id had to fall back to the file stem. */
  readonly unparsedPatientIds: readonly string[];
  readonly skipped: { readonly junk: number; readonly junkFiles: readonly string[]; readonly ignored: RelabelPlan['ignored'] };
  readonly rejected: RelabelPlan['rejected'];
  readonly undecodable: readonly FailedImage[];
  readonly written: { readonly linked: number; readonly copied: number; readonly kept: number };
  readonly leakage: LeakageAudit;
  readonly notes: readonly string[];
}

const SUMMARY_ADVICE = 'remove it and relabel again to rewrite it (the labelled images are kept)';

/** What is wrong with the fields of a parsed summary.json that relabel and run read, or undefined when nothing is. */
function summaryProblem(value: unknown): string | undefined {
  // The bad value quoted, cut short: a list in place of an object may be long.
  const shown = (v: unknown): string => {
    const q = quote(v);
    return q.length > 80 ? `${q.slice(0, 79)}…` : q;
  };
  const bad = (name: string, v: unknown, expected: string): string =>
    v === undefined ? `its ${name} is missing (expected ${expected})` : `its ${name} ${shown(v)} is not ${expected}`;
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(value)) return `it holds ${shown(value)}, not an object`;
  const source = value.source;
  if (!isObject(source)) return bad('source', source, 'an object');
  for (const key of ['path', 'absolute', 'fromOut']) {
    if (typeof source[key] !== 'string' && (key === 'path' || source[key] !== undefined)) return bad(`source.${key}`, source[key], 'a string');
  }
  const rejected = value.rejected;
  if (!Array.isArray(rejected)) return bad('rejected', rejected, 'a list');
  for (const [i, r] of rejected.entries()) {
    if (!isObject(r)) return bad(`rejected[${i}]`, r, 'an object');
    for (const key of ['source', 'dest']) if (typeof r[key] !== 'string') return bad(`rejected[${i}].${key}`, r[key], 'a string');
  }
  return undefined;
}

/**
 * Reads `DIR/summary.json`, checking the fields that relabel and run read (`source`, `rejected`). A file that is not
 * JSON, or lacks them, is a LabelError naming it (with the parse error as its cause): removed, the next relabel (or
 * run) finishes the folder again from its source and writes it anew, keeping the labelled images.
 *
 * @example const { source } = await readSummary('data/labeled')
 */
export async function readSummary(dir: string): Promise<RelabelSummary> {
  const path = join(dir, SUMMARY_FILE);
  const value = await readJsonFile<unknown>(path, (err) =>
    new LabelError(`the relabel summary ${quote(path)} cannot be read (${messageOf(err)}): ${SUMMARY_ADVICE}`, { path, cause: err }));
  const problem = summaryProblem(value);
  if (problem !== undefined) throw new LabelError(`the relabel summary ${quote(path)} is damaged: ${problem}; ${SUMMARY_ADVICE}`, { path });
  return value as RelabelSummary;
}

/**
 * True when the summary's `source` names `candidate` (a path as this process opens it) as what the labelled folder
 * `labeledDir` was made from, whatever the working directory. Summaries record the source absolute and relative to
 * the labelled folder, and match when either gives `candidate`: so from another working directory, and after the
 * data folder moved as a whole. Summaries written before record only the path as given, relative to the working
 * directory of the run that wrote it, which is not known. Such a path matches when resolved against the current
 * directory, or against a folder that holds `labeledDir` (where that run was started when it was given the data
 * folder relative, as `run` is), it gives `candidate`. The pipeline's sources (DATA/downloads/NAME, DATA/extracted)
 * lie beside DATA/labeled, so only the directory that wrote both can match; a local source matched so is still
 * compared file by file by relabel, which refuses one that differs.
 *
 * @example sourceMatches(summary.source, 'data/labeled', 'data/downloads/ChestXRay2017.zip')
 */
export function sourceMatches(source: RelabelSummary['source'], labeledDir: string, candidate: string): boolean {
  const want = resolve(candidate);
  if (source.absolute !== undefined || source.fromOut !== undefined) {
    return source.absolute === want || (source.fromOut !== undefined && resolve(labeledDir, source.fromOut) === want);
  }
  if (resolve(source.path) === want) return true;
  if (isAbsolute(source.path)) return false;
  for (let dir = dirname(resolve(labeledDir)); ; dir = dirname(dir)) {
    if (resolve(dir, source.path) === want) return true;
    if (dirname(dir) === dir) return false;
  }
}

export interface RelabelResult {
  readonly out: string;
  /** False when the output already held exactly this dataset: nothing was written. */
  readonly changed: boolean;
  readonly manifest: readonly ManifestRow[];
  readonly summary: RelabelSummary;
  readonly extract?: ExtractResult;
}

/** Hard-links `src` to `dest` (copy when linking is impossible), through a temporary name; keeps identical files. */
async function place(src: string, dest: string, data: Buffer, digest: string): Promise<'linked' | 'copied' | 'kept'> {
  try {
    return await placeUnwrapped(src, dest, data, digest);
  } catch (err) {
    if (err instanceof LabelError) throw err;
    // A full disk, a permission, a file gone meanwhile: named with both paths, the system's words as the cause.
    throw new LabelError(`${quote(src)} cannot be placed at ${quote(dest)} (${messageOf(err)})`, { path: dest, cause: err });
  }
}

async function placeUnwrapped(src: string, dest: string, data: Buffer, digest: string): Promise<'linked' | 'copied' | 'kept'> {
  const [s, d] = await Promise.all([stat(src), stat(dest).catch(() => undefined)]);
  if (d) {
    if (d.ino === s.ino && d.dev === s.dev) return 'kept';
    const existing = await readFile(dest);
    if (existing.length === data.length && sha256(existing) === digest) return 'kept';
    throw new LabelError(
      `${quote(dest)} already exists with other content than its source ${quote(src)}: the output folder holds ` +
        'another dataset; choose another --out or remove it first',
      { path: dest },
    );
  }
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.part`;
  await rm(tmp, { force: true });
  let how: 'linked' | 'copied' = 'linked';
  try {
    // The file itself: a hard link to a symbolic link would keep its (maybe relative) target, broken from `dest`.
    await link(await realpath(src), tmp);
  } catch {
    how = 'copied';
    // The bytes that were read and hashed, not the file again: a source changed meanwhile cannot differ from its row.
    // A copy cut short (a full disk) leaves nothing: neither under its name nor as a .part.
    await writeFile(tmp, data).catch(async (err: unknown) => {
      await rm(tmp, { force: true });
      throw err;
    });
  }
  await rename(tmp, dest);
  return how;
}

/** A source file's bytes; one that cannot be read (gone meanwhile, a permission) is a LabelError naming it. */
async function readSource(path: string): Promise<Buffer> {
  return readFile(path).catch((err: unknown) => {
    throw new LabelError(`the source file ${quote(path)} cannot be read (${messageOf(err)})`, { path, cause: err });
  });
}

function emptyCounts(): ClassCounts {
  return { normal: 0, bacteria: 0, virus: 0, total: 0 };
}

interface Examined {
  readonly image: PlannedImage;
  readonly row: ManifestRow;
  readonly hash: string | undefined;
  readonly problem: string | undefined;
  readonly how: 'linked' | 'copied' | 'kept';
}

/**
 * Compares the planned files with those an earlier run wrote; returns the differences (empty: identical). A
 * `sha256` of undefined on the old side is not known (a rejected file whose output copy is gone): only its name counts.
 */
function differences(plan: readonly { dest: string; sha256: string }[], old: ReadonlyMap<string, string | undefined>): string[] {
  const left = new Map(old);
  const diffs: string[] = [];
  for (const p of plan) {
    if (!left.has(p.dest)) diffs.push(`${p.dest}: new`);
    else if (left.get(p.dest) !== undefined && left.get(p.dest) !== p.sha256) diffs.push(`${p.dest}: content changed`);
    left.delete(p.dest);
  }
  for (const file of left.keys()) diffs.push(`${file}: gone from the source`);
  return diffs;
}

/** Files of the output's own layout (`{split}/{label}/NAME`, `rejected/{split}/NAME`), junk and `.part` files aside. */
async function outputImages(out: string): Promise<string[]> {
  if (!(await exists(out))) return [];
  return (await listFiles(out)).filter((f) => {
    const [a, b, name, ...rest] = f.split('/');
    if (name === undefined || rest.length > 0 || f.endsWith('.part') || isJunkEntry(f)) return false;
    return a === 'rejected' ? SPLIT_NAMES.includes(b as Split) : SPLIT_NAMES.includes(a as Split) && (CLASSES as readonly string[]).includes(b ?? '');
  });
}

/**
 * Redistributes `NORMAL/` and `PNEUMONIA/` of every split into `OUT/{split}/{normal,bacteria,virus}/` (hard links
 * where possible, copies otherwise; sources are never moved or deleted), then writes `OUT/manifest.csv` and
 * `OUT/summary.json` (counts, patients, skipped and rejected files, undecodable images, leakage audit). A zip `from`
 * is extracted first (chest X-ray entries only; files an earlier archive left in the extracted folder are not read).
 * Idempotent: over the same source a second run writes nothing and returns `changed: false` (or puts back output
 * files deleted since, rejected ones included, with `changed: true`); over a different source, or into an output that
 * an interrupted run left holding other images, it refuses rather than mixing. While it works it
 * holds `OUT.lock` beside the output folder: a second relabel into it gets a BusyError.
 *
 * @example const { summary } = await relabel({ from: 'data/downloads/ChestXRay2017.zip', out: 'data/labeled' })
 */
export async function relabel(options: RelabelOptions): Promise<RelabelResult> {
  const out = resolve(options.out ?? DEFAULTS.labeledDir);
  const wait = {
    onWait: (message: string) => options.onProgress?.({ stage: 'relabel', unit: 'files', done: 0, message: `waiting: ${message}` }),
  };
  return withLock(`${out}.lock`, `relabelling into ${quote(out)}`, () => relabelUnlocked(options), options.waitForLock ? { wait } : {});
}

async function relabelUnlocked(options: RelabelOptions): Promise<RelabelResult> {
  const out = resolve(options.out ?? DEFAULTS.labeledDir);
  const fromStat = await stat(options.from).catch((err: unknown) => {
    throw new LabelError(`relabel source ${quote(options.from)} does not exist (${messageOf(err)})`, { path: options.from, cause: err });
  });
  const outStat = await stat(out).catch(() => undefined);
  if (outStat !== undefined && !outStat.isDirectory()) {
    throw new LabelError(`the output folder ${quote(out)} is a file: choose another --out`, { path: out });
  }
  let root = resolve(options.from);
  let extract: ExtractResult | undefined;
  if (fromStat.isFile()) {
    const extractedDir = options.extractedDir ?? DEFAULTS.extractedDir;
    // Checked before extracting: one folder for both would also be locked twice (a BusyError naming neither option).
    const extracted = resolve(extractedDir);
    const within = (inner: string, outer: string): boolean => inner === outer || inner.startsWith(outer + sep);
    if (within(out, extracted) || within(extracted, out)) {
      throw new LabelError(
        `the output folder ${quote(out)} and the extraction folder ${quote(extracted)} ${out === extracted ? 'are the same folder' : 'overlap (one is inside the other)'}: ` +
          'relabel writes the labelled dataset apart from the extracted archive; choose another --out or --extracted',
        { path: out },
      );
    }
    extract = await extractZip({
      archive: options.from,
      outDir: extractedDir,
      include: datasetEntryFilter,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    root = resolve(extractedDir);
  }
  if (out === root || out.startsWith(root + sep)) {
    throw new LabelError(`the output folder ${quote(out)} is inside the source ${quote(root)}: choose another --out`, { path: out });
  }
  // From a zip: its own entries only, never what an earlier archive left in the same extracted folder.
  const unreadable: { source: string; reason: string }[] = [];
  const listed = extract ? extract.entries : await listFiles(root, { onSkipped: (source, reason) => unreadable.push({ source, reason }) });
  for (const f of listed) if (f.endsWith('.part')) unreadable.push({ source: f, reason: 'an unfinished copy (.part)' });
  const files = listed.filter((f) => !f.endsWith('.part'));
  const planned = planRelabel({ files, source: options.from, ...(options.allowUnknown ? { allowUnknown: true } : {}) });
  const plan: RelabelPlan = { ...planned, ignored: [...planned.ignored, ...unreadable] };

  const tracker = new ProgressTracker({ stage: 'relabel', unit: 'files', total: plan.images.length, onProgress: options.onProgress });
  const previous = (await exists(join(out, MANIFEST_FILE))) ? await readManifest(out) : undefined;
  const concurrency = options.concurrency ?? DEFAULTS.prepareConcurrency;

  if (previous) {
    // Same source again? Compare content hashes only (cheap), before decoding or writing anything. Rejected files are
    // in summary.json, not in the manifest; their content is compared with their output copy where there is one.
    const hashes = await mapPool(plan.images, concurrency, async (image) => {
      const digest = sha256(await readSource(join(root, image.source)));
      tracker.add(1);
      return { dest: image.dest, sha256: digest };
    });
    const oldSummary = (await exists(join(out, SUMMARY_FILE))) ? await readSummary(out) : undefined;
    const old = new Map<string, string | undefined>(previous.map((r) => [r.file, r.sha256]));
    const compared = [...hashes];
    if (oldSummary) {
      for (const r of oldSummary.rejected) {
        const copy = join(out, r.dest); // gone: only its name counts
        old.set(r.dest, (await exists(copy)) ? await sha256File(copy) : undefined);
      }
      for (const r of plan.rejected) compared.push({ dest: r.dest, sha256: sha256(await readSource(join(root, r.source))) });
    }
    const diffs = differences(compared, old);
    if (diffs.length === 0 && oldSummary) {
      // The same dataset: put back any output file deleted since (hard links cost nothing; sources are untouched).
      const all = [...plan.images, ...plan.rejected];
      const missing = (await mapPool(all, concurrency, async (file) => ((await exists(join(out, file.dest))) ? [] : [file]))).flat();
      for (const file of missing) {
        const src = join(root, file.source);
        const data = await readSource(src);
        await place(src, join(out, file.dest), data, sha256(data));
      }
      tracker.finish(missing.length > 0 ? `restored ${missing.length} missing file(s)` : 'unchanged: the output already holds this dataset');
      return { out, changed: missing.length > 0, manifest: previous, summary: oldSummary, ...(extract ? { extract } : {}) };
    }
    if (diffs.length > 0) {
      const shown = diffs.slice(0, 10).map((d) => `  ${d}`).join('\n');
      throw new LabelError(
        `${quote(out)} was made from another source: ${diffs.length} file(s) differ from ${quote(options.from)}; ` +
          `${options.otherSourceHint ?? OTHER_SOURCE_HINT}:\n${shown}${diffs.length > 10 ? `\n  … and ${diffs.length - 10} more` : ''}`,
        { path: out },
      );
    }
    tracker.set(0, 'manifest found without summary: finishing the interrupted run');
  }
  // An interrupted run leaves images and no summary (maybe no manifest): refuse what this plan would not write, as
  // it would stay in the output outside the manifest. Nothing is deleted.
  const dests = new Set([...plan.images, ...plan.rejected].map((f) => f.dest));
  const strangers = (await outputImages(out)).filter((f) => !dests.has(f));
  if (strangers.length > 0) {
    const shown = strangers.slice(0, 10).map((f) => `  ${f}`).join('\n');
    throw new LabelError(
      `${quote(out)} holds ${strangers.length} image file(s) that ${quote(options.from)} does not give (left by an interrupted run ` +
        `from another source?); ${options.otherSourceHint ?? OTHER_SOURCE_HINT}:\n${shown}${strangers.length > 10 ? `\n  … and ${strangers.length - 10} more` : ''}`,
      { path: out, files: strangers },
    );
  }

  const examined = await mapPool(plan.images, concurrency, async (image): Promise<Examined> => {
    const src = join(root, image.source);
    const data = await readSource(src);
    const digest = sha256(data);
    let info = { width: 0, height: 0, channels: 0 };
    let hash: string | undefined;
    let problem: string | undefined;
    try {
      const meta = await readImageInfo(data, { name: image.dest });
      info = { width: meta.width, height: meta.height, channels: meta.channels };
      hash = await dhash(data, { name: image.dest });
    } catch (err) {
      problem = messageOf(err);
    }
    const how = await place(src, join(out, image.dest), data, digest);
    tracker.add(1);
    const row: ManifestRow = {
      split: image.split,
      label: image.label,
      file: image.dest,
      patientId: image.patientId,
      bytes: data.length,
      sha256: digest,
      ...info,
    };
    return { image, row, hash, problem, how };
  });
  for (const r of plan.rejected) {
    const src = join(root, r.source);
    const data = await readSource(src);
    await place(src, join(out, r.dest), data, sha256(data));
  }

  const counts: Partial<Record<Split, ClassCounts>> = {};
  const patientSets = new Map<string, Set<string>>();
  for (const { row } of examined) {
    const c = (counts[row.split] ??= emptyCounts());
    c[row.label]++;
    c.total++;
    for (const key of [`${row.split}/${row.label}`, `${row.split}/total`]) {
      const set = patientSets.get(key) ?? new Set<string>();
      set.add(row.patientId);
      patientSets.set(key, set);
    }
  }
  const patients: Partial<Record<Split, ClassCounts>> = {};
  for (const split of Object.keys(counts) as Split[]) {
    const p = emptyCounts();
    for (const label of [...CLASSES, 'total'] as const) p[label] = patientSets.get(`${split}/${label}`)?.size ?? 0;
    patients[split] = p;
  }
  const written = { linked: 0, copied: 0, kept: 0 };
  for (const e of examined) written[e.how]++;
  const leakage = auditLeakage({
    items: examined.map((e) => ({ file: e.row.file, split: e.row.split, patientId: e.row.patientId, sha256: e.row.sha256, hash: e.hash })),
    ...(options.nearDuplicateBits !== undefined ? { threshold: options.nearDuplicateBits } : {}),
  });
  const summary: RelabelSummary = {
    version: 1,
    source: { path: options.from, absolute: resolve(options.from), fromOut: relative(out, resolve(options.from)), kind: extract ? 'zip' : 'folder', root: plan.root },
    counts,
    patients,
    unparsedPatientIds: examined.filter((e) => !e.image.patientParsed).map((e) => e.row.file),
    skipped: { junk: plan.junk.length + (extract?.skippedJunk ?? 0), junkFiles: [...(extract?.junk ?? []), ...plan.junk].slice(0, 100), ignored: plan.ignored },
    rejected: plan.rejected,
    undecodable: examined.filter((e) => e.problem !== undefined).map((e) => ({ file: e.row.file, reason: e.problem ?? '' })),
    written,
    leakage,
    notes: [
      'Patient ids group images within one split only: the official archive numbers patients per split, so the same ' +
        'personN in train and test are different children. Across splits the leakage audit compares content instead.',
      `Near duplicates: 256-bit dHash at Hamming distance <= ${leakage.threshold}.`,
    ],
  };
  // The manifest first, the summary last: a summary present means the run completed.
  await writeManifest(out, examined.map((e) => e.row));
  await writeJsonAtomic(join(out, SUMMARY_FILE), summary);
  tracker.finish();
  return { out, changed: true, manifest: examined.map((e) => e.row), summary, ...(extract ? { extract } : {}) };
}
