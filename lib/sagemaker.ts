// SageMaker's training contract: hyperparameters and channels under /opt/ml in; the model and a failure reason out.
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { augmentFromName, type AugmentOptions } from './augment.js';
import { calibrateModel } from './calibrate.js';
import { PRESETS, presetAlias, resolveConfig, type Config, type PresetName } from './config.js';
import { CacheError, ConfigError, IntegrityError, MAX_TIMER_MS, messageOf, quote } from './errors.js';
import { exists, writeFileAtomic } from './fsx.js';
import { filesNotAsListed, MANIFEST_FILE, readManifest } from './manifest.js';
import { TRAINING_THUMBNAILS_FILE } from './phash.js';
import type { ProgressCallback } from './progress.js';
import { relabel } from './relabel.js';
import { presetForRun } from './pipeline.js';
import { train, type TrainResult } from './train.js';
import { UPLOAD_MANIFEST_NAME } from './upload.js';

/** Where SageMaker mounts everything in a training or hosting container. */
export const SAGEMAKER_ROOT = '/opt/ml';

/** The channel that holds the images. */
export const TRAINING_CHANNEL = 'training';

/** The files of a model folder, as `train` writes them and `serve` reads them. */
export const MODEL_FILES = ['model.json', 'weights.bin', 'pneumotype.json'] as const;

/** The folders and files of SageMaker's contract under a root (`/opt/ml`). */
export interface SageMakerPaths {
  readonly root: string;
  /** `input/config/hyperparameters.json`: every value a string. */
  readonly hyperparameters: string;
  /** `input/data`: one folder per channel. */
  readonly channels: string;
  /** `model`: packed as model.tar.gz when the job ends (also when it is stopped). */
  readonly model: string;
  /** `output/failure`: the text SageMaker shows as the job's failure reason. */
  readonly failure: string;
  /** `output/data`: packed as output.tar.gz (the run folder, history.json). */
  readonly outputData: string;
  /** `checkpoints`: present when the job has a checkpoint configuration (synced with S3; spot training resumes from it). */
  readonly checkpoints: string;
}

/**
 * The paths of SageMaker's contract under `root`.
 *
 * @example sageMakerPaths('/opt/ml').failure // '/opt/ml/output/failure'
 */
export function sageMakerPaths(root: string): SageMakerPaths {
  return {
    root,
    hyperparameters: join(root, 'input', 'config', 'hyperparameters.json'),
    channels: join(root, 'input', 'data'),
    model: join(root, 'model'),
    failure: join(root, 'output', 'failure'),
    outputData: join(root, 'output', 'data'),
    checkpoints: join(root, 'checkpoints'),
  };
}

/** The hyperparameters a training job accepts (SageMaker passes each as a string). */
export const HYPERPARAMETERS = {
  preset: 'smoke | cpu | gpu (tiny = smoke); default $PNEUMOTYPE_PRESET, else as train: gpu with tfjs-node-gpu, else cpu (a resumed run keeps its own)',
  model: 'resnet | mobile | tiny',
  epochs: 'a whole number from 1 to 10000',
  'image-size': 'a whole number from 16 to 1024',
  'batch-size': 'a whole number from 1 to 4096',
  seed: 'a whole number from 0 to 2^32 - 1',
  'learning-rate': 'a number above 0 and at most 1',
  optimizer: 'adam | sgd (Nesterov momentum 0.9)',
  'weight-decay': 'a number from 0 to 1 (the L2 penalty)',
  augment: 'none | basic | traces (default traces, as the CLI)',
  resume: 'true | false (default true): continue from /opt/ml/checkpoints when the job has a checkpoint configuration',
  calibrate: 'true | false (default true): fit a temperature on the validation patients and fold it into the model',
} as const;
export type HyperparameterName = keyof typeof HYPERPARAMETERS;

/** Hyperparameters turned into training options. */
export interface TrainingPlan {
  readonly preset: PresetName | undefined;
  readonly config: Partial<Config>;
  readonly augment: 'none' | 'basic' | 'traces';
  readonly resume: boolean;
  readonly calibrate: boolean;
}

