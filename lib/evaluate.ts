// Using a trained model: load it, predict on files or buffers, and evaluate it on a labelled split with intervals.
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { LayersModel, Tensor } from '@tensorflow/tfjs';
import { groupOf, readGroups, type GroupingSource } from './balance.js';
import { layersModelFromArtifacts, readModelArtifacts, weightsDigest } from './checkpoint.js';
import { CLASSES, DEFAULTS, type EvaluationSplit, type Label } from './config.js';
import { toCsv } from './csv.js';
import { CacheError, ConfigError, ImageError, LabelError, OutputError, UsageError, checkInteger, messageOf, quote } from './errors.js';
import { checkOutputFile, exists, listFiles, sha256, writeFileAtomic, writeJsonAtomic } from './fsx.js';
import type { CalibrationFigures } from './calibrate.js';
import { decodeGray, type FailedImage } from './images.js';
import { inDatasetLayout, inOctHalf, parseName, planRelabel } from './labels.js';
import { MANIFEST_FILE, readManifestAndDigest } from './manifest.js';
import { seenInTraining, thumbnail, TRAINING_THUMBNAILS_FILE } from './phash.js';
import { accuracy, argmax, balancedAccuracy, confusionMatrix, evaluatePredictions, macroF1, perClassMetrics, rocAuc, virusShare, type EvaluationReport, type Prediction } from './metrics.js';
import { mapPool } from './pool.js';
import { ProgressTracker, type ProgressCallback } from './progress.js';
import { patientGroupedSplit } from './split.js';
import { loadTf } from './tf.js';
import type { ModelCard } from './train.js';
import { extractZip, isJunkEntry } from './zip.js';

/** The model shipped in the repository (`models/default`), used when no model folder is given. */
export const DEFAULT_MODEL_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'models', 'default');

/** A model ready to predict: the network, its card and where it came from. Call `dispose()` when done. */
export interface LoadedModel {
  readonly dir: string;
  readonly model: LayersModel;
  readonly card: ModelCard;
  /** The SHA-256 of its weights: which trained and calibrated model this is (a calibration changes the weights). */
  readonly weightsSha256: string;
  dispose(): void;
}

/**
 * Loads a model folder written by `train` (model.json, weights.bin, pneumotype.json); the shipped model by default.
 *
 * @example const m = await loadModel(); const [r] = await predict(m, ['x.jpeg']); if (r && 'label' in r) r.label; m.dispose()
 */
export async function loadModel(dir: string = DEFAULT_MODEL_DIR): Promise<LoadedModel> {
  const cardPath = join(dir, 'pneumotype.json');
  if (!(await exists(cardPath))) {
    // A training run's folder holds its model in model/.
    const inRun = join(dir, 'model');
    if (await exists(join(inRun, 'pneumotype.json'))) {
      throw new CacheError(`${quote(dir)} is a training run, not a model folder: its model is ${quote(inRun)}`, { path: dir });
    }
    if (!(await exists(dir))) {
      throw new CacheError(`the model folder ${quote(dir)} does not exist: expected a folder that pneumotype train wrote (pneumotype.json, model.json, weights.bin)`, { path: dir });
    }
    throw new CacheError(`${quote(dir)} is not a pneumotype model folder: ${quote(cardPath)} is missing (train one with \`pneumotype train\`)`, { path: dir });
  }
  let card: ModelCard;
  try {
    card = JSON.parse(await readFile(cardPath, 'utf8')) as ModelCard;
  } catch (err) {
    throw new CacheError(`${quote(cardPath)} cannot be read as JSON (${messageOf(err)}): the model folder is damaged; train or copy it again`, {
      path: cardPath,
      cause: err,
    });
  }
  const classes: unknown = (card as Partial<ModelCard> | null)?.classes;
  if (card?.format !== 'pneumotype-model' || !Array.isArray(classes) || classes.join() !== CLASSES.join()) {
    throw new CacheError(`${quote(cardPath)} is not a pneumotype model card for the classes ${CLASSES.join(', ')}`, { path: cardPath });
  }
  if (!Number.isInteger(card.imageSize) || card.imageSize < 1) {
    throw new CacheError(`${quote(cardPath)} gives the input size ${quote(card.imageSize)}: expected a whole number of pixels`, { path: cardPath });
  }
  const artifacts = await readModelArtifacts(dir);
  const weightsSha256 = weightsDigest(artifacts);
  const model = await layersModelFromArtifacts(artifacts, dir);
  // The card and the network must agree: an input of another size fails in tfjs with its own words, per image.
  const input = model.inputs[0]?.shape ?? [];
  const output = model.outputs[0]?.shape ?? [];
  const fits = (d: number | null | undefined, want: number): boolean => d === null || d === want;
  if (model.inputs.length !== 1 || input.length !== 4 || !fits(input[1], card.imageSize) || !fits(input[2], card.imageSize) || input[3] !== 1 ||
    model.outputs.length !== 1 || output.length !== 2 || output[1] !== CLASSES.length) {
    model.dispose();
    throw new CacheError(
      `${quote(join(dir, 'model.json'))} takes ${JSON.stringify(input)} and gives ${JSON.stringify(output)}, but ${quote(cardPath)} says ` +
        `[null,${card.imageSize},${card.imageSize},1] and [null,${CLASSES.length}]: the model folder is mixed up; train or copy it again`,
      { path: dir },
    );
  }
  return { dir, model, card, weightsSha256, dispose: () => model.dispose() };
}

