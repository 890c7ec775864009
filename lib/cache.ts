// The prepared cache: every image decoded once to size x size grayscale bytes, one file per split, and an index.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { CLASSES, DEFAULTS, SPLITS, type Config, type Label } from './config.js';
import { CacheError, ConfigError, ImageError, messageOf, quote } from './errors.js';
import { ensureFolder, fileSize, outputError, sha256, sha256File, writeJsonAtomic } from './fsx.js';
import { withLock } from './lock.js';
import { decodeGray } from './images.js';
import { MANIFEST_FILE, readManifestAndDigest, type ManifestRow } from './manifest.js';
import { mapPool } from './pool.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';
import { patientGroupedSplit } from './split.js';

/**
 * Version of what a cache holds (index.json's format, the decoding, the validation rule); a cache of another version
 * is rebuilt. 2: alpha dropped before resizing (transparent areas were black), validation carved from the manifest's
 * rows, images that failed for a reason of their surroundings marked `transient`, `verify` recorded. 3: 16-bit images
 * scaled to their full range (12-bit data decoded nearly black), float and signed pixels refused; 8-bit images decode
 * to the same pixels as in version 2. 4: embedded ICC profiles ignored (8-bit images with one were converted through
 * it); images without one decode to the same pixels as in version 3.
 */
export const CACHE_VERSION = 4;
export const CACHE_INDEX_FILE = 'index.json';

/** The official splits a cache can hold. */
export type CacheSplit = (typeof SPLITS)[number];
/** Where an image is used: validation rows are carved out of the train split. */
export type Subset = 'train' | 'val' | 'test';
export const SUBSETS = ['train', 'val', 'test'] as const satisfies readonly Subset[];

/** One cached image. `offset` is its row number in its split's .u8 file. */
export interface CacheImage {
  readonly split: CacheSplit;
  /** Path relative to the labelled folder, as in the manifest. */
  readonly file: string;
  readonly label: Label;
  /** Position of `label` in CLASSES: the one-hot column. */
  readonly labelIndex: number;
  readonly patientId: string;
  readonly offset: number;
  readonly subset: Subset;
}

/** An image that could not be cached, and why (the ImageError message, which names the file). */
export interface CacheFailure {
  readonly split: CacheSplit;
  readonly file: string;
  readonly reason: string;
  /**
   * True when the failure came from the file's surroundings, not its content (missing, unreadable, changed since the
   * manifest): a cache reused later tries it again once the file is back.
   */
  readonly transient?: true;
}

/** One split's .u8 file in index.json. */
export interface CacheSplitInfo {
  readonly count: number;
  /** File name inside the cache folder. */
  readonly file: string;
  /** count x imageSize x imageSize. */
  readonly bytes: number;
  /**
   * SHA-256 of the whole .u8 file, lowercase hex: {@link openCache} refuses a file that no longer matches it and
   * {@link prepareCache} rebuilds one instead of reusing it. Optional: indexes written before it existed have none and
   * are still read (their files only get the size check), without a rebuild.
   */
  readonly sha256?: string;
}

/** index.json: everything needed to read the .u8 files and to tell whether they are still up to date. */
export interface CacheIndex {
  readonly version: number;
  readonly imageSize: number;
  readonly createdAt: string;
  /** SHA-256 of the manifest.csv the cache was made from. */
  readonly manifestSha256: string;
  readonly classes: readonly Label[];
  readonly valFraction: number;
  readonly seed: number;
  readonly maxInputPixels: number;
  readonly maxInputBytes: number;
  /** Whether each image was checked against the manifest's SHA-256 (a cache made without is not reused with). */
  readonly verify: boolean;
  readonly splits: { readonly [S in CacheSplit]?: CacheSplitInfo };
  /** Train images first, then test, each in row order. */
  readonly images: readonly CacheImage[];
  readonly failed: readonly CacheFailure[];
}

