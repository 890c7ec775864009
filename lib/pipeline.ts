// The whole job, step by step: fetch, relabel (with extraction), prepare, train, calibrate, evaluate and report,
// skipping what is already done.
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DEFAULTS, presetNamed, resolveConfig, type Config, type PresetName } from './config.js';
import { CACHE_INDEX_FILE, CACHE_VERSION, cacheDirFor, prepareCache, prepareOptionsFromConfig, type PrepareResult } from './cache.js';
import { archivePathFor, fetchDataset, maskUserInfo, resolveSource, sameUrl, shownUrl, type FetchResult } from './fetch.js';
import { ensureFolder, exists, listFiles, readJsonFile, writeJsonAtomic } from './fsx.js';
import { filesNotAsListed, MANIFEST_FILE, readManifest } from './manifest.js';
import type { ProgressCallback } from './progress.js';
import { readSummary, relabel, sourceMatches, SUMMARY_FILE } from './relabel.js';
import type { AugmentOptions } from './augment.js';
import { readGroups, type GroupingSource } from './balance.js';
import { calibrateModel, type CalibrationRecord, type CalibrationResult } from './calibrate.js';
import { evaluateModel, evaluationSummary, type EvaluateResult } from './evaluate.js';
import { configHash, presetOfRun, readCard, recipeDifferences, runFinished, train, type ModelCard, type TrainResult } from './train.js';
import { ArchiveError, CacheError, ConfigError, LabelError, UsageError, messageOf, quote } from './errors.js';
import { writeRunReport } from './report.js';
import { loadTfWithInfo } from './tf.js';
import { extractRemoteZip, type RemoteExtractResult } from './remote-zip.js';
import { recoverDirSwap } from './checkpoint.js';
import { withLock } from './lock.js';
import { datasetEntryFilter } from './labels.js';

export interface PrepareStepOptions {
  readonly labeledDir?: string;
  readonly cacheDir?: string;
  readonly preset?: PresetName;
  readonly imageSize?: number;
  readonly valFraction?: number;
  readonly seed?: number;
  readonly onProgress?: ProgressCallback;
  /** Stops the build between two checkpoints (prepareCache's `signal`); running it again goes on. */
  readonly signal?: AbortSignal;
}