/** One image to predict: a path, or bytes with a name. */
export type PredictInput = string | { readonly name: string; readonly data: Buffer };

export type PredictResult =
  | { readonly file: string; readonly label: Label; readonly probabilities: Readonly<Record<Label, number>> }
  | { readonly file: string; readonly error: string };

/** Probabilities of already decoded images (uint8 rows of size x size), in batches; no tensors are left behind. */
export async function predictPixels(model: LayersModel, size: number, rows: readonly Uint8Array[], batchSize = 32): Promise<number[][]> {
  checkInteger('batchSize', batchSize, 1);
  const tf = loadTf();
  const out: number[][] = [];
  for (let start = 0; start < rows.length; start += batchSize) {
    const chunk = rows.slice(start, start + batchSize);
    const flat = new Float32Array(chunk.length * size * size);
    chunk.forEach((r, i) => {
      for (let k = 0; k < r.length; k++) flat[i * size * size + k] = (r[k] ?? 0) / 255;
    });
    const probs = tf.tidy(() => model.predict(tf.tensor4d(flat, [chunk.length, size, size, 1])) as Tensor);
    try {
      out.push(...((await probs.array()) as number[][]));
    } finally {
      probs.dispose();
    }
  }
  return out;
}

/** Options of {@link predict}. */
export interface PredictOptions {
  /** Images per forward pass (at most 256 take effect: a long list goes 256 images at a time). */
  batchSize?: number;
  /** Images read and decoded at once (default: the cores, at least DEFAULTS.prepareConcurrency). */
  concurrency?: number;
}

/**
 * Predicts each image with the model's own preprocessing (grayscale, squashed to its input size). A bad image gives
 * an `error` entry, never an exception; a bad `batchSize` is a ConfigError. At most `concurrency` images (default: the
 * cores, at least DEFAULTS.prepareConcurrency) are read and decoded at once, and a long list goes 256 images at a
 * time (so a `batchSize` above 256 acts as 256).
 *
 * @example await predict(await loadModel('runs/cpu/model'), ['a.jpeg', { name: 'upload', data: buffer }])
 */
export async function predict(
  loaded: LoadedModel,
  inputs: readonly PredictInput[],
  options: PredictOptions = {},
): Promise<PredictResult[]> {
  if (options.batchSize !== undefined) checkInteger('batchSize', options.batchSize, 1);
  // Images decoded (and files open) at once: a list of thousands must not run out of file descriptors.
  const concurrency = options.concurrency ?? Math.max(DEFAULTS.prepareConcurrency, availableParallelism());
  checkInteger('concurrency', concurrency, 1);
  const size = loaded.card.imageSize;
  // A long list goes in chunks: only one chunk's pixels are held at once.
  if (inputs.length > PREDICT_CHUNK_IMAGES) {
    const out: PredictResult[] = [];
    for (let i = 0; i < inputs.length; i += PREDICT_CHUNK_IMAGES) out.push(...(await predict(loaded, inputs.slice(i, i + PREDICT_CHUNK_IMAGES), options)));
    return out;
  }
  const decoded = await mapPool(inputs, concurrency, async (input) => {
    const name = typeof input === 'string' ? input : input.name;
    try {
      return { name, pixels: await decodeGray(typeof input === 'string' ? input : input.data, { size, name }) };
    } catch (err) {
      return { name, error: messageOf(err) };
    }
  });
  const good = decoded.flatMap((d, i) => ('pixels' in d ? [{ i, pixels: d.pixels }] : []));
  const probs = await predictPixels(loaded.model, size, good.map((g) => g.pixels), options.batchSize);
  const byIndex = new Map<number, number[]>();
  good.forEach((g, k) => byIndex.set(g.i, probs[k] ?? []));
  return decoded.map((d, i) => {
    if ('error' in d) return { file: d.name, error: d.error ?? 'unknown error' };
    const p = byIndex.get(i) ?? [];
    const probabilities = Object.fromEntries(CLASSES.map((c, k) => [c, p[k] ?? 0])) as Record<Label, number>;
    return { file: d.name, label: CLASSES[argmax(p)] ?? 'normal', probabilities };
  });
}

/** Images {@link predict} decodes before it runs the model on them (a chunk's pixels: 256 x 224 x 224 bytes, 12.8 MB). */
const PREDICT_CHUNK_IMAGES = 256;

/** File names a folder given to predict is searched for. */
const IMAGE_FILE = /\.(jpe?g|png|webp|tiff?)$/i;