/** Options of {@link prepareCache}; every default comes from DEFAULTS. */
export interface PrepareOptions {
  /** The labelled folder holding manifest.csv (DEFAULTS.labeledDir). */
  labeledDir?: string;
  /** Parent of the caches: the cache goes to `cacheDir/<imageSize>` (DEFAULTS.cacheDir). */
  cacheDir?: string;
  imageSize?: number;
  /** Official splits to cache (both by default). */
  splits?: readonly CacheSplit[];
  valFraction?: number;
  seed?: number;
  /** Images decoded at once (DEFAULTS.prepareConcurrency). */
  concurrency?: number;
  maxInputPixels?: number;
  maxInputBytes?: number;
  /** Check each file's SHA-256 against the manifest before decoding it (default true). */
  verify?: boolean;
  /** Rebuild even when the cache is up to date (an interrupted build still resumes). */
  force?: boolean;
  /**
   * Report a cache found up to date through `onProgress` (default true). False when the caller has just prepared it
   * and said so (`pneumotype run` before training): its check then stays silent unless it has to rebuild.
   */
  announceReuse?: boolean;
  /** Images decoded between two checkpoints of an interrupted-build journal (default 64). */
  chunkRows?: number;
  onProgress?: ProgressCallback;
  /**
   * Stops the build between two checkpoints with a CacheError whose cause is the signal's reason (run it again to go
   * on); while waiting for another process's lock, the wait ends with the signal's reason itself.
   */
  signal?: AbortSignal;
}

/** What {@link prepareCache} did. */
export interface PrepareResult {
  /** The cache folder (pass it to openCache). */
  readonly dir: string;
  readonly index: CacheIndex;
  /** The cache was already up to date and was left untouched. */
  readonly reused: boolean;
  /** Only the validation split changed (seed, valFraction, or the rule that carves it): pixels kept, index.json rewritten. */
  readonly resplit: boolean;
  /** Manifest rows taken over from an interrupted build instead of being decoded again. */
  readonly resumedRows: number;
  /** Manifest rows of a split that is not cached: Kaggle's `val/` (16 train images, which Mendeley keeps in train). */
  readonly notCached: number;
}

/**
 * The prepare options a configuration implies (cache folder, input size, validation fraction, seed, concurrency), so
 * that every step asking for the same configuration finds the same cache.
 *
 * @example await prepareCache({ labeledDir: 'data/labeled', ...prepareOptionsFromConfig(resolveConfig('cpu')) })
 */
export function prepareOptionsFromConfig(config: Config): Pick<PrepareOptions, 'cacheDir' | 'imageSize' | 'valFraction' | 'seed' | 'concurrency'> {
  return {
    cacheDir: config.cacheDir,
    imageSize: config.imageSize,
    valFraction: config.valFraction,
    seed: config.seed,
    concurrency: config.prepareConcurrency,
  };
}

/** The folder of the cache for one image size. */
export function cacheDirFor(options: { cacheDir?: string; imageSize?: number } = {}): string {
  return join(options.cacheDir ?? DEFAULTS.cacheDir, String(options.imageSize ?? DEFAULTS.imageSize));
}

const CHUNK_ROWS = 64;

interface Resolved {
  labeledDir: string;
  dir: string;
  imageSize: number;
  splits: CacheSplit[];
  valFraction: number;
  seed: number;
  concurrency: number;
  maxInputPixels: number;
  maxInputBytes: number;
  verify: boolean;
  chunkRows: number;
}

function positiveInt(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new ConfigError(`${name} ${quote(value)} is not valid: expected an integer from 1 to ${max}`);
  }
  return value;
}

function resolve(options: PrepareOptions): Resolved {
  const imageSize = positiveInt('imageSize', options.imageSize ?? DEFAULTS.imageSize, 4096);
  const splits = [...new Set(options.splits ?? SPLITS)];
  for (const s of splits) {
    if (!(SPLITS as readonly string[]).includes(s)) {
      throw new ConfigError(`split ${quote(s)} cannot be cached: expected ${SPLITS.join(' or ')}`);
    }
  }
  if (splits.length === 0) throw new ConfigError('splits is empty: expected at least one of train, test');
  const valFraction = options.valFraction ?? DEFAULTS.valFraction;
  if (!Number.isFinite(valFraction) || valFraction < 0 || valFraction >= 1) {
    throw new ConfigError(`valFraction ${quote(valFraction)} is not valid: expected a number from 0 up to (not including) 1`);
  }
  const seed = options.seed ?? DEFAULTS.seed;
  if (!Number.isInteger(seed)) throw new ConfigError(`seed ${quote(seed)} is not valid: expected an integer`);
  return {
    labeledDir: options.labeledDir ?? DEFAULTS.labeledDir,
    dir: cacheDirFor({ cacheDir: options.cacheDir ?? DEFAULTS.cacheDir, imageSize }),
    imageSize,
    splits: SPLITS.filter((s) => splits.includes(s)),
    valFraction,
    seed,
    concurrency: positiveInt('concurrency', options.concurrency ?? DEFAULTS.prepareConcurrency, 256),
    maxInputPixels: positiveInt('maxInputPixels', options.maxInputPixels ?? DEFAULTS.maxInputPixels),
    maxInputBytes: positiveInt('maxInputBytes', options.maxInputBytes ?? DEFAULTS.maxInputBytes),
    verify: options.verify ?? true,
    chunkRows: positiveInt('chunkRows', options.chunkRows ?? CHUNK_ROWS),
  };
}