/** Builds (or reuses) the prepared cache with the preset's settings and describes the result in one line. */
export async function prepareStep(options: PrepareStepOptions): Promise<PrepareResult & { description: string }> {
  const config = resolveConfig(options.preset, {
    ...(options.imageSize !== undefined ? { imageSize: options.imageSize } : {}),
    ...(options.valFraction !== undefined ? { valFraction: options.valFraction } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
  });
  const r = await prepareCache({
    labeledDir: options.labeledDir ?? config.labeledDir,
    ...prepareOptionsFromConfig(config),
    ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const subsets = { train: 0, val: 0, test: 0 };
  for (const image of r.index.images) subsets[image.subset]++;
  const description =
    `${r.reused ? 'cache up to date' : 'cache written'}: ${r.dir} (${config.imageSize} px; ` +
    `${subsets.train} train, ${subsets.val} validation, ${subsets.test} test; ${r.index.failed.length} failed)` +
    // Said in the step's line, not only in a progress line that a terminal overwrites.
    (r.notCached > 0 ? `; ${r.notCached} image(s) of split "val" (Kaggle's val/) not cached: only train and test are, and validation is carved from train by patient` : '');
  return { ...r, description };
}

/** A JSON file the run wrote earlier, or a CacheError naming it when it cannot be read. */
function readJson<T>(path: string, what: string): Promise<T> {
  return readJsonFile<T>(path, (err) => new CacheError(`the ${what} ${quote(path)} cannot be read (${messageOf(err)}): remove it, or its folder, and run again`, { path, cause: err }));
}

/** What a step's note adds when images could not be read or the scores may mislead (evaluate's and calibrate's). */
function leftOut(failed: number, warnings: readonly string[]): string {
  return (failed > 0 ? `; warning: ${failed} image(s) could not be used and are left out` : '') + warnings.map((w) => `; warning: ${w}`).join('');
}

/** True when the labelled folder is complete: summary written last, every manifest file present with its size. */
async function labeledIsComplete(labeledDir: string): Promise<boolean> {
  if (!(await exists(join(labeledDir, SUMMARY_FILE))) || !(await exists(join(labeledDir, MANIFEST_FILE)))) return false;
  const rows = await readManifest(labeledDir);
  return rows.length > 0 && (await filesNotAsListed(labeledDir, rows)).length === 0;
}

export interface PipelineOptions {
  /** v2 | v3 | URL | path (PNEUMOTYPE_SOURCE, else DEFAULTS.source). */
  readonly source?: string;
  /** Root of downloads/, extracted/, labeled/ and cache/ (DEFAULTS.dataDir). */
  readonly dataDir?: string;
  readonly preset?: PresetName;
  /** Overrides of the preset's configuration (e.g. `{ graphOps: false }`), applied to every step. */
  readonly config?: Partial<Config>;
  /**
   * Read only the chest X-ray entries of a remote archive with HTTP Range requests instead of downloading it whole.
   * Default: true for `v3` (1.2 of 7.9 GB), false otherwise.
   */
  readonly remote?: boolean;
  readonly onProgress?: ProgressCallback;
  /** Called when a step starts or is skipped, with a one-line note. */
  readonly onStep?: (step: PipelineStep, note: string) => void;
  /** Train and evaluate after preparing (default true). */
  readonly train?: boolean;
  /** Fit a temperature on the validation patients and fold it into the trained model (default true; lib/calibrate.ts). */
  readonly calibrate?: boolean;
  /** Run folder of the training step (default `runs/<preset>`). */
  readonly runDir?: string;
  /**
   * Also evaluate per group of images (evaluate's `byGroup`, in evaluation.json and the report), e.g. the copy
   * pipeline of the shared data: `{ csv: '../shared/data/chest_xray_train_224.csv', column: 'derived_from' }`.
   */
  readonly groups?: GroupingSource;
  /** Augmentation for training (default none, as in the narrative). */
  readonly augment?: AugmentOptions | false;
  /** Called after every training epoch with a one-line summary. */
  readonly onEpoch?: Parameters<typeof train>[0]['onEpoch'];
}

export type PipelineStep = 'fetch' | 'relabel' | 'prepare' | 'train' | 'calibrate' | 'evaluate' | 'report';

/** The preset `run` uses when none is given: PNEUMOTYPE_PRESET (checked: an unknown name is a ConfigError), else gpu with a native GPU backend, else cpu. */
export function defaultPreset(): PresetName {
  return envPreset() ?? (loadTfWithInfo().info.package === '@tensorflow/tfjs-node-gpu' ? 'gpu' : 'cpu');
}

/**
 * The preset a training run into `out` uses: the one named, else the one the run folder was started with when it is
 * resumed (none, for runs from before this default), else {@link defaultPreset} (DEFAULTS alone would be 224 px,
 * which learns the copy pipelines and is far slower on a CPU). `train` and `sagemaker train` both choose so.
 *
 * @example await presetForRun(undefined, { out: 'runs/cpu', overrides: {}, resume: true }) // 'cpu' on a CPU machine
 */
export async function presetForRun(
  named: PresetName | undefined,
  options: { readonly out: string; readonly overrides: Partial<Config>; readonly resume: boolean },
): Promise<PresetName | undefined> {
  if (named !== undefined) return named;
  const auto = defaultPreset();
  const own = options.resume ? await presetOfRun(options.out, options.overrides, [auto, 'cpu', 'gpu', 'smoke', undefined]) : undefined;
  return own !== undefined ? own.preset : auto;
}

/** The preset PNEUMOTYPE_PRESET names (checked), undefined where it is unset or empty. */
function envPreset(): PresetName | undefined {
  const env = process.env.PNEUMOTYPE_PRESET;
  return env === undefined || env === '' ? undefined : presetNamed(env, 'PNEUMOTYPE_PRESET');
}

export interface PipelineResult {
  readonly steps: readonly { readonly step: PipelineStep; readonly skipped: boolean; readonly note: string }[];
  /** The downloaded or verified archive (absent when the chest entries were read remotely). */
  readonly archive?: FetchResult;
  readonly remote?: RemoteExtractResult;
  readonly labeledDir: string;
  readonly cache: PrepareResult;
  readonly training?: TrainResult;
  /** What calibration did (absent when it was skipped or turned off). */
  readonly calibration?: CalibrationRecord;
  readonly evaluation?: EvaluateResult;
  /** The self-contained HTML report of the run. */
  readonly report?: string;
}

/**
 * Runs fetch, relabel and prepare, then (unless `train` is false) train, calibrate, evaluate and report. Each step
 * checks its own output first: a verified archive is not downloaded again, a complete labelled folder is not
 * rebuilt, an up-to-date cache is reused, a finished model is not trained again nor a calibrated one calibrated; so
 * an interrupted run picks up where it stopped.
 *
 * @example await runPipeline({ source: 'v2', dataDir: 'data', preset: 'cpu' })
 */
export async function runPipeline(options: PipelineOptions = {}): Promise<PipelineResult> {
  // Without training, the cpu preset's cache (the gpu preset's is the same) and TensorFlow is not loaded to choose: a
  // later run finds the cache that --no-train prepared.
  const presetName = options.preset ?? (options.train === false ? (envPreset() === 'smoke' ? 'smoke' : 'cpu') : defaultPreset());
  const config = resolveConfig(presetName, options.config ?? {});
  const dataDir = options.dataDir ?? config.dataDir;
  const dirs = {
    downloads: join(dataDir, 'downloads'),
    extracted: join(dataDir, 'extracted'),
    labeled: join(dataDir, 'labeled'),
    cache: join(dataDir, 'cache'),
  };
  const progress = options.onProgress ? { onProgress: options.onProgress } : {};
  const steps: { step: PipelineStep; skipped: boolean; note: string }[] = [];
  const step = (name: PipelineStep, skipped: boolean, note: string): void => {
    steps.push({ step: name, skipped, note });
    options.onStep?.(name, note);
  };

  // The grouping CSV is only used by the evaluation at the end: a typo in its path is found before any work.
  if (options.groups) await readGroups(options.groups);
  const source = options.source ?? (process.env.PNEUMOTYPE_SOURCE || undefined) ?? config.source;
  const resolved = resolveSource(source);
  const url = resolved.kind === 'known' ? resolved.known.url : resolved.kind === 'url' ? resolved.url : undefined;
  if (options.remote === true && url === undefined) {
    // An option that cannot go with the source given: a usage error (the CLI's status 2), a ConfigError to callers.
    throw new UsageError(`remote reads an archive over HTTP with Range requests; ${quote(source)} is a local path: leave out --remote`, { path: source });
  }
  const remote = url !== undefined && (options.remote ?? (resolved.kind === 'known' && resolved.known.name === 'v3'));
  // A folder (an archive extracted by other means) is relabelled as it is: nothing to fetch. (resolveSource has named
  // a local path that does not exist.)
  const folder = resolved.kind === 'path' && (await stat(resolved.path)).isDirectory();
  let archive: FetchResult | undefined;
  let remoteResult: RemoteExtractResult | undefined;
  const labeledDone = await labeledIsComplete(dirs.labeled);

  // A complete labelled folder made from this source's archive needs no archive: one deleted since is not fetched again.
  // Compared by sourceMatches (lib/relabel.ts), not as paths relative to this process's working directory: the summary
  // may have been written by a run started elsewhere. `madeFrom` is what the messages show.
  const madeSource = labeledDone ? (await readSummary(dirs.labeled)).source : undefined;
  const madeFrom = madeSource === undefined ? undefined : (madeSource.absolute ?? madeSource.path);
  const made = (path: string | undefined): boolean => madeSource !== undefined && path !== undefined && sourceMatches(madeSource, dirs.labeled, path);
  const expected = archivePathFor(source, dirs.downloads);
  // What relabel reads: the archive, or the folder that a remote read fills (its URL recorded beside it).
  const from = remote ? dirs.extracted : (expected ?? source);
  const remoteRecord = `${dirs.extracted}.source.json`;
  const remoteFrom = (await exists(remoteRecord)) ? (await readJson<{ url: string }>(remoteRecord, 'remote source record')).url : undefined;
  // The URL as records and messages show it: a user name and password in it as *** (compared so too).
  const shown = url === undefined ? undefined : shownUrl(url);
  // The recorded URL names this source's archive: compared as the same file (a presigned link signed anew is).
  const sameRemote = (recorded: string | undefined): boolean => recorded !== undefined && url !== undefined && sameUrl(recorded, url);
  if (madeFrom !== undefined) {
    // Complete, but from this source? A different archive must not be skipped past (relabel itself refuses to mix),
    // and is refused before anything is downloaded.
    const wasRemote = made(dirs.extracted) && remoteFrom !== undefined;
    if (!made(from) || (remote && wasRemote && !sameRemote(remoteFrom))) {
      const was = wasRemote ? `${quote(remoteFrom)} (read with --remote)` : quote(madeFrom);
      const asked = remote ? `${quote(shown)} (read with --remote)` : quote(from);
      // The same archive, read the other way: the hint says how to read it as before, from this source's default
      // (v3 is read remotely unless told otherwise, every other source downloaded whole) and the flag given.
      const defaultRemote = resolved.kind === 'known' && resolved.known.name === 'v3';
      const same = wasRemote && !remote && sameRemote(remoteFrom)
        ? (defaultRemote ? 'leave out --download-whole' : options.remote === false ? 'use --remote instead of --download-whole' : 'add --remote')
        : !wasRemote && remote && made(expected)
          ? (!defaultRemote ? 'leave out --remote' : options.remote === true ? 'use --download-whole instead of --remote' : 'add --download-whole')
          : !wasRemote && existsSync(madeFrom) ? `give --source ${quote(madeFrom)}` : undefined; // the run started with another source (PNEUMOTYPE_SOURCE forgotten)
      throw new LabelError(
        `${quote(dirs.labeled)} was made from ${was}, not from ${asked}: ${same === undefined ? '' : `${same} to use it, `}choose another --data-dir, or remove ${quote(dirs.labeled)} to relabel`,
        { path: dirs.labeled },
      );
    }
  } else if (remote && remoteFrom !== undefined && !sameRemote(remoteFrom) && (await listFiles(dirs.extracted).catch(() => [])).length > 0) {
    // Only when the folder holds entries: a record left by a read that failed before its first entry is replaced.
    throw new LabelError(
      `${quote(dirs.extracted)} holds entries read from ${quote(remoteFrom)}, not from ${quote(shown)}: choose another --data-dir, or remove ${quote(dirs.extracted)} and ${quote(remoteRecord)}`,
      { path: dirs.extracted },
    );
  }
  const goneArchive = !remote && madeFrom !== undefined && expected !== undefined && !(await exists(expected)) ? expected : undefined;

  if (remote && labeledDone) {
    step('fetch', true, `${dirs.labeled} is complete; nothing to read from ${shown}`);
  } else if (folder) {
    step('fetch', true, `${source} is a folder: nothing to fetch`);
  } else if (goneArchive !== undefined) {
    step('fetch', true, `${dirs.labeled} is complete; its archive ${goneArchive} is gone and not needed`);
  } else if (madeFrom !== undefined && resolved.kind !== 'path') {
    // Downloaded and verified when it was relabelled, and not read again: no 1.2 GB hashed on every run.
    step('fetch', true, `${dirs.labeled} is complete, made from ${madeFrom}: the archive is not read again`);
  } else if (remote && url !== undefined) {
    options.onStep?.('fetch', `reading only the chest X-ray entries of ${shown} with Range requests`);
    await ensureFolder(dataDir);
    await writeJsonAtomic(remoteRecord, { url: shown });
    // The entries relabel reads (as `extract` selects them): chest_xray/ folders, or the layout under any top folder.
    remoteResult = await extractRemoteZip({ url, outDir: dirs.extracted, include: datasetEntryFilter, ...progress });
    if (remoteResult.entries.length === 0) {
      throw new ArchiveError(
        `the archive ${quote(shown)} holds no chest X-ray entries (a chest_xray/ folder as in ChestXRay2017.zip and ZhangLabData.zip, ` +
          `or {train,test}/{NORMAL,PNEUMONIA}/ folders; ${remoteResult.excluded} other entries): nothing to relabel; check the URL`,
        { path: shownUrl(url) },
      );
    }
    step('fetch', false, `extracted ${remoteResult.files + remoteResult.alreadyPresent} chest X-ray entries, ` +
      `${(remoteResult.transferredBytes / 1e9).toFixed(2)} of ${(remoteResult.archiveBytes / 1e9).toFixed(2)} GB transferred`);
  } else {
    options.onStep?.('fetch', 'checking the archive');
    archive = await fetchDataset({ source, outDir: dirs.downloads, ...progress });
    step('fetch', !archive.downloaded, archive.downloaded ? `downloaded ${archive.path}` : `verified ${archive.path}`);
  }

  // A local zip or folder may have changed since under the same path: relabelled again, which changes nothing when it
  // has not (relabel compares every file with what it made; seconds for the shared zip). A download is ours, verified.
  if (madeFrom !== undefined && resolved.kind !== 'path') {
    step('relabel', true, `${dirs.labeled} is complete (summary.json and every manifest file present)`);
  } else {
    const relabelFrom = archive?.path ?? from;
    options.onStep?.('relabel', madeFrom !== undefined ? `checking ${dirs.labeled} against ${relabelFrom}` : `relabelling ${relabelFrom}`);
    // Re-checking a complete folder: another run doing the same (a notebook beside `npm start`) is waited for, and a
    // source changed since is named with --data-dir (relabel's own hint names its --out).
    const recheck = madeFrom === undefined ? {} : {
      waitForLock: true,
      otherSourceHint: `${source} changed since it was relabelled: choose another --data-dir, or remove ${quote(dirs.labeled)} to relabel`,
    };
    const r = await relabel({ from: relabelFrom, out: dirs.labeled, extractedDir: dirs.extracted, ...recheck, ...progress });
    const c = r.summary.counts;
    step('relabel', !r.changed, `${dirs.labeled}: ${Object.entries(c).map(([s, n]) => `${s} ${n.total}`).join(', ')}`);
  }

  // A cache that is there is checked (its pixels read back) before anything is decoded: say which of the two is likely.
  const cacheDir = cacheDirFor({ cacheDir: dirs.cache, imageSize: config.imageSize });
  options.onStep?.('prepare', existsSync(join(cacheDir, CACHE_INDEX_FILE)) ? `checking ${cacheDir}` : `decoding into ${dirs.cache}`);
  const cache = await prepareStep({
    labeledDir: dirs.labeled,
    cacheDir: dirs.cache,
    preset: presetName,
    // The run's own settings (options.config included), so that training finds the cache prepared here.
    imageSize: config.imageSize,
    valFraction: config.valFraction,
    seed: config.seed,
    ...progress,
  });
  step('prepare', cache.reused, cache.description);
  const base = { steps, labeledDir: dirs.labeled, cache, ...(archive ? { archive } : {}), ...(remoteResult ? { remote: remoteResult } : {}) };
  if (options.train === false) return base;

  // Train (resuming an interrupted run; skipped when the run's model is complete), then evaluate.
  const runDir = options.runDir ?? join('runs', presetName);
  const modelCard = join(runDir, 'model', 'pneumotype.json');
  // A swap of model/ that a killed calibration left half done (its old folder half deleted, say) is finished or undone
  // here: once model/ is complete, neither step below would look at it again.
  await recoverDirSwap(join(runDir, 'model'));
  let training: TrainResult | undefined;
  let card: ModelCard;
  if ((await exists(modelCard)) && (await runFinished(runDir, config))) {
    // Reused only when it is this data's and this configuration's model.
    const existing = await readCard(modelCard);
    const [was, now] = [configHash({ ...DEFAULTS, ...existing.training.config }), configHash(config)];
    const other = existing.data.decoding !== undefined && existing.data.decoding !== CACHE_VERSION
      ? `images decoded another way (decoding version ${existing.data.decoding}, now ${CACHE_VERSION}; see CACHE_VERSION in lib/cache.ts)`
      : existing.data.manifestSha256 !== cache.index.manifestSha256
      ? `other data (manifest SHA-256 ${existing.data.manifestSha256.slice(0, 12)}…, ${dirs.labeled} has ${cache.index.manifestSha256.slice(0, 12)}…)`
      : was !== now
        ? `another configuration (${recipeDifferences({ ...DEFAULTS, ...existing.training.config }, config).join(', ') || `${was}, now ${now}`})`
        : existing.training.epochs !== config.epochs
          ? `another number of epochs (${existing.training.epochs}, now ${config.epochs})`
          : JSON.stringify(existing.training.augment ?? false) !== JSON.stringify(options.augment ?? false)
            ? `another augmentation (${JSON.stringify(existing.training.augment ?? false)}, now ${JSON.stringify(options.augment ?? false)})`
            // `run` trains from scratch without group balancing: a model that `train` started from another network or
            // trained with balanced groups is not this run's, whatever its configuration hash says.
            : existing.training.initFrom
              ? `a pretrained start (--init-from ${quote(maskUserInfo(existing.training.initFrom))}; run trains from scratch)`
              : existing.training.balanceGroups
                ? `group balancing (--balance-groups ${quote(existing.training.balanceGroups)}; run balances no groups)`
                : undefined;
    if (other !== undefined) {
      throw new ConfigError(`${quote(join(runDir, 'model'))} was trained on ${other}: choose another --out, or remove ${quote(runDir)} to train again`, { path: runDir });
    }
    step('train', true, `${runDir}/model exists (remove ${runDir} to train again)`);
    card = existing;
  } else {
    options.onStep?.('train', `training ${config.model} at ${config.imageSize} px for up to ${config.epochs} epochs into ${runDir}`);
    training = await train({
      data: dirs.labeled,
      out: runDir,
      cacheDir: dirs.cache,
      preset: presetName,
      ...(options.config ? { config: options.config } : {}),
      resume: true,
      augment: options.augment ?? false,
      cachePrepared: true, // the prepare step above reported the cache: train's check of it stays silent
      ...progress,
      ...(options.onEpoch ? { onEpoch: options.onEpoch } : {}),
    });
    step('train', false, `best epoch ${training.bestEpoch}: validation accuracy ${training.card.validation.accuracy.toFixed(3)}, macro-F1 ${training.card.validation.macroF1.toFixed(3)}`);
    card = training.card;
  }
  // Calibrate (skipped when the model's card already records a calibration).
  let calibration: CalibrationResult | undefined;
  if (options.calibrate === false) {
    step('calibrate', true, 'turned off');
  } else if (card.calibration) {
    step('calibrate', true, `${runDir}/model is calibrated (temperature ${card.calibration.temperature.toFixed(3)})`);
  } else {
    // Under the run's lock, as training: another run of the same folder neither trains into model/ while it is swapped,
    // nor calibrates it a second time (the card is read again once the lock is held: the look above was unlocked).
    const runLock = `${resolve(runDir)}.lock`;
    // A calibration takes seconds: another run's is waited for, then found done.
    const wait = { onWait: (message: string) => options.onProgress?.({ stage: 'calibrate', unit: 'images', done: 0, message: `waiting: ${message}` }) };
    calibration = await withLock(runLock, `calibrating the model of ${quote(resolve(runDir))}`, async () => {
      if ((await readCard(modelCard)).calibration) return undefined;
      options.onStep?.('calibrate', `fitting a temperature on the validation patients for ${runDir}/model`);
      return calibrateModel({ model: join(runDir, 'model'), data: dirs.labeled, ...progress });
    }, { wait });
    if (calibration === undefined) step('calibrate', true, `${runDir}/model was calibrated meanwhile, by another run`);
    else {
      step('calibrate', false, `temperature ${calibration.temperature.toFixed(3)}: expected calibration error ${calibration.before.ece.toFixed(3)} -> ${Number.isFinite(calibration.crossFitted.ece) ? calibration.crossFitted.ece.toFixed(3) : 'n/a'} (cross-fitted by patient)` +
        leftOut(calibration.failed.length, calibration.warnings));
    }
  }
  const hasTest = Object.keys(cache.index.splits).includes('test') && cache.index.images.some((i) => i.subset === 'test');
  const split = hasTest ? 'test' : 'val';
  options.onStep?.('evaluate', `evaluating ${runDir}/model on the ${split} split`);
  const evaluation = await evaluateModel({
    model: join(runDir, 'model'),
    data: dirs.labeled,
    split,
    out: join(runDir, 'evaluation.json'),
    predictions: join(runDir, 'predictions.csv'),
    ...(options.groups ? { groups: options.groups } : {}),
    ...progress,
  });
  step('evaluate', false, evaluationSummary(evaluation) + leftOut(evaluation.failed.length, evaluation.warnings ?? []));
  const reportPath = join(runDir, 'report.html'); // as the run folder was given, like the other steps' notes
  options.onStep?.('report', `writing ${reportPath}`);
  const report = await writeRunReport({ runDir, evaluation, predictionsCsv: join(runDir, 'predictions.csv'), labeledDir: dirs.labeled, out: reportPath });
  step('report', false, `${reportPath} (${report.figures} charts, self-contained)`);
  return { ...base, ...(training ? { training } : {}), ...(calibration ? { calibration } : {}), evaluation, report: report.out };
}