/**
 * Predict's inputs from command-line arguments: files (and paths that do not exist, which predict reports) as given,
 * each folder replaced by the image files under it, sorted (macOS's `__MACOSX/` and `._*` copies left out); a folder
 * without any is an error naming it.
 *
 * @example await expandImagePaths(['data/labeled/test/virus', 'x.png'])
 */
export async function expandImagePaths(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const path of paths) {
    if (!(await stat(path).catch(() => undefined))?.isDirectory()) {
      out.push(path);
      continue;
    }
    const images = (await listFiles(path)).filter(isImageEntry);
    if (images.length === 0) throw new ConfigError(`folder ${quote(path)} holds no image files (.jpeg, .jpg, .png, .webp, .tif, .tiff)`, { path });
    out.push(...images.map((f) => join(path, f)));
  }
  return out;
}

/** An image to evaluate: path relative to the data folder, its class and patient. */
interface EvalItem {
  readonly file: string;
  readonly label: Label;
  readonly patientId: string;
  /** The content relabel recorded (manifest.csv), checked before the image is scored. */
  readonly sha256?: string;
}

/** What `--data` may be, for messages: every layout {@link evaluationItems} reads. */
const DATA_LAYOUTS =
  'a labelled folder (manifest.csv from pneumotype relabel), a folder with test/{normal,bacteria,virus}/, ' +
  'an archive layout chest_xray/test/{NORMAL,PNEUMONIA}/ or its zip, or one split\'s own NORMAL/ and PNEUMONIA/ ' +
  '(or normal/, bacteria/, virus/) folders';

/** Top-level folders (in any case) that make a folder one split on its own (the test split extracted alone, say). */
const CLASS_FOLDERS = new Set(['normal', 'pneumonia', ...CLASSES]);

/**
 * The zip entries evaluation extracts: everything but the `train/` and `val/` folders and v3's `OCT/` scans (an `OCT/`
 * folder at the top or in `CellData/`; one beside `chest_xray/` is set aside by planRelabel), so the
 * test split of ChestXRay2017.zip costs about a tenth of the archive, not all 1.2 GB.
 */
export function evaluationEntryFilter(name: string): boolean {
  const folders = name.split('/').slice(0, -1);
  // OCT/ as labels.ts judges it: where ZhangLabData has it, not any folder of that name (`scans/Oct/test/…` is scored).
  return !folders.some((s) => ['train', 'val'].includes(s.toLowerCase())) && !inOctHalf(folders.join('/'));
}

/** The images `data` holds: its folder and their paths in it; a zip's entries (but train/) are extracted first. */
async function evaluationSource(
  data: string,
  options: { readonly split: EvaluationSplit; readonly extractedDir?: string; readonly onProgress?: ProgressCallback | undefined },
): Promise<{ root: string; files: readonly string[] | undefined }> {
  const info = await stat(data).catch((err: unknown) => {
    // The default folder is where relabel (and run) put the labelled dataset: missing, it most likely was never made.
    const hint = data === DEFAULTS.labeledDir ? ' (the default, where relabel and run write the labelled dataset: relabel first, or give --data)' : '';
    throw new ConfigError(`--data ${quote(data)} does not exist${hint}: expected ${DATA_LAYOUTS}`, { path: data, cause: err });
  });
  if (info.isDirectory()) return { root: data, files: undefined };
  if (options.split === 'val') {
    throw new ConfigError(`--split val needs the manifest.csv that relabel writes, and ${quote(data)} is an archive: relabel it first (pneumotype relabel --from ${data})`, { path: data });
  }
  const outDir = resolve(options.extractedDir ?? DEFAULTS.extractedDir);
  const r = await extractZip({
    archive: data,
    outDir,
    include: evaluationEntryFilter,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  }).catch((err: unknown) => {
    // A read-only working directory (the default folder is data/extracted under it): say where else to extract. The
    // system's error may come as it is, or as the cause of ours (an OutputError for the lock's folder, say).
    const system = err instanceof OutputError ? err.cause : err;
    const code = (system as { code?: unknown; cause?: { code?: unknown } }).code ?? (system as { cause?: { code?: unknown } }).cause?.code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      throw new ConfigError(
        `${quote(data)} cannot be extracted into ${quote(outDir)} (${messageOf(system)}): give --extracted (extractedDir) a folder whose parent you can write to`,
        { path: outDir, cause: err },
      );
    }
    throw err;
  });
  return { root: r.outDir, files: r.entries };
}

/**
 * Lists the images of `split` under `root`: from manifest.csv, else from `test/{normal,bacteria,virus}/` folders,
 * else from the raw archive layout (folder names in any case; v3's OCT scans left alone); a folder whose top level is
 * `NORMAL/` and `PNEUMONIA/` (or the three label folders) is read as the test split. `files` (relative paths)
 * replaces the listing of `root`, for an archive's own entries. No image of the test folder is left out silently: one
 * in a folder of no class, or a PNEUMONIA name without a label, is an error.
 */