/** What decides the pixel content of a split's .u8 file (not the validation split). */
function pixelKey(r: Resolved, manifestSha256: string, split: CacheSplit): string {
  return JSON.stringify({
    version: CACHE_VERSION,
    split,
    manifestSha256,
    imageSize: r.imageSize,
    maxInputPixels: r.maxInputPixels,
    maxInputBytes: r.maxInputBytes,
    verify: r.verify,
  });
}

interface Journal {
  key: string;
  rowsDone: number;
  written: number;
  failed: CacheFailure[];
}

/** Decodes one manifest row, or says why it cannot be cached. Never throws for a bad file. */
async function decodeRow(row: ManifestRow, split: CacheSplit, r: Resolved): Promise<Uint8Array | CacheFailure> {
  const fail = (reason: string, transient = false): CacheFailure => ({ split, file: row.file, reason, ...(transient ? { transient: true } : {}) });
  const rel = normalize(row.file);
  if (row.file === '' || isAbsolute(row.file) || rel === '..' || rel.startsWith(`..${sep}`)) {
    return fail(`${quote(row.file)} is not a path inside the labelled folder ${quote(r.labeledDir)}`);
  }
  const path = join(r.labeledDir, row.file);
  const limits = { size: r.imageSize, maxInputPixels: r.maxInputPixels, maxInputBytes: r.maxInputBytes };
  try {
    const size = await fileSize(path);
    if (size === undefined) return fail(`${quote(path)} is listed in the manifest but missing`, true);
    if (size > r.maxInputBytes) return await decodeGray(path, limits); // throws the size error without reading
    const data = await readFile(path);
    if (r.verify && row.sha256 !== '') {
      const actual = sha256(data);
      if (actual !== row.sha256) {
        return fail(`${quote(path)} changed since the manifest was written: sha256 ${actual}, the manifest says ${row.sha256}`, true);
      }
    }
    return await decodeGray(data, { ...limits, name: path });
  } catch (err) {
    return err instanceof ImageError ? fail(err.message) : fail(`${quote(path)}: cannot be read (${messageOf(err)})`, true);
  }
}


/**
 * True when a file that failed for a reason of its surroundings is back: present, readable and (when verified) with
 * the manifest's content again. A file still changed or missing is not, so the cache is not rebuilt for it each time.
 */
async function anyBack(r: Resolved, failed: readonly CacheFailure[], manifest: readonly ManifestRow[]): Promise<boolean> {
  const transient = failed.filter((f) => f.transient);
  if (transient.length === 0) return false;
  const sha = new Map(manifest.map((row) => [`${row.split}\u0000${row.file}`, row.sha256]));
  for (const f of transient) {
    const data = await readFile(join(r.labeledDir, f.file)).catch(() => undefined);
    const expected = sha.get(`${f.split}\u0000${f.file}`) ?? '';
    if (data !== undefined && (!r.verify || expected === '' || sha256(data) === expected)) return true;
  }
  return false;
}

async function readJournal(path: string): Promise<Journal | undefined> {
  try {
    const j = JSON.parse(await readFile(path, 'utf8')) as Journal;
    if (typeof j.key !== 'string' || !Number.isInteger(j.rowsDone) || !Number.isInteger(j.written) || !Array.isArray(j.failed)) {
      return undefined;
    }
    return j;
  } catch {
    return undefined;
  }
}