/**
 * Parses SageMaker's hyperparameters (every value a string; JSON numbers and booleans are taken too) into training
 * options. Unknown names are refused; names SageMaker adds itself (`_tuning_objective_metric`, `sagemaker_*`) are
 * ignored. Throws a ConfigError that names the file, the hyperparameter, its value and what was expected.
 *
 * @example parseHyperparameters({ preset: 'gpu', epochs: '20' }) // { preset: 'gpu', config: { epochs: 20 }, augment: 'traces', resume: true, calibrate: true }
 */
export function parseHyperparameters(raw: unknown, file = 'hyperparameters.json', defaultPreset?: string): TrainingPlan {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${quote(file)} is not a JSON object of hyperparameters`, { path: file });
  }
  const names = Object.keys(HYPERPARAMETERS);
  const values = new Map<HyperparameterName, string>();
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (key.startsWith('_') || key.startsWith('sagemaker_')) continue;
    if (!names.includes(key)) {
      throw new ConfigError(`unknown hyperparameter ${quote(key)} in ${quote(file)}: expected ${names.join(', ')}`, { path: file });
    }
    // SageMaker sends strings; some SDKs JSON-encode them once more ("\"gpu\""): unwrap that.
    let text = typeof value === 'string' ? value.trim() : typeof value === 'number' || typeof value === 'boolean' ? String(value) : undefined;
    if (text !== undefined && /^".*"$/.test(text)) text = text.slice(1, -1).trim();
    if (text === undefined) {
      throw new ConfigError(`hyperparameter ${quote(key)} is ${quote(value)} in ${quote(file)}: expected ${HYPERPARAMETERS[key as HyperparameterName]}`, { path: file });
    }
    values.set(key as HyperparameterName, text);
  }
  const bad = (key: HyperparameterName): ConfigError =>
    new ConfigError(`hyperparameter ${quote(key)} is ${quote(values.get(key))} in ${quote(file)}: expected ${HYPERPARAMETERS[key]}`, { path: file });
  const real = (key: HyperparameterName, ok: (n: number) => boolean): number | undefined => {
    const text = values.get(key);
    if (text === undefined) return undefined;
    const n = Number(text);
    if (text === '' || !Number.isFinite(n) || !ok(n)) throw bad(key);
    return n;
  };
  const whole = (key: HyperparameterName, min: number, max: number): number | undefined =>
    real(key, (n) => Number.isInteger(n) && n >= min && n <= max);
  const choice = <T extends string>(key: HyperparameterName, options: readonly T[]): T | undefined => {
    const text = values.get(key)?.toLowerCase();
    if (text === undefined) return undefined;
    if (!(options as readonly string[]).includes(text)) throw bad(key);
    return text as T;
  };

  const config: Partial<Config> = {};
  const model = choice('model', ['resnet', 'mobile', 'tiny']);
  if (model !== undefined) config.model = model;
  const epochs = whole('epochs', 1, 10_000);
  if (epochs !== undefined) config.epochs = epochs;
  const imageSize = whole('image-size', 16, 1024);
  if (imageSize !== undefined) config.imageSize = imageSize;
  const batchSize = whole('batch-size', 1, 4096);
  if (batchSize !== undefined) config.batchSize = batchSize;
  const seed = whole('seed', 0, 2 ** 32 - 1);
  if (seed !== undefined) config.seed = seed;
  const lr = real('learning-rate', (n) => n > 0 && n <= 1);
  if (lr !== undefined) config.learningRate = lr;
  const weightDecay = real('weight-decay', (n) => n >= 0 && n <= 1);
  if (weightDecay !== undefined) config.weightDecay = weightDecay;
  const optimizer = choice('optimizer', ['adam', 'sgd']);
  if (optimizer !== undefined) config.optimizer = optimizer;
  let preset: string | undefined = choice('preset', ['smoke', 'tiny', 'cpu', 'gpu']);
  if (preset === undefined && defaultPreset !== undefined && defaultPreset !== '') {
    if (!['tiny', ...Object.keys(PRESETS)].includes(defaultPreset)) {
      throw new ConfigError(`PNEUMOTYPE_PRESET=${quote(defaultPreset)} is not one of ${Object.keys(PRESETS).join(', ')}`);
    }
    preset = defaultPreset;
  }
  const resume = choice('resume', ['true', 'false']);
  const calibrate = choice('calibrate', ['true', 'false']);
  return {
    preset: presetAlias(preset) as PresetName | undefined,
    config,
    augment: choice('augment', ['none', 'basic', 'traces']) ?? 'traces',
    resume: resume !== 'false',
    calibrate: calibrate !== 'false',
  };
}

/** One log line of a training job (the CLI prints them as JSON lines, which end up in CloudWatch). */
export interface SageMakerLogLine {
  readonly time: string;
  readonly level: 'info' | 'warn' | 'error';
  readonly event: string;
  readonly [field: string]: unknown;
}

export interface SageMakerTrainingOptions {
  /** The contract's root: option, else $PNEUMOTYPE_SM_ROOT, else /opt/ml (empty counts as not given; relative is resolved). */
  readonly root?: string;
  /** Stops the job: training ends after the epoch in progress, the best model so far is saved. */
  readonly signal?: AbortSignal;
  /** Scratch space for the prepared cache and a relabelled copy (default: a new folder in the OS temp dir, removed
   * at the end; $PNEUMOTYPE_SM_WORK overrides the parent; empty counts as not given, relative is resolved). */
  readonly workDir?: string;
  /**
   * After the signal, how long to wait for the epoch in progress (or the calibration of a run that finished its
   * epochs) to end before giving up on it and saving the best checkpoint so far (SageMaker kills the container 120 s
   * after SIGTERM). Default 90 000 ms.
   */
  readonly stopGraceMs?: number;
  readonly onLog?: (line: SageMakerLogLine) => void;
  readonly onProgress?: ProgressCallback;
  /**
   * Called when the grace period ran out, with a promise that settles once the abandoned work has ended and the
   * scratch folder is removed (then, not before). Without it the folder goes at once, as the CLI exits at once; a
   * caller that stays alive (a test, a notebook) passes it and waits.
   */
  readonly onAbandoned?: (settled: Promise<void>) => void;
}

/** Exit codes: 0 trained; 1 failed (reason in output/failure); 128 + signal number when stopped by a signal. */
export const EXIT_CODES = { ok: 0, failed: 1, SIGINT: 130, SIGTERM: 143 } as const;

/** Copies the model files into SageMaker's model folder: all of them (one epoch's) or none. */
async function publishModel(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  // After a grace period ran out, the abandoned epoch may still swap the best checkpoint while it is copied: the
  // files are copied beside their places until the card reads the same before and after (one epoch's files, three
  // tries at most), and only then moved in, so that model.tar.gz never packs half a model or a temporary file.
  const card = join(from, 'pneumotype.json');
  const tmp = (file: string): string => join(to, `.${file}.${process.pid}.tmp`);
  // What a killed earlier copy left (a container restarted, its model folder kept): not packed into model.tar.gz.
  for (const name of await readdir(to)) if (/^\..+\.\d+\.tmp$/.test(name)) await rm(join(to, name), { force: true });
  for (let attempt = 1; ; attempt++) {
    const before = await readFile(card, 'utf8').catch(() => undefined);
    // The thumbnails of the training images go along where the folder has them (train writes them into model/). The
    // card goes in last: a folder with a card holds the files it describes.
    const files = [
      ...MODEL_FILES.filter((f) => f !== 'pneumotype.json'),
      ...((await exists(join(from, TRAINING_THUMBNAILS_FILE))) ? [TRAINING_THUMBNAILS_FILE] : []),
      'pneumotype.json',
    ];
    let failure: unknown;
    for (const file of files) {
      failure = await copyFile(join(from, file), tmp(file)).then(() => undefined, (err: unknown) => err);
      if (failure !== undefined) break;
    }
    const after = await readFile(card, 'utf8').catch(() => undefined);
    // Whatever did not get into place goes: no temporary file is packed into model.tar.gz.
    const discard = async (): Promise<void> => {
      for (const file of files) await rm(tmp(file), { force: true });
    };
    if (failure === undefined && before !== undefined && before === after) {
      try {
        for (const file of files) await rename(tmp(file), join(to, file));
        return;
      } catch (err) {
        await discard();
        throw new CacheError(`the model ${quote(from)} could not be moved into ${quote(to)}: ${messageOf(err)}`, { path: to, cause: err });
      }
    }
    await discard();
    if (attempt >= 3) {
      throw new CacheError(
        `the model ${quote(from)} could not be copied to ${quote(to)}: ${failure !== undefined ? messageOf(failure) : 'it changed while it was copied, three times'}`,
        { path: from, ...(failure !== undefined ? { cause: failure } : {}) },
      );
    }
  }
}

/**
 * Every file that a labelled channel's manifest lists is there with its size. An upload stopped part way (its
 * `_pneumotype-upload.json` is written last) leaves a prefix whose manifest lists files it lacks; training on it would
 * quietly leave them out, so the job stops and says so.
 */
async function checkChannelComplete(channel: string): Promise<void> {
  const rows = await readManifest(channel);
  const bad = await filesNotAsListed(channel, rows);
  if (bad.length === 0) return;
  const marker = (await exists(join(channel, UPLOAD_MANIFEST_NAME))) ? '' : ` and it has no ${UPLOAD_MANIFEST_NAME}, which \`pneumotype upload\` writes last`;
  throw new IntegrityError(
    `the ${quote(TRAINING_CHANNEL)} channel ${quote(channel)} is incomplete: ${bad.length} of the ${rows.length} files its ${MANIFEST_FILE} lists are missing or of another size ` +
      `(${bad.slice(0, 3).join('; ')}${bad.length > 3 ? '; …' : ''})${marker}; an upload that stopped part way? Run \`pneumotype upload\` again, then start the job again`,
    { path: channel, expected: `${rows.length} files`, actual: `${rows.length - bad.length} whole` },
  );
}