async function evaluationItems(
  root: string,
  files: readonly string[] | undefined,
  split: EvaluationSplit,
  loaded: LoadedModel,
  warnings: string[],
): Promise<EvalItem[]> {
  if (files === undefined && (await exists(join(root, MANIFEST_FILE)))) {
    const { rows, sha256: digest } = await readManifestAndDigest(root);
    if (split === 'test') {
      // Every test row, those relabel could not read too: decoded afresh, they fail again and are listed in `failed`.
      const test = rows.filter((r) => r.split === 'test');
      const listed = new Set(test.map((r) => r.file));
      const testDir = join(root, 'test');
      const onDisk = (await exists(testDir)) ? (await listImages(testDir, warnings, () => true)).map((f) => `test/${f}`) : [];
      const extra = onDisk.filter((f) => !listed.has(f));
      if (extra.length > 0) {
        warnings.push(
          `${extra.length} image(s) in ${quote(testDir)} are not in ${quote(join(root, MANIFEST_FILE))} and were not scored: ` +
            `${extra.slice(0, 5).map((f) => quote(f)).join(', ')}${extra.length > 5 ? `, and ${extra.length - 5} more` : ''}; relabel the archive again to include them`,
        );
      }
      return test;
    }
    const train = rows.filter((r) => r.split === 'train' && r.width > 0);
    const { card } = loaded;
    const config = (card as Partial<ModelCard>).training?.config;
    if (typeof config?.valFraction !== 'number' || typeof config.seed !== 'number') {
      const cardPath = join(loaded.dir, 'pneumotype.json');
      throw new CacheError(`${quote(cardPath)} records no training configuration (valFraction, seed), so its validation split cannot be carved again: use --split test`, { path: cardPath });
    }
    // The split is carved again from this manifest: from another one it may hold images the model trained on.
    const manifest = join(root, MANIFEST_FILE);
    const trainedOn = (card as Partial<ModelCard>).data?.manifestSha256;
    if (trainedOn !== undefined && digest !== trainedOn) {
      warnings.push(
        `the validation split is carved from ${quote(manifest)} (SHA-256 ${digest.slice(0, 12)}…), not from the manifest the model ` +
          `was trained on (${trainedOn.slice(0, 12)}…): unless the same images were only re-encoded, it may hold images the model trained on, and its scores would be too good`,
      );
    }
    const { val } = patientGroupedSplit(train, { valFraction: config.valFraction, seed: config.seed });
    return val.map((i) => train[i] as EvalItem);
  }
  if (split === 'val') {
    throw new ConfigError(`--split val needs the manifest.csv that relabel writes, and ${quote(join(root, MANIFEST_FILE))} is missing`, { path: root });
  }
  // Images only: a note or a listing beside them in a class folder is no test image.
  // A link that leads nowhere is named where an image of it would have been scored (train/, val/ and OCT never are).
  const listed = files?.filter(isImageEntry) ?? (await listImages(root, warnings, evaluationEntryFilter));
  const alone = listed.some((f) => f.split('/').length === 2 && CLASS_FOLDERS.has((f.split('/')[0] ?? '').toLowerCase()));
  const prefix = alone ? 'test/' : '';
  const paths = listed.map((f) => prefix + f);
  const shown = (f: string): string => f.slice(prefix.length);
  // The labelled layout one folder down (`zip -r lab.zip lab`): every image under one top folder T, with T/test/bacteria/ or T/test/virus/.
  const tops = new Set(paths.map((f) => f.split('/')[0] ?? ''));
  const top = tops.size === 1 ? `${[...tops][0] ?? ''}/` : '';
  const labelledBelow =
    !alone && top !== '' && top.toLowerCase() !== 'test/' &&
    paths.some((f) => {
      const s = f.split('/');
      return s.length >= 4 && s[1]?.toLowerCase() === 'test' && ['bacteria', 'virus'].includes(s[2]?.toLowerCase() ?? '');
    });
  const base = labelledBelow ? top : '';
  const rel = (f: string): string[] => f.slice(base.length).split('/');
  const inTest = paths.filter((f) => rel(f).length >= 3 && rel(f)[0]?.toLowerCase() === 'test');
  const folders = [...new Set(inTest.map((f) => rel(f)[1] ?? ''))].sort();
  let items: EvalItem[];
  let testRoot = base;
  if (folders.some((d) => ['bacteria', 'virus'].includes(d.toLowerCase()))) {
    // Labelled: test/{normal,bacteria,virus}/, in any case.
    if (!folders.every((d) => (CLASSES as readonly string[]).includes(d.toLowerCase()))) {
      throw new ConfigError(
        `the test images in ${quote(root)} sit in the class folders ${folders.map((d) => quote(d)).join(', ')}: expected ` +
          'normal/, bacteria/ and virus/ (labelled) or NORMAL/ and PNEUMONIA/ (as in the archive), not a mix',
        { path: root },
      );
    }
    items = inTest.map((f) => {
      const label = (rel(f)[1] ?? '').toLowerCase() as Label;
      const name = f.split('/').at(-1) ?? f;
      return { file: shown(f), label, patientId: parseName(label === 'normal' ? 'NORMAL' : 'PNEUMONIA', name).patientId };
    });
  } else {
    if (!paths.some(inDatasetLayout)) return [];
    const plan = planRelabel({ files: paths, source: root, allowUnknown: true });
    const unknown = plan.rejected.filter((r) => r.dest.startsWith('rejected/test/'));
    if (unknown.length > 0) {
      throw new LabelError(
        `${unknown.length} test image(s) under PNEUMONIA/ in ${quote(root)} carry no single label (expected _bacteria_ or ` +
          `_virus_ in the name), so they cannot be scored; rename them or move them out:\n${unknown.map((u) => `  ${shown(u.source)} (${u.reason})`).join('\n')}`,
        { path: root, files: unknown.map((u) => shown(u.source)) },
      );
    }
    items = plan.images.filter((i) => i.split === 'test').map((i) => ({ file: shown(i.source), label: i.label, patientId: i.patientId }));
    testRoot = plan.root === '' ? '' : `${plan.root}/`;
  }
  const scored = new Set(items.map((i) => i.file));
  const testDir = `${testRoot}test/`.toLowerCase();
  const left = paths.filter((f) => f.toLowerCase().startsWith(testDir) && !scored.has(shown(f)));
  if (left.length > 0) {
    const named = left.slice(0, 5).map((f) => quote(shown(f))).join(', ') + (left.length > 5 ? `, and ${left.length - 5} more` : '');
    const expected = alone ? '{NORMAL,PNEUMONIA}/ or {normal,bacteria,virus}/' : `${testRoot}test/{NORMAL,PNEUMONIA}/ or test/{normal,bacteria,virus}/`;
    throw new ConfigError(`${left.length} test image(s) in ${quote(root)} sit in no class folder: ${named}; expected ${expected}`, { path: root });
  }
  return items;
}