/**
 * Decodes the rows of one split into `<split>.u8.part`, in manifest order, checkpointing `<split>.journal.json` after
 * every chunk of rows so that an interrupted build resumes where its last checkpoint left off.
 */
async function buildSplit(
  split: CacheSplit,
  rows: readonly ManifestRow[],
  key: string,
  r: Resolved,
  tracker: ProgressTracker,
  signal: AbortSignal | undefined,
): Promise<{ written: number; failed: CacheFailure[]; resumedRows: number }> {
  const rowBytes = r.imageSize * r.imageSize;
  const partPath = join(r.dir, `${split}.u8.part`);
  const journalPath = join(r.dir, `${split}.journal.json`);
  let journal = await readJournal(journalPath);
  const partSize = await fileSize(partPath);
  if (
    journal === undefined ||
    journal.key !== key ||
    journal.rowsDone > rows.length ||
    partSize === undefined ||
    partSize < journal.written * rowBytes
  ) {
    journal = { key, rowsDone: 0, written: 0, failed: [] };
  }
  const resumedRows = journal.rowsDone;
  if (resumedRows > 0) tracker.skip(resumedRows, `resuming ${split} at image ${resumedRows + 1} of ${rows.length}`);
  // A write that fails (a full disk) is an OutputError naming the .part file; the journal keeps what was done.
  const handle: FileHandle = await open(partPath, resumedRows > 0 ? 'r+' : 'w').catch(async (err: unknown) => {
    throw await outputError(partPath, err);
  });
  try {
    await handle.truncate(journal.written * rowBytes);
    for (let start = journal.rowsDone; start < rows.length; start += r.chunkRows) {
      if (signal?.aborted) {
        // The step's own error, saying how to go on (as a download's FetchError does); the journal is checkpointed.
        throw new CacheError(`preparing the cache ${quote(r.dir)} was aborted: run it again to continue from its last checkpoint`, {
          path: r.dir,
          cause: signal.reason,
        });
      }
      const chunk = rows.slice(start, start + r.chunkRows);
      const results = await mapPool(chunk, r.concurrency, (row) => decodeRow(row, split, r));
      const good = results.filter((x): x is Uint8Array => x instanceof Uint8Array);
      if (good.length > 0) {
        const buf = Buffer.allocUnsafe(good.length * rowBytes);
        good.forEach((px, k) => buf.set(px, k * rowBytes));
        await handle.write(buf, 0, buf.length, journal.written * rowBytes);
      }
      for (const x of results) {
        if (x instanceof Uint8Array) tracker.add(1);
        else {
          journal.failed.push(x);
          tracker.add(1, `skipped ${x.reason}`);
        }
      }
      journal.written += good.length;
      journal.rowsDone = start + chunk.length;
      // Checkpoint: pixels on disk first, then the journal that vouches for them.
      await handle.datasync();
      await writeJsonAtomic(journalPath, journal);
    }
    if (rows.length === 0) await writeJsonAtomic(journalPath, journal);
  } catch (err) {
    throw await outputError(partPath, err);
  } finally {
    await handle.close();
  }
  return { written: journal.written, failed: journal.failed, resumedRows };
}

/**
 * Carves the validation patients out of the manifest's train rows that relabel could read (width > 0), exactly as
 * `evaluate --split val` and `calibrate` carve them, and marks the cached images accordingly: an image that relabel
 * read but this cache could not decode leaves a hole, not a different split.
 */
function assignSubsets(
  images: Omit<CacheImage, 'subset'>[],
  manifest: readonly ManifestRow[],
  valFraction: number,
  seed: number,
): CacheImage[] {
  const train = manifest.filter((row) => row.split === 'train' && row.width > 0);
  const { val } = patientGroupedSplit(train, { valFraction, seed });
  const valFiles = new Set(val.map((k) => (train[k] as ManifestRow).file));
  return images.map((im) => ({ ...im, subset: im.split === 'test' ? 'test' : valFiles.has(im.file) ? 'val' : 'train' }));
}