/** What the training channel holds: a labelled folder, or something relabel takes (archive layout or a zip). */
async function trainingData(channel: string, workDir: string, channelsDir: string, log: (event: string, fields: Record<string, unknown>) => void, onProgress?: ProgressCallback): Promise<string> {
  if (!(await exists(channel))) {
    const found = (await readdir(channelsDir).catch(() => [] as string[])).sort();
    throw new ConfigError(
      `the ${quote(TRAINING_CHANNEL)} channel is missing: ${quote(channel)} does not exist (channels: ${found.length > 0 ? found.map((c) => quote(c)).join(', ') : 'none'}); ` +
        `give the training job a channel named ${quote(TRAINING_CHANNEL)} with the labelled folder (manifest.csv) or the dataset's NORMAL/PNEUMONIA folders`,
      { path: channel },
    );
  }
  // Training runs on one instance and needs every image: a channel sharded across instances gives each only part.
  const dataConfig = join(channelsDir, '..', 'config', 'inputdataconfig.json');
  const channels = await readFile(dataConfig, 'utf8')
    .then((text) => JSON.parse(text) as Record<string, { S3DistributionType?: unknown } | undefined>)
    .catch(() => undefined); // absent outside SageMaker, or unreadable: nothing to say about sharding
  const distribution = channels?.[TRAINING_CHANNEL]?.S3DistributionType;
  if (distribution === 'ShardedByS3Key') {
    throw new ConfigError(
      `the ${quote(TRAINING_CHANNEL)} channel is sharded across instances (S3DistributionType "ShardedByS3Key" in ${quote(dataConfig)}): ` +
        'pneumotype trains on one instance with every image; give the channel S3DataDistributionType "FullyReplicated" (the default)',
      { path: dataConfig },
    );
  }
  if (await exists(join(channel, MANIFEST_FILE))) {
    await checkChannelComplete(channel);
    log('data', { layout: 'labelled', path: channel });
    return channel;
  }
  const entries = await readdir(channel);
  const zips = entries.filter((e) => e.toLowerCase().endsWith('.zip'));
  const from = zips.length === 1 && entries.length === 1 ? join(channel, zips[0] as string) : channel;
  log('data', { layout: from === channel ? 'archive folders' : 'zip', path: from, relabelledInto: join(workDir, 'labeled') });
  await relabel({ from, out: join(workDir, 'labeled'), extractedDir: join(workDir, 'extracted'), ...(onProgress ? { onProgress } : {}) });
  return join(workDir, 'labeled');
}