/** An image file by its name, not a note or macOS's junk beside it. */
function isImageEntry(path: string): boolean {
  return IMAGE_FILE.test(path) && !isJunkEntry(path);
}

/** The images under `dir` (relative paths); a link that leads nowhere is named in `warnings` where `counts` says it matters. */
async function listImages(dir: string, warnings: string[], counts: (path: string) => boolean): Promise<string[]> {
  const onSkipped = (path: string, reason: string): void => {
    if (counts(path)) warnings.push(`${quote(join(dir, path))} was left out: ${reason}`);
  };
  return (await listFiles(dir, { onSkipped })).filter(isImageEntry);
}

export interface EvaluateModelOptions {
  /** Model folder (the shipped model by default). */
  readonly model?: string;
  /**
   * A labelled folder (manifest.csv), a folder with test/{normal,bacteria,virus}/, an extracted archive or its zip, or
   * the test split's own NORMAL/ and PNEUMONIA/ folders.
   */
  readonly data?: string;
  readonly split?: EvaluationSplit;
  /** Bootstrap resamples for the 95 % intervals (by patient). Default 1000. */
  readonly bootstrap?: number;
  readonly seed?: number;
  /** Writes the report here as JSON. */
  readonly out?: string;
  /** Writes one CSV row per image: file, patientId, trueLabel, predictedLabel and the three probabilities. */
  readonly predictions?: string;
  readonly concurrency?: number;
  /**
   * Also break the metrics down by a column of a CSV keyed by file name (matched on the base name), e.g. the shared
   * data's `chest_xray_train_224.csv` and its `derived_from` column: shortcut learning shows as a gap between groups.
   */
  readonly groups?: { readonly csv: string; readonly column: string };
  /** Where a zip `data` is extracted (all but train/ and val/, resumable). Default `data/extracted`, as relabel. */
  readonly extractedDir?: string;
  readonly onProgress?: ProgressCallback;
}

/** Metrics of one group of images (no intervals). */
export interface GroupMetrics {
  readonly n: number;
  readonly accuracy: number;
  readonly balancedAccuracy: number;
  readonly macroF1: number;
  /** Null for a class with no image in the group (support 0). */
  readonly recall: Readonly<Record<Label, number | null>>;
  readonly support: Readonly<Record<Label, number>>;
  /**
   * Bacteria-versus-virus AUC among the group's pneumonia images (virus positive, scored by {@link virusShare}): how
   * well the model ranks the two within one pipeline. Null when the group lacks either class.
   */
  readonly bacteriaVsVirusAuc: number | null;
}