/**
 * Decodes every image of the labelled folder's manifest once (grayscale, `imageSize` squared, as {@link decodeGray})
 * into `cacheDir/<imageSize>/{train,test}.u8` plus `index.json`, and carves a patient-grouped validation subset out of
 * train. Bad images (corrupt, truncated, not images, too large, changed since the manifest) are skipped and listed in
 * `index.failed`, with a progress message each.
 *
 * Idempotent and resumable: an index that matches the manifest's SHA-256, imageSize, limits, seed and valFraction is
 * returned untouched (`reused: true`); one that differs only in seed, valFraction or the subsets today's rule carves gets a new index over the same
 * pixels (`resplit: true`); anything else, a .u8 file of the wrong size or SHA-256 included, is rebuilt from scratch,
 * never mixed. Pixels go to `.part` files with a journal checkpointed every `chunkRows` images, so an interrupted build
 * picks up at its last checkpoint; each finished file's SHA-256 goes to the index, the old index is removed before the
 * new files are renamed into place and the new index is written last. While it works it holds `DIR.lock` beside the
 * cache folder: a second process preparing the same cache waits for it (saying so once through `onProgress`), then
 * finds the cache up to date.
 *
 * @example
 * const { dir, index } = await prepareCache({ labeledDir: 'data/labeled', imageSize: 128, onProgress: console.log })
 * const cache = await openCache(dir)
 */