/** A path setting: undefined when not given or empty (`VAR=` in a shell or a Dockerfile), else resolved to absolute. */
function pathSetting(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : resolve(value);
}

/**
 * The contract's root that {@link runSageMakerTraining} uses: `root`, else `env.PNEUMOTYPE_SM_ROOT`, else /opt/ml.
 * An empty value counts as not given (never the current folder); a relative one is resolved against it.
 *
 * @example sageMakerRoot(undefined, { PNEUMOTYPE_SM_ROOT: '' }) // '/opt/ml'
 */
export function sageMakerRoot(root?: string, env: NodeJS.ProcessEnv = process.env): string {
  return pathSetting(root) ?? pathSetting(env.PNEUMOTYPE_SM_ROOT) ?? SAGEMAKER_ROOT;
}

function signalName(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  return typeof reason === 'string' ? reason : 'an abort signal';
}

/**
 * Runs a SageMaker training job inside the container: reads `ROOT/input/config/hyperparameters.json` and the
 * `training` channel (`ROOT/input/data/training`: a labelled folder with manifest.csv, the dataset's NORMAL/PNEUMONIA
 * folders, or one zip of them), trains, and copies the best model (model.json, weights.bin, pneumotype.json) to
 * `ROOT/model`. The run folder (history.json, checkpoints) goes to `ROOT/output/data/run`, or to `ROOT/checkpoints`
 * when the job has a checkpoint configuration (then a restarted spot job resumes). On failure the reason goes to
 * `ROOT/output/failure` and it resolves to 1. When `signal` aborts (SIGTERM), training stops after the epoch in
 * progress, the best model so far is saved, `ROOT/output/failure` says "stopped by SIGTERM ..." and it resolves to
 * 128 + the signal's number: SageMaker marks stopped jobs Stopped whatever the code, and a non-zero code keeps a
 * cut-short run from passing for a finished one. A run that had trained all its epochs is still calibrated within the
 * grace period (`stopGraceMs`) and resolves to 0; when the grace period runs out first, the uncalibrated model is
 * saved and the failure file says calibration was skipped. With resume false, the run folder's earlier outputs are
 * removed first: a stop before this job's first epoch ends saves no model. Never throws.
 *
 * @example process.exitCode = await runSageMakerTraining({ root: '/opt/ml' })
 */