/** Point metrics per group of `preds`, groups looked up by the file's base name (a grouping CSV, or the map readGroups made of one). */
export async function metricsByGroup(
  preds: readonly { file?: string | undefined; trueIndex: number; probs: readonly number[] }[],
  groups: GroupingSource | ReadonlyMap<string, string>,
): Promise<Record<string, GroupMetrics>> {
  const byName = 'csv' in groups ? await readGroups(groups) : groups;
  const buckets = new Map<string, { t: number[]; p: number[]; share: number[]; virus: boolean[] }>();
  for (const pr of preds) {
    const g = groupOf(byName, pr.file ?? '');
    const b = buckets.get(g) ?? { t: [], p: [], share: [], virus: [] };
    b.t.push(pr.trueIndex);
    b.p.push(argmax(pr.probs));
    if (pr.trueIndex !== 0) {
      b.share.push(virusShare(pr.probs));
      b.virus.push(pr.trueIndex === 2);
    }
    buckets.set(g, b);
  }
  const out: Record<string, GroupMetrics> = {};
  for (const [g, b] of [...buckets.entries()].sort((x, y) => x[0].localeCompare(y[0]))) {
    const cm = confusionMatrix(b.t, b.p);
    const per = perClassMetrics(cm);
    out[g] = {
      n: b.t.length,
      accuracy: accuracy(cm),
      balancedAccuracy: balancedAccuracy(cm),
      macroF1: macroF1(cm),
      recall: Object.fromEntries(CLASSES.map((c, k) => [c, (per[k]?.support ?? 0) > 0 ? (per[k]?.recall ?? 0) : null])) as Record<Label, number | null>,
      support: Object.fromEntries(CLASSES.map((c, k) => [c, per[k]?.support ?? 0])) as Record<Label, number>,
      bacteriaVsVirusAuc: b.virus.includes(true) && b.virus.includes(false) ? rocAuc(b.share, b.virus) : null,
    };
  }
  return out;
}

export interface EvaluateResult extends EvaluationReport {
  readonly split: EvaluationSplit;
  readonly model: string;
  readonly data: string;
  /**
   * The folder the image paths (`failed`, the predictions CSV) are relative to, absolute: `data`'s, or where a zip was
   * extracted (always set by evaluateModel; absent in evaluation files written before it was added, and relative in
   * some).
   */
  readonly imagesDir?: string;
  readonly failed: readonly FailedImage[];
  /** What may make the scores misleading (a validation split carved from other data); present when there is any. */
  readonly warnings?: readonly string[];
  /**
   * Why the scores are optimistic although nothing is wrong (see {@link splitCaveats}): the validation split chose the
   * model's epoch, or its temperature was fitted on these images. Present when there is any.
   */
  readonly caveats?: readonly string[];
  /**
   * The SHA-256 of the evaluated model's weights ({@link LoadedModel}): a report checks that it shows its own model's
   * evaluation (absent in evaluations written before it was added).
   */
  readonly weightsSha256?: string;
  /** The images that are the model's own training images or copies of them (see SplitPredictions); present when any. */
  readonly seenInTraining?: readonly string[];
  /** Present when `groups` was given. */
  readonly byGroup?: Record<string, GroupMetrics>;
}

/**
 * One line for people: the split, accuracy with its 95 % interval (none without bootstrap) and macro-F1, and whether
 * the model was tuned on the split (its `caveats`).
 *
 * @example evaluationSummary(await evaluateModel({ split: 'val' })) // 'val: accuracy 0.801 [0.757, 0.842], macro-F1 0.799, optimistic: the model was tuned on this split'
 */
export function evaluationSummary(r: EvaluateResult): string {
  const a = r.accuracy;
  const interval = Number.isFinite(a.low) && Number.isFinite(a.high) ? ` [${a.low.toFixed(3)}, ${a.high.toFixed(3)}]` : '';
  const tuned = r.caveats !== undefined && r.caveats.length > 0 ? ', optimistic: the model was tuned on this split' : '';
  return `${r.split}: accuracy ${a.value.toFixed(3)}${interval}, macro-F1 ${r.macroF1.value.toFixed(3)}${tuned}`;
}

/**
 * The cross-fitted calibration figures (temperature fitted on half the patients, measured on the other), for a caveat:
 * empty when the record has none.
 */
function crossFittedText(f: Partial<CalibrationFigures> | undefined): string {
  if (f === undefined || !Number.isFinite(f.ece)) return '';
  const more = Number.isFinite(f.brier) && Number.isFinite(f.logLoss) ? `, Brier score ${f.brier?.toFixed(3)}, log loss ${f.logLoss?.toFixed(3)}` : '';
  return ` (cross-fitted by patient, the unbiased measure: expected calibration error ${f.ece?.toFixed(3)}${more})`;
}

/**
 * Why a model's scores on a split are optimistic although nothing is wrong: training kept the epoch of best macro-F1
 * on the validation split (when it ran more than one), and `calibrate` may have fitted the temperature on the split's
 * images. An untouched test split has none.
 *
 * @example splitCaveats(card, 'val') // ['the validation split chose this model's epoch (58 of 60, …)', 'the temperature …']
 */
export function splitCaveats(card: ModelCard, split: EvaluationSplit): string[] {
  const caveats: string[] = [];
  const t = (card as Partial<ModelCard>).training;
  if (split === 'val' && t !== undefined && t.epochs > 1) {
    caveats.push(
      `the validation split chose this model's epoch (${t.epoch} of ${t.epochs}, the best validation macro-F1), so its scores are ` +
        'optimistic; an untouched test split is the unbiased measure',
    );
  }
  const k = card.calibration;
  if (k !== undefined && k.split === split) {
    caveats.push(`the temperature (${k.temperature.toFixed(3)}) was fitted on these ${k.images} images, so their calibration figures may be optimistic${crossFittedText(k.crossFitted)}`);
  }
  return caveats;
}