export async function prepareCache(options: PrepareOptions = {}): Promise<PrepareResult> {
  const dir = resolve(options).dir;
  // Two trainings started together on one cache: the second waits for the first to prepare it, then reuses it.
  const wait = {
    onWait: (message: string) => options.onProgress?.({ stage: 'prepare', unit: 'images', done: 0, message: `waiting: ${message}` }),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  return withLock(`${dir}.lock`, `preparing the cache ${quote(dir)}`, () => prepareUnlocked(options), { wait });
}

async function prepareUnlocked(options: PrepareOptions = {}): Promise<PrepareResult> {
  const r = resolve(options);
  // Rows and digest from one read: a manifest rewritten meanwhile cannot key this cache with another version's digest.
  const { rows: manifest, sha256: manifestSha256 } = await readManifestAndDigest(r.labeledDir);
  const bySplit = new Map<CacheSplit, ManifestRow[]>(r.splits.map((s) => [s, manifest.filter((row) => row.split === s)]));
  const total = [...bySplit.values()].reduce((n, rows) => n + rows.length, 0);
  const tracker = new ProgressTracker({ stage: 'prepare', unit: 'images', total, onProgress: options.onProgress });
  const indexPath = join(r.dir, CACHE_INDEX_FILE);
  const ignored = manifest.filter((row) => !(SPLITS as readonly string[]).includes(row.split)).length;
  // Said on each way out below (one per call), but not by a cache found up to date that passes in silence
  // (announceReuse false).
  const noteIgnored = (): void => {
    if (ignored > 0) tracker.note(`${ignored} manifest rows of split "val" are not cached: only train and test are`);
  };

  if (!options.force) {
    const old = await loadIndex(r.dir).catch(() => undefined);
    if (
      old &&
      old.manifestSha256 === manifestSha256 &&
      old.imageSize === r.imageSize &&
      old.maxInputPixels === r.maxInputPixels &&
      old.maxInputBytes === r.maxInputBytes &&
      old.verify === r.verify &&
      sameSet(Object.keys(old.splits), r.splits) &&
      // An image that failed for a reason of its surroundings (missing, unreadable) is tried again once it is there.
      !(await anyBack(r, old.failed, manifest)) &&
      // Last, as it reads every pixel: a .u8 file that no longer matches its SHA-256 is rebuilt, as one of the wrong size is.
      (await checkPixels(r.dir, old).then(
        () => true,
        () => false,
      ))
    ) {
      // The subsets are carved again every time (no pixels read): a cache keeps no split that today's rule would not make.
      const images = assignSubsets(old.images.map(({ subset: _subset, ...im }) => im), manifest, r.valFraction, r.seed);
      if (old.seed === r.seed && old.valFraction === r.valFraction && images.every((im, i) => im.subset === old.images[i]?.subset)) {
        if (options.announceReuse !== false) {
          noteIgnored();
          tracker.skip(total); // found done: no rate (images checked, not decoded)
          tracker.finish(`the cache at ${quote(r.dir)} is up to date`);
        }
        return { dir: r.dir, index: old, reused: true, resplit: false, resumedRows: 0, notCached: ignored };
      }
      noteIgnored();
      const index: CacheIndex = { ...old, createdAt: new Date().toISOString(), valFraction: r.valFraction, seed: r.seed, images };
      await writeJsonAtomic(indexPath, index);
      tracker.skip(total);
      tracker.finish(`validation subset carved again (seed ${r.seed}, valFraction ${r.valFraction}) over the cached pixels`);
      return { dir: r.dir, index, reused: false, resplit: true, resumedRows: 0, notCached: ignored };
    }
  }

  noteIgnored();
  const images: Omit<CacheImage, 'subset'>[] = [];
  const failed: CacheFailure[] = [];
  const splits: { [S in CacheSplit]?: CacheSplitInfo } = {};
  let resumedRows = 0;
  await ensureFolder(r.dir);
  for (const [split, rows] of bySplit) {
    const built = await buildSplit(split, rows, pixelKey(r, manifestSha256, split), r, tracker, options.signal);
    resumedRows += built.resumedRows;
    const failedFiles = new Set(built.failed.map((f) => f.file));
    let offset = 0;
    for (const row of rows) {
      if (failedFiles.has(row.file)) continue;
      images.push({
        split,
        file: row.file,
        label: row.label,
        labelIndex: CLASSES.indexOf(row.label),
        patientId: row.patientId,
        offset: offset++,
      });
    }
    if (offset !== built.written) {
      throw new CacheError(`${quote(join(r.dir, `${split}.u8.part`))} holds ${built.written} images, expected ${offset}`);
    }
    failed.push(...built.failed);
    const file = `${split}.u8`;
    // Hashed as finished, before the rename: a resumed build has no single pass over all its bytes to hash on the way.
    const sha = await sha256File(join(r.dir, `${split}.u8.part`));
    splits[split] = { count: offset, file, bytes: offset * r.imageSize * r.imageSize, sha256: sha };
  }
  if (images.length === 0) {
    // A cache of nothing would pass for done; nothing can be trained or evaluated on it.
    const first = failed[0];
    throw new CacheError(
      first === undefined
        ? `${quote(join(r.labeledDir, MANIFEST_FILE))} lists no images of the splits ${r.splits.join(', ')}: nothing to cache`
        : `none of the ${failed.length} images of ${quote(r.labeledDir)} could be decoded (the first: ${first.reason}): nothing to cache`,
      { path: r.labeledDir },
    );
  }

  const index: CacheIndex = {
    version: CACHE_VERSION,
    imageSize: r.imageSize,
    createdAt: new Date().toISOString(),
    manifestSha256,
    classes: [...CLASSES],
    valFraction: r.valFraction,
    seed: r.seed,
    maxInputPixels: r.maxInputPixels,
    maxInputBytes: r.maxInputBytes,
    verify: r.verify,
    splits,
    images: assignSubsets(images, manifest, r.valFraction, r.seed),
    failed,
  };
  // Old index first: from here until the new index is written, the folder has no index and is rebuilt if interrupted.
  await rm(indexPath, { force: true });
  for (const split of SPLITS) {
    if (bySplit.has(split)) await rename(join(r.dir, `${split}.u8.part`), join(r.dir, `${split}.u8`));
    else await rm(join(r.dir, `${split}.u8`), { force: true });
  }
  await writeJsonAtomic(indexPath, index);
  for (const split of r.splits) await rm(join(r.dir, `${split}.journal.json`), { force: true });
  tracker.finish(
    `cached ${images.length} images at ${quote(r.dir)}${failed.length > 0 ? `, skipped ${failed.length}` : ''}`,
  );
  return { dir: r.dir, index, reused: false, resplit: false, resumedRows, notCached: ignored };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads and checks index.json and the sizes of the .u8 files it names. */
async function loadIndex(dir: string): Promise<CacheIndex> {
  const path = join(dir, CACHE_INDEX_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CacheError(`no prepared cache at ${quote(path)}: run \`pneumotype prepare\` first`, { path, cause: err });
  }
  let index: unknown;
  try {
    index = JSON.parse(text);
  } catch (err) {
    throw new CacheError(`${quote(path)} is not valid JSON (${messageOf(err)}): run \`pneumotype prepare\` again`, {
      path,
      cause: err,
    });
  }
  const corrupt = (what: string): CacheError =>
    new CacheError(`${quote(path)} is not a cache index: ${what}; run \`pneumotype prepare\` again`, { path });
  if (!isRecord(index)) throw corrupt('expected a JSON object');
  if (index.version !== CACHE_VERSION) {
    throw new CacheError(
      `${quote(path)} has version ${quote(index.version)}, expected ${CACHE_VERSION}: run \`pneumotype prepare\` again`,
      { path },
    );
  }
  const size = index.imageSize;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 1) throw corrupt(`imageSize ${quote(size)}`);
  if (!Array.isArray(index.images) || !Array.isArray(index.failed) || !isRecord(index.splits)) {
    throw corrupt('missing images, failed or splits');
  }
  const counts = new Map<string, number>();
  for (const [k, im] of (index.images as unknown[]).entries()) {
    if (
      !isRecord(im) ||
      !(SPLITS as readonly unknown[]).includes(im.split) ||
      !(SUBSETS as readonly unknown[]).includes(im.subset) ||
      typeof im.file !== 'string' ||
      typeof im.labelIndex !== 'number' ||
      !(CLASSES as readonly unknown[]).includes(im.label) ||
      CLASSES[im.labelIndex] !== im.label ||
      typeof im.offset !== 'number' ||
      !Number.isInteger(im.offset) ||
      im.offset < 0
    ) {
      throw corrupt(`image ${k} is malformed`);
    }
    counts.set(im.split as string, Math.max(counts.get(im.split as string) ?? 0, im.offset + 1));
  }
  for (const [split, info] of Object.entries(index.splits)) {
    if (!(SPLITS as readonly string[]).includes(split) || !isRecord(info)) throw corrupt(`split ${quote(split)}`);
    const { count, file, sha256: hash } = info;
    if (
      typeof count !== 'number' ||
      typeof file !== 'string' ||
      !/^[\w.-]+$/.test(file) ||
      (hash !== undefined && (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)))
    ) {
      throw corrupt(`split ${quote(split)} is malformed`);
    }
    if ((counts.get(split) ?? 0) > count) throw corrupt(`split ${quote(split)} has more images than its count ${count}`);
    const u8 = join(dir, file);
    const expected = count * size * size;
    const actual = await fileSize(u8);
    if (actual === undefined) {
      throw new CacheError(`${quote(u8)} is missing: the cache is incomplete; run \`pneumotype prepare\` again`, {
        path: u8,
      });
    }
    if (actual !== expected) {
      throw new CacheError(
        `${quote(u8)} is ${actual} bytes, expected ${count} x ${size} x ${size} = ${expected}: ` +
          'the cache is incomplete or corrupt; run `pneumotype prepare` again',
        { path: u8 },
      );
    }
  }
  for (const s of counts.keys()) if (!isRecord(index.splits[s])) throw corrupt(`split ${quote(s)} is not described`);
  return index as unknown as CacheIndex;
}