export async function runSageMakerTraining(options: SageMakerTrainingOptions = {}): Promise<number> {
  const paths = sageMakerPaths(sageMakerRoot(options.root));
  const log = (level: SageMakerLogLine['level'], event: string, fields: Record<string, unknown> = {}): void => {
    try {
      options.onLog?.({ time: new Date().toISOString(), level, event, ...fields });
    } catch {
      // logging must not fail the job
    }
  };
  const fail = async (reason: string, code: number): Promise<number> => {
    log(code === EXIT_CODES.failed ? 'error' : 'warn', code === EXIT_CODES.failed ? 'failed' : 'stopped', { reason, exitCode: code });
    try {
      await writeFileAtomic(paths.failure, `${reason}\n`);
    } catch (err) {
      log('error', 'failure_not_written', { path: paths.failure, message: messageOf(err) });
    }
    return code;
  };
  // Checked before anything runs: a grace period that a timer cannot hold would end at once.
  const grace = options.stopGraceMs;
  if (grace !== undefined && !(Number.isFinite(grace) && grace >= 0 && grace <= MAX_TIMER_MS)) {
    return await fail(`stopGraceMs ${quote(grace)} is not valid: expected a number of milliseconds from 0 to ${MAX_TIMER_MS}`, EXIT_CODES.failed);
  }
  const signal = options.signal;
  const stopCode = (): number => {
    const name = signalName(signal);
    return name === 'SIGTERM' ? EXIT_CODES.SIGTERM : name === 'SIGINT' ? EXIT_CODES.SIGINT : EXIT_CODES.failed;
  };

  let workDir: string | undefined;
  let ownWorkDir = false;
  let runDir = join(paths.outputData, 'run');
  let result: TrainResult | undefined;
  let plannedEpochs = 0;
  let resumed = false;
  let calibrationWanted = false;
  /** What the work is doing: preparing and training, calibrating the model of a run that went through, or done. */
  let phase = 'train' as 'train' | 'calibrate' | 'done'; // (`as`: set in the work, where TypeScript's narrowing does not look)
  /** Set when the job stops waiting for the work (the grace period ran out): the work must not go on to calibrate. */
  let abandoned = false;
  /** The abandoned work, settled (its error is the job's failure already): the scratch folder goes after it. */
  let leftRunning: Promise<void> | undefined;
  const epochsDone: number[] = [];
  // A run that trained all its epochs, or stopped early: nothing of its training was cut short.
  const finished = (r: TrainResult): boolean => r.stoppedEarly || r.history.length >= plannedEpochs;
  try {
    await rm(paths.failure, { force: true }); // a reason left by an earlier local run is not this run's
    if (signal?.aborted) return await fail(`stopped by ${signalName(signal)} before training started: no model was saved`, stopCode());

    const work = async (): Promise<void> => {
      // Hyperparameters: a missing file means every default (SageMaker always writes one, maybe `{}`).
      let raw: unknown = {};
      if (await exists(paths.hyperparameters)) {
        const text = await readFile(paths.hyperparameters, 'utf8');
        try {
          raw = JSON.parse(text);
        } catch (err) {
          throw new ConfigError(`${quote(paths.hyperparameters)} is not valid JSON (${messageOf(err)})`, { path: paths.hyperparameters, cause: err });
        }
      }
      const parsed = parseHyperparameters(raw, paths.hyperparameters, process.env.PNEUMOTYPE_PRESET);
      const hasCheckpoints = await exists(paths.checkpoints);
      const resume = parsed.resume && hasCheckpoints;
      if (hasCheckpoints) runDir = join(paths.checkpoints, 'run');
      // No preset named: as `train`; a run resumed from the checkpoints keeps the preset it was started with.
      const plan: TrainingPlan = { ...parsed, preset: await presetForRun(parsed.preset, { out: runDir, overrides: parsed.config, resume }) };
      plannedEpochs = resolveConfig(plan.preset, plan.config).epochs;
      calibrationWanted = plan.calibrate;
      resumed = resume;
      log('info', 'start', { root: paths.root, hyperparameters: raw, preset: plan.preset ?? null, config: plan.config, augment: plan.augment, runDir, resume });

      if (options.workDir) {
        workDir = resolve(options.workDir);
        await mkdir(workDir, { recursive: true });
      } else {
        const fromEnv = pathSetting(process.env.PNEUMOTYPE_SM_WORK);
        const parent = fromEnv ?? tmpdir();
        try {
          await mkdir(parent, { recursive: true });
          workDir = await mkdtemp(join(parent, 'pneumotype-sagemaker-'));
        } catch (err) {
          if (fromEnv === undefined) throw err;
          throw new ConfigError(`PNEUMOTYPE_SM_WORK=${quote(process.env.PNEUMOTYPE_SM_WORK)}: no scratch folder can be made in ${quote(parent)} (${messageOf(err)})`, { path: parent, cause: err });
        }
        ownWorkDir = true;
      }
      const data = await trainingData(join(paths.channels, TRAINING_CHANNEL), workDir, paths.channels, (event, fields) => log('info', event, fields), options.onProgress);
      if (signal?.aborted) return;
      const augment: AugmentOptions | false = augmentFromName(plan.augment);
      result = await train({
        data,
        out: runDir,
        lock: false, // one training per container; /opt/ml/checkpoints, where the run may be, is copied to S3 and back
        ...(plan.preset ? { preset: plan.preset } : {}),
        config: plan.config,
        cacheDir: join(workDir, 'cache'),
        resume,
        // resume false: a run restored into the checkpoint folder is started over, as asked; train removes its
        // outputs first, so that a stop before the first epoch ends cannot hand on the earlier run's model.
        replace: !resume,
        augment,
        ...(signal ? { signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        onEpoch: (record) => {
          epochsDone.push(record.epoch);
          log('info', 'epoch', { ...record });
        },
      });
      if (abandoned) return;
      // A run cut short by a stop signal is not calibrated (the grace period is for saving what exists), but one that
      // went through is, also after the signal: it takes seconds, and the grace period bounds it (when it runs out,
      // the model goes uncalibrated and the failure file says so).
      if (plan.calibrate && !result.card.calibration && (!signal?.aborted || finished(result))) {
        phase = 'calibrate';
        const c = await calibrateModel({ model: result.modelDir, data, lock: false, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
        log('info', 'calibrated', { temperature: c.temperature, images: c.images, before: c.before, after: c.after, crossFitted: c.crossFitted });
      }
      phase = 'done';
    };

    // After a stop signal the work in progress (an epoch, or the calibration of a run that went through) gets
    // `stopGraceMs` to end; then the best checkpoint so far is used.
    const graceMs = options.stopGraceMs ?? 90_000;
    let onAbort: (() => void) | undefined;
    let graceTimer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      onAbort = () => {
        log('warn', 'stopping', { signal: signalName(signal), graceMs });
        graceTimer = setTimeout(() => resolve('deadline'), graceMs);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    let outcome: 'done' | 'deadline' | 'error';
    let workError = '';
    const running = work();
    try {
      outcome = await Promise.race([running.then(() => 'done' as const), deadline]);
    } catch (err) {
      if (!signal?.aborted) throw err;
      // train refuses to finish without a best checkpoint: a stop before the first epoch ended lands here.
      outcome = 'error';
      workError = messageOf(err);
      log('warn', 'stopped_with_error', { message: workError });
    } finally {
      clearTimeout(graceTimer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
    if (outcome !== 'done') abandoned = true;
    if (outcome === 'deadline') leftRunning = running.then(() => {}, () => {});

    const name = signalName(signal);
    const planned = plannedEpochs > 0 ? ` of ${plannedEpochs}` : '';
    if (outcome === 'done' && result) {
      const r = result;
      // A signal that came after the last epoch (or after early stopping) cut nothing short (calibration, if asked, ran).
      const complete = !signal?.aborted || finished(r);
      // A run started over (resume false) that trained no epoch in this job has no model of its own.
      if (!complete && !resumed && epochsDone.length === 0) return await fail(`stopped by ${name} before the first epoch ended: no model was saved`, stopCode());
      await publishModel(r.modelDir, paths.model);
      log('info', 'model_saved', { path: paths.model, bestEpoch: r.bestEpoch, validation: r.card.validation });
      if (complete) return EXIT_CODES.ok;
      // Stopped: keep what exists.
      return await fail(`stopped by ${name} after epoch ${r.history.length}${planned}: the best model so far (epoch ${r.bestEpoch}) is in ${quote(paths.model)}`, stopCode());
    }
    const best = join(runDir, 'checkpoints', 'best');
    const last = epochsDone.at(-1);
    const late = `did not end within ${Math.round(graceMs / 1000)} s of the signal`;
    // Every epoch had ended: the signal cut short the saving of the run's model, or its calibration.
    const atEnd = phase === 'calibrate' || (last !== undefined && last >= plannedEpochs);
    // A resumed run's best checkpoint counts too, when this job was stopped before its own first epoch ended.
    if ((last !== undefined || phase === 'calibrate' || resumed) && (await exists(join(best, 'pneumotype.json')))) {
      // The best checkpoint, not the run's model/: an abandoned calibration may be swapping that folder. A copy that
      // fails still ends the job as stopped (its exit code), saying why no model was saved.
      try {
        await publishModel(best, paths.model);
      } catch (err) {
        return await fail(`stopped by ${name}; the best checkpoint so far could not be saved: ${messageOf(err)}`, stopCode());
      }
      const cardPath = join(paths.model, 'pneumotype.json');
      const card = await readFile(cardPath, 'utf8').then((t) => JSON.parse(t) as { training?: { epoch?: number }; calibration?: unknown }).catch((err: unknown) => {
        throw new CacheError(`the model card ${quote(cardPath)} cannot be read (${messageOf(err)})`, { path: cardPath, cause: err });
      });
      const bestEpoch = card.training?.epoch ?? '?';
      if (atEnd) {
        const epochs = phase === 'calibrate' && result ? result.history.length : last;
        const doing = phase === 'calibrate' ? 'while calibrating its model' : 'while saving its model';
        const why = outcome === 'deadline' ? `which ${late}` : `which failed (${workError})`;
        const skipped = calibrationWanted && !card.calibration ? 'calibration was skipped and the uncalibrated' : 'the';
        return await fail(`stopped by ${name} after the last epoch (${epochs}${planned}), ${doing}, ${why}: ${skipped} best model (epoch ${bestEpoch}) is in ${quote(paths.model)}`, stopCode());
      }
      const why = outcome === 'deadline' ? `, which ${late}` : '';
      const during = last === undefined ? `before this job's first epoch ended${outcome === 'deadline' ? ` (the work in progress ${late})` : ''}: the resumed run's` : `during epoch ${last + 1}${planned}${why}: the`;
      return await fail(`stopped by ${name} ${during} best model so far (epoch ${bestEpoch}) is in ${quote(paths.model)}`, stopCode());
    }
    const when = outcome === 'deadline' ? `before the first epoch ended (the work in progress ${late})` : 'before the first epoch ended';
    return await fail(`stopped by ${name} ${when}: no model was saved`, stopCode());
  } catch (err) {
    return await fail(messageOf(err), EXIT_CODES.failed);
  } finally {
    const removeWorkDir = async (): Promise<void> => {
      if (ownWorkDir && workDir) await rm(workDir, { recursive: true, force: true }).catch(() => {});
    };
    // Work abandoned after the grace period may still write into the scratch folder: a caller that waits for it
    // (onAbandoned) has the folder removed once it has ended; the CLI, which exits at once, has it removed now.
    if (leftRunning && options.onAbandoned) options.onAbandoned(leftRunning.then(removeWorkDir));
    else await removeWorkDir();
  }
}

/** Options of {@link runSageMakerTrainingUntilSignal}. */
export interface SageMakerTrainingUntilSignalOptions extends Omit<SageMakerTrainingOptions, 'signal'> {
  /** Signals that stop the job gracefully. Default SIGTERM (what SageMaker sends) and SIGINT. */
  readonly signals?: readonly NodeJS.Signals[];
}

/**
 * {@link runSageMakerTraining} with SIGTERM and SIGINT wired to a graceful stop: what `pneumotype sagemaker train`
 * (the container's `train` command) runs. The CLI should `process.exit()` with the result: after a stop that outlived
 * the grace period, the abandoned epoch is still running and would keep the process alive.
 *
 * @example process.exit(await runSageMakerTrainingUntilSignal({ onLog: (l) => console.log(JSON.stringify(l)) }))
 */
export async function runSageMakerTrainingUntilSignal(options: SageMakerTrainingUntilSignalOptions = {}): Promise<number> {
  const controller = new AbortController();
  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const handler = (signal: NodeJS.Signals): void => {
    if (!controller.signal.aborted) controller.abort(signal);
  };
  for (const s of signals) process.on(s, handler);
  try {
    return await runSageMakerTraining({ ...options, signal: controller.signal });
  } finally {
    for (const s of signals) process.off(s, handler);
  }
}