/**
 * Images that could not be read, for a message: the first five a line each (`  FILE: REASON`), then how many more
 * (followed by `more`, e.g. where the rest are listed).
 */
export function listFailed(failed: readonly FailedImage[], more = ''): string {
  return failed.slice(0, 5).map((f) => `  ${f.file}: ${f.reason}`).join('\n') + (failed.length > 5 ? `\n  and ${failed.length - 5} more${more}` : '');
}

/** The predictions of a model on a split's images, and the images that could not be decoded. */
export interface SplitPredictions {
  readonly preds: Array<Prediction & { readonly file: string }>;
  readonly failed: FailedImage[];
  /** The folder the files are relative to (where a zip was extracted). */
  readonly imagesDir: string;
  /** What may make scores on these predictions misleading (a validation split carved from other data). */
  readonly warnings: string[];
  /**
   * The images (as `failed` names them) that are the model's training images or copies of them, known by the
   * thumbnails the model keeps ({@link seenInTraining}); empty for a model without them.
   */
  readonly seenInTraining: readonly string[];
}

/** Which of `pixels` (decoded at the model's input size) the model trained on, by its TRAINING_THUMBNAILS_FILE. */
async function seenByModel(loaded: LoadedModel, pixels: readonly Uint8Array[], concurrency: number): Promise<number[]> {
  const path = join(loaded.dir, TRAINING_THUMBNAILS_FILE);
  const training = await readFile(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined; // a model trained before it was kept
    throw new CacheError(`cannot read ${quote(path)} (${messageOf(err)})`, { path, cause: err });
  });
  if (training === undefined) return [];
  const thumbs = await mapPool(pixels, concurrency, (p) => thumbnail(p, loaded.card.imageSize));
  return seenInTraining(thumbs, training);
}

/**
 * The model's probabilities for every image of a split, each decoded afresh with the model's preprocessing: what
 * {@link evaluateModel} scores and `calibrate` fits on.
 *
 * @example const { preds } = await predictSplit(await loadModel(), { data: 'data/labeled', split: 'val' })
 */
export async function predictSplit(
  loaded: LoadedModel,
  options: {
    readonly data: string;
    readonly split: EvaluationSplit;
    readonly concurrency?: number;
    readonly onProgress?: ProgressCallback;
    /** The stage the progress reports name (default "evaluate"). */
    readonly stage?: string;
    /** Where a zip `data` is extracted (all but train/ and val/, resumable). Default `data/extracted`, as relabel. */
    readonly extractedDir?: string;
  },
): Promise<SplitPredictions> {
  const { data, split } = options;
  const { root, files } = await evaluationSource(data, options);
  const warnings: string[] = [];
  const items = await evaluationItems(root, files, split, loaded, warnings);
  if (items.length === 0) {
    if (split === 'test' && files === undefined && (await exists(join(root, MANIFEST_FILE)))) {
      // A labelled folder of the train split alone (the shared data): the test split is elsewhere, or the validation split will do.
      throw new ConfigError(
        `${quote(data)} holds no test images: its ${MANIFEST_FILE} lists no test split. Score the validation split carved from it ` +
          '(--split val), or give the test split with --data (its archive, the extracted folder, or a folder with test/{normal,bacteria,virus}/)' +
          warnings.map((w) => `; ${w}`).join(''),
        { path: data },
      );
    }
    const expected = split === 'test'
      ? `: expected ${DATA_LAYOUTS}`
      : ': the validation split is carved by patient from its train split, as the model was trained (a val/ folder, as in Kaggle\'s copy, is not it)';
    throw new ConfigError(`no ${split} images found in ${quote(data)}${expected}`, { path: data });
  }
  const tracker = new ProgressTracker({ stage: options.stage ?? 'evaluate', unit: 'images', total: items.length, onProgress: options.onProgress });
  const size = loaded.card.imageSize;
  const decoded = await mapPool(items, options.concurrency ?? DEFAULTS.prepareConcurrency, async (item) => {
    try {
      // With the manifest's SHA-256, the bytes are read once, checked, then decoded (unreadable: decodeGray says so).
      const path = join(root, item.file);
      const data = item.sha256 === undefined ? undefined : await readFile(path).catch(() => undefined);
      const digest = data === undefined ? undefined : sha256(data);
      if (digest !== undefined && digest !== item.sha256) {
        return { item, pixels: undefined, reason: `changed since relabel: SHA-256 ${digest.slice(0, 12)}…, ${MANIFEST_FILE} has ${item.sha256?.slice(0, 12) ?? ''}…` };
      }
      return { item, pixels: await decodeGray(data ?? path, { size, name: item.file }), reason: undefined };
    } catch (err) {
      return { item, pixels: undefined, reason: messageOf(err) };
    } finally {
      tracker.add(1);
    }
  });
  const ok = decoded.flatMap((d) => (d.pixels ? [{ item: d.item, pixels: d.pixels }] : []));
  const failed = decoded.flatMap((d) => (d.reason !== undefined ? [{ file: d.item.file, reason: d.reason }] : []));
  if (ok.length === 0) {
    throw new ImageError(`none of the ${failed.length} ${split} image(s) in ${quote(data)} could be read:\n${listFailed(failed)}`, { path: root });
  }
  const probs = await predictPixels(loaded.model, size, ok.map((o) => o.pixels));
  // Images the model trained on (another copy of one, too), known by the thumbnails it keeps: said, not dropped.
  const seen = await seenByModel(loaded, ok.map((o) => o.pixels), options.concurrency ?? DEFAULTS.prepareConcurrency);
  const seenFiles = seen.map((i) => ok[i]?.item.file ?? '');
  if (seenFiles.length > 0) {
    warnings.push(
      `${seenFiles.length} of the ${ok.length} images are the model's own training images, or copies of them (${quote(seenFiles[0])}` +
        `${seenFiles.length > 1 ? `, and ${seenFiles.length - 1} more: listed in "seenInTraining"` : ''}): their scores say little of new images`,
    );
  }
  tracker.finish();
  return {
    preds: ok.map((o, i) => ({ trueIndex: CLASSES.indexOf(o.item.label), probs: probs[i] ?? [], patientId: o.item.patientId, file: o.item.file })),
    failed,
    imagesDir: root,
    warnings,
    seenInTraining: seenFiles,
  };
}