/** Checks each .u8 file against the SHA-256 its index records (an index without one: nothing to check). */
async function checkPixels(dir: string, index: CacheIndex): Promise<void> {
  for (const split of SPLITS) {
    const info = index.splits[split];
    if (info?.sha256 === undefined) continue;
    const u8 = join(dir, info.file);
    const actual = await sha256File(u8);
    if (actual !== info.sha256) {
      throw new CacheError(
        `${quote(u8)} does not match ${CACHE_INDEX_FILE} (SHA-256 ${actual.slice(0, 12)}…, ${CACHE_INDEX_FILE} says ` +
          `${info.sha256.slice(0, 12)}…): the cache is corrupt; run \`pneumotype prepare\` again`,
        { path: u8 },
      );
    }
  }
}

/** A prepared cache opened for reading. Reads are synchronous preads of one row each (or memory, when preloaded). */
export interface OpenedCache {
  readonly dir: string;
  readonly index: CacheIndex;
  readonly imageSize: number;
  /** Number of images in a subset. */
  count(subset: Subset): number;
  /** Indices into `index.images` of a subset, in index order. */
  indices(subset: Subset): readonly number[];
  /** A copy of image `i`'s `imageSize * imageSize` grayscale bytes (`i` indexes `index.images`). */
  readImage(i: number): Uint8Array;
  /** Reads image `i` into `target` at `targetOffset` without allocating. */
  readInto(i: number, target: Uint8Array, targetOffset?: number): void;
  close(): void;
}

/** Options of {@link openCache}. */
export interface OpenCacheOptions {
  /** Splits whose .u8 file is at most this many bytes are read into memory once (default 32 MiB). */
  preloadBytes?: number;
  /**
   * The files were checked against their SHA-256 a moment ago ({@link prepareCache} does when it reuses or writes
   * a cache): skip reading every pixel again. Default false.
   */
  pixelsChecked?: boolean;
}

/**
 * Opens a cache written by {@link prepareCache}: checks index.json, that every .u8 file has exactly
 * count x size x size bytes and, where the index records one, the file's SHA-256 (CacheError otherwise), then reads
 * rows on demand. Call `close()` when done.
 *
 * @example
 * const cache = await openCache('data/cache/224')
 * try { const px = cache.readImage(cache.indices('val')[0]!) } finally { cache.close() }
 */
export async function openCache(dir: string, options: OpenCacheOptions = {}): Promise<OpenedCache> {
  const index = await loadIndex(dir);
  if (options.pixelsChecked !== true) await checkPixels(dir, index);
  const size = index.imageSize;
  const rowBytes = size * size;
  const preloadBytes = options.preloadBytes ?? 32 * 1024 ** 2;
  const sources = new Map<CacheSplit, { fd: number | undefined; data: Uint8Array | undefined; path: string }>();
  for (const split of SPLITS) {
    const info = index.splits[split];
    if (!info) continue;
    const path = join(dir, info.file);
    try {
      if (info.bytes <= preloadBytes) sources.set(split, { fd: undefined, data: await readFile(path), path });
      else {
        const fd = openSync(path, 'r');
        if (fstatSync(fd).size !== info.count * rowBytes) {
          closeSync(fd);
          throw new CacheError(`${quote(path)} changed while being opened: run \`pneumotype prepare\` again`, { path });
        }
        sources.set(split, { fd, data: undefined, path });
      }
    } catch (err) {
      // The splits opened so far are closed again: a failed open leaves no file handle behind.
      for (const opened of sources.values()) if (opened.fd !== undefined) closeSync(opened.fd);
      if (err instanceof CacheError) throw err;
      throw new CacheError(`${quote(path)} cannot be opened (${messageOf(err)}): run \`pneumotype prepare\` again`, { path, cause: err });
    }
  }
  const bySubset = new Map<Subset, number[]>(SUBSETS.map((s) => [s, []]));
  index.images.forEach((im, i) => bySubset.get(im.subset)?.push(i));
  let closed = false;

  const readInto = (i: number, target: Uint8Array, targetOffset = 0): void => {
    if (closed) throw new CacheError(`the cache at ${quote(dir)} is closed`);
    const im = index.images[i];
    if (im === undefined || !Number.isInteger(i)) {
      throw new CacheError(`image ${quote(i)} is not in the cache at ${quote(dir)}: expected 0 to ${index.images.length - 1}`);
    }
    const src = sources.get(im.split);
    if (!src) throw new CacheError(`the cache at ${quote(dir)} has no ${im.split} split`);
    const pos = im.offset * rowBytes;
    if (src.data) {
      target.set(src.data.subarray(pos, pos + rowBytes), targetOffset);
      return;
    }
    let done = 0;
    while (done < rowBytes) {
      const n = readSync(src.fd as number, target, targetOffset + done, rowBytes - done, pos + done);
      if (n === 0) throw new CacheError(`${quote(src.path)} ended early at byte ${pos + done}: the cache is corrupt`);
      done += n;
    }
  };

  return {
    dir,
    index,
    imageSize: size,
    count: (subset) => bySubset.get(subset)?.length ?? 0,
    indices: (subset) => bySubset.get(subset) ?? [],
    readImage: (i) => {
      const out = new Uint8Array(rowBytes);
      readInto(i, out, 0);
      return out;
    },
    readInto,
    close: () => {
      if (closed) return;
      closed = true;
      for (const src of sources.values()) if (src.fd !== undefined) closeSync(src.fd);
    },
  };
}