/**
 * Why `out` and `predictions` cannot both be written (one path for both: the CSV would replace the JSON), or
 * undefined when they can.
 *
 * @example outputsClash('e.json', './e.json') // 'the evaluation (--out) and the predictions (--predictions) are both "e.json": ...'
 */
function outputsClash(out: string | undefined, predictions: string | undefined): string | undefined {
  if (out === undefined || predictions === undefined || resolve(out) !== resolve(predictions)) return undefined;
  return `the evaluation (--out) and the predictions (--predictions) are both ${quote(out)}: the CSV would replace the JSON; give two files`;
}

/**
 * Evaluates a model on a split, decoding every image afresh with the model's preprocessing (no prepared cache
 * needed): accuracy, balanced accuracy, macro-F1, per-class scores, confusion matrix, one-vs-rest AUCs, the two
 * binary views and calibration, each with a 95 % bootstrap interval resampled by patient.
 *
 * @example const r = await evaluateModel({ data: 'data/labeled', split: 'test' }); r.accuracy.value
 */
export async function evaluateModel(options: EvaluateModelOptions = {}): Promise<EvaluateResult> {
  const data = options.data ?? DEFAULTS.labeledDir;
  const split = options.split ?? 'test';
  // Read before any image is scored: a bad grouping CSV, or an output path that cannot be written, is found first.
  const groups = options.groups ? await readGroups(options.groups) : undefined;
  // Two options that cannot go together: a usage error (the CLI's status 2), a ConfigError to callers.
  const clash = outputsClash(options.out, options.predictions);
  if (clash !== undefined) throw new UsageError(clash, { path: options.out ?? '' });
  for (const path of [options.out, options.predictions]) if (path) await checkOutputFile(path);
  const loaded = await loadModel(options.model);
  try {
    const { preds, failed, imagesDir, warnings, seenInTraining: seen } = await predictSplit(loaded, {
      data, split,
      ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
      ...(options.extractedDir !== undefined ? { extractedDir: options.extractedDir } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const report = evaluatePredictions(preds, {
      ...(options.bootstrap !== undefined ? { bootstrap: options.bootstrap } : {}),
      ...(options.seed !== undefined ? { seed: options.seed } : {}),
    });
    const caveats = splitCaveats(loaded.card, split);
    const result: EvaluateResult = {
      // Absolute: a report made from another folder finds the images again.
      split, model: loaded.dir, weightsSha256: loaded.weightsSha256, data, imagesDir: resolve(imagesDir), ...report, failed,
      ...(warnings.length > 0 ? { warnings } : {}),
      ...(caveats.length > 0 ? { caveats } : {}),
      ...(seen.length > 0 ? { seenInTraining: seen } : {}),
      ...(groups ? { byGroup: await metricsByGroup(preds, groups) } : {}),
    };
    if (options.out) await writeJsonAtomic(options.out, result);
    if (options.predictions) {
      const rows = preds.map((p) => ({
        file: p.file,
        patientId: p.patientId,
        trueLabel: CLASSES[p.trueIndex] ?? '',
        predictedLabel: CLASSES[argmax(p.probs)] ?? '',
        normal: p.probs[0] ?? 0,
        bacteria: p.probs[1] ?? 0,
        virus: p.probs[2] ?? 0,
      }));
      await writeFileAtomic(options.predictions, toCsv(['file', 'patientId', 'trueLabel', 'predictedLabel', 'normal', 'bacteria', 'virus'], rows));
    }
    return result;
  } finally {
    loaded.dispose();
  }
}
