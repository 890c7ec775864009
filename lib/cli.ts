// The `pneumotype` command line: parses arguments, renders progress in the terminal, prints results.
import { realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { augmentFromName } from './augment.js';
import { DEFAULTS, KNOWN_PRESETS, PRESETS, presetAlias, resolveConfig, type Config, type PresetName } from './config.js';
import { calibrateModel } from './calibrate.js';
import { evaluateModel, evaluationSummary, expandImagePaths, listFailed, loadModel, predict } from './evaluate.js';
import { hasCheckpoint, train, type EpochRecord } from './train.js';
import { checkUploadOptions, upload } from './upload.js';
import { HYPERPARAMETERS, runSageMakerTrainingUntilSignal } from './sagemaker.js';
import { serveUntilSignal } from './serve.js';
import { writeRunReport } from './report.js';
import { diagnose, pneumotypeVersion } from './doctor.js';
import { ArchiveError, ConfigError, MAX_TIMER_MS, PneumotypeError, UsageError, messageOf, quote } from './errors.js';
import { fetchDataset, resolveSource, shownUrl } from './fetch.js';
import type { FailedImage } from './images.js';
import { presetForRun, runPipeline, prepareStep } from './pipeline.js';
import { relabel } from './relabel.js';
import { extractRemoteZip } from './remote-zip.js';
import { endProgressLine, formatBytes, progressRenderer } from './terminal.js';
import { datasetEntryFilter } from './labels.js';
import { extractZip } from './zip.js';
import { MODEL_CATALOG } from './models.js';
import { MAX_BOOTSTRAP_RESAMPLES as MAX_BOOTSTRAP } from './metrics.js';

const HELP = `pneumotype: normal, bacterial and viral pneumonia on pediatric chest X-rays

Usage: pneumotype <command> [options]

Commands
  run       fetch + relabel + prepare + train + calibrate + evaluate + report; the steps up to calibrate are skipped
            when their verified output exists (evaluate and report, seconds, run again)
            [--source v2|v3|URL|PATH] [--preset smoke|cpu|gpu] [--data-dir data] [--out runs/PRESET]
            [--augment none|basic|traces (default traces)] [--no-train] [--no-calibrate] [--eager | --graph]
            [--remote | --download-whole]  (v3 defaults to --remote: only its chest X-ray entries are read)
            [--groups CSV:COLUMN]  (evaluate per group too, in evaluation.json and the report, e.g. the copy pipeline:
            ../shared/data/chest_xray_train_224.csv:derived_from)
  fetch     download (resumable) or verify a dataset archive
            --source v2|v3|URL|PATH (default $PNEUMOTYPE_SOURCE or v2) [--out data/downloads] [--sha256 HEX]
            [--max-bytes N (default 20 GiB: a longer download is refused)]
  extract   extract an archive's chest X-ray entries safely (a URL or v2/v3: only those entries are transferred)
            --archive ZIP|URL|v2|v3 [--out data/extracted] [--all]
  relabel   NORMAL/PNEUMONIA -> normal/bacteria/virus, manifest.csv, summary.json, leakage audit
            --from FOLDER|ZIP [--out data/labeled] [--extracted data/extracted] [--allow-unknown]
  prepare   decode, resize and cache the labelled images as uint8, carve the validation split
            [--data data/labeled] [--cache data/cache] [--preset P] [--image-size N] [--val-fraction F] [--seed N]
            (--preset: default $PNEUMOTYPE_PRESET, else cpu: the gpu preset prepares the same cache)
  train     train a classifier on the prepared cache (prepared first when missing)
            [--data data/labeled] --out runs/NAME [--cache data/cache] [--preset tiny|smoke|cpu|gpu] [--model resnet|mobile|tiny]
            (--preset: default $PNEUMOTYPE_PRESET, else gpu with tfjs-node-gpu, else cpu; --resume: the run's own)
            [--epochs N] [--image-size N] [--batch-size N] [--seed N] [--augment none|basic|traces (default traces)] [--resume]
            [--init-from DIR|URL [--freeze | --unfreeze] [--init-range=LO,HI] [--feature-layer NAME]]  (transfer
            learning from a tfjs layers model, new 3-class head; --freeze trains the head only, --unfreeze also the
            layers the model marks frozen; --init-range: the pixel range it expects, default 0,1; Keras's MobileNetV2
            and InceptionV3: --init-range=-1,1; --feature-layer: the layer the head is put on, default the one
            before the model's own global pooling)
            [--eager | --graph]  (op by op, or each step as one TensorFlow graph on tfjs-node: the default of the
            cpu and gpu presets, about 2x faster; --eager is the smoke preset's default)
            [--mixup ALPHA]  (blend image pairs and their labels, e.g. 0.2; default 0: off)
            [--depth BLOCKS]  (resnet: basic blocks per stage; default 2,2,2,2, ResNet-18-like; 3,4,6,3: ResNet-34-like)
            [--antialias]  (resnet: blur before each later subsampling, against high-frequency copy traces)
            [--standardize]  (standardise each image over its own pixels first, against intensity traces)
            [--optimizer adam|sgd] [--learning-rate PEAK] [--weight-decay L2]  (sgd: Nesterov momentum 0.9;
            defaults of the cpu preset adam, 1e-3, 1e-4; of the gpu preset and the shipped model sgd, 0.1, 5e-4)
            [--patience N]  (early stopping: epochs without a better validation macro-F1; default 8, gpu 60; SGD gains late
            in the schedule: the shipped model ran all 60 epochs)
            [--balance-groups CSV:COLUMN]  (weigh images so the classes balance within each group, e.g. the copy
            pipeline: ../shared/data/chest_xray_train_224.csv:derived_from)
  evaluate  metrics with 95 % patient-bootstrap intervals, decoding images afresh (prints one JSON object)
            [--model DIR] [--data data/labeled] [--split test|val (default test)] [--out eval.json] [--predictions FILE.csv]
            (--data: a labelled folder, test/{normal,bacteria,virus}/, an extracted archive or its zip (extracted
            to --extracted, default data/extracted), or the test split's own NORMAL/ and PNEUMONIA/ folders)
            [--groups CSV:COLUMN]  (metrics per group, e.g. ../shared/data/chest_xray_train_224.csv:derived_from)
            [--bootstrap N]  (resamples for the intervals, default 1000; 0: none)
  calibrate fit a temperature on the validation patients and fold it into the model (predictions unchanged,
            probabilities honest): --model DIR [--data data/labeled] [--split val] [--out DIR (default: in place)]
  predict   one JSON line per image: file, label, probabilities   [--model DIR] IMAGE|FOLDER...  (a folder: every
            .jpeg/.jpg/.png/.webp/.tif/.tiff under it)
  report    one self-contained HTML report of a training run or a model folder (works offline: plotly is inlined)
            --run runs/NAME|models/default [--eval evaluation.json] [--predictions predictions.csv] [--out report.html]
            [--data DIR]  (a labelled folder, for the data section (default: the one the model was trained on) and the
            gallery of mistakes (default: where the evaluation read its images)); a model folder's report goes to
            NAME-report.html in the working directory
  upload    the labelled dataset to S3 (resumable: only missing or changed files; a manifest object written last)
            --bucket NAME [--prefix PATH] [--region REGION] [--endpoint URL] [--data data/labeled]
            [--concurrency N] [--part-size MIB]   (credentials: the AWS SDK's default chain)
  serve     the SageMaker hosting contract: GET /ping, POST /invocations (image/jpeg, image/png, application/x-image)
            [--model DIR] [--port 8080] [--host 0.0.0.0] [--max-batch 16] [--max-in-flight 32] [--max-decoding 16] [--batch-window-ms 5] [--max-body-bytes N]
  sagemaker train   the SageMaker training contract: /opt/ml/input/config/hyperparameters.json and
            /opt/ml/input/data/training -> /opt/ml/model (failure reason in /opt/ml/output/failure)  [--root /opt/ml]
  doctor    which TensorFlow.js backend is used and why, versions, GPU
  help      this text; help COMMAND (or COMMAND --help): that command's usage; --version: pneumotype's version

Options for every command: --json (print the result as JSON), --quiet (no progress bars; step and epoch lines stay)
Environment: PNEUMOTYPE_SOURCE (default source), PNEUMOTYPE_BACKEND (auto|gpu|cpu|js), PNEUMOTYPE_PRESET,
PNEUMOTYPE_MODEL_DIR (serve's model), PNEUMOTYPE_SM_ROOT and PNEUMOTYPE_SM_WORK (sagemaker train),
HTTPS_PROXY/HTTP_PROXY/NO_PROXY.
`;

/** Images predict decodes and scores at once before printing their lines. */
const PREDICT_CHUNK = 64;

const OPTIONS = {
  source: { type: 'string' },
  out: { type: 'string' },
  sha256: { type: 'string' },
  archive: { type: 'string' },
  all: { type: 'boolean' },
  remote: { type: 'boolean' },
  'download-whole': { type: 'boolean' },
  'no-train': { type: 'boolean' },
  'no-calibrate': { type: 'boolean' },
  from: { type: 'string' },
  extracted: { type: 'string' },
  'allow-unknown': { type: 'boolean' },
  data: { type: 'string' },
  'data-dir': { type: 'string' },
  cache: { type: 'string' },
  preset: { type: 'string' },
  'image-size': { type: 'string' },
  'val-fraction': { type: 'string' },
  seed: { type: 'string' },
  model: { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  augment: { type: 'string' },
  resume: { type: 'boolean' },
  'init-from': { type: 'string' },
  freeze: { type: 'boolean' },
  'init-range': { type: 'string' },
  'feature-layer': { type: 'string' },
  unfreeze: { type: 'boolean' },
  split: { type: 'string' },
  predictions: { type: 'string' },
  bootstrap: { type: 'string' },
  groups: { type: 'string' },
  'balance-groups': { type: 'string' },
  graph: { type: 'boolean' },
  eager: { type: 'boolean' },
  mixup: { type: 'string' },
  antialias: { type: 'boolean' },
  depth: { type: 'string' },
  standardize: { type: 'boolean' },
  optimizer: { type: 'string' },
  'learning-rate': { type: 'string' },
  'weight-decay': { type: 'string' },
  patience: { type: 'string' },
  bucket: { type: 'string' },
  run: { type: 'string' },
  eval: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  'max-batch': { type: 'string' },
  'max-in-flight': { type: 'string' },
  'max-decoding': { type: 'string' },
  'batch-window-ms': { type: 'string' },
  'max-body-bytes': { type: 'string' },
  'max-bytes': { type: 'string' },
  root: { type: 'string' },
  prefix: { type: 'string' },
  region: { type: 'string' },
  endpoint: { type: 'string' },
  concurrency: { type: 'string' },
  'part-size': { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/**
 * What each command takes besides --json, --quiet and --help: its options, and how many arguments may follow its
 * name (`help evaluate`, `sagemaker train`, predict's images). Anything else is a usage error (status 2), so that an
 * option meant for another command (`run --epochs 5`) or a path given without its flag (`evaluate data/labeled`) is
 * never silently ignored.
 */
export const COMMANDS: { readonly [command: string]: { readonly options: readonly (keyof typeof OPTIONS)[]; readonly args?: number } } = {
  help: { options: [], args: 2 },
  doctor: { options: [] },
  fetch: { options: ['source', 'out', 'sha256', 'max-bytes'] },
  extract: { options: ['archive', 'out', 'all'] },
  relabel: { options: ['from', 'out', 'extracted', 'allow-unknown'] },
  prepare: { options: ['data', 'cache', 'preset', 'image-size', 'val-fraction', 'seed'] },
  train: {
    options: ['data', 'out', 'preset', 'cache', 'model', 'epochs', 'image-size', 'batch-size', 'seed', 'augment', 'resume',
      'init-from', 'freeze', 'unfreeze', 'init-range', 'feature-layer', 'eager', 'graph', 'mixup', 'depth', 'antialias', 'standardize',
      'optimizer', 'learning-rate', 'weight-decay', 'patience', 'balance-groups'],
  },
  evaluate: { options: ['model', 'data', 'split', 'out', 'predictions', 'groups', 'extracted', 'bootstrap'] },
  calibrate: { options: ['model', 'data', 'split', 'out'] },
  predict: { options: ['model'], args: Number.POSITIVE_INFINITY },
  report: { options: ['run', 'eval', 'predictions', 'data', 'out'] },
  upload: { options: ['bucket', 'prefix', 'region', 'endpoint', 'data', 'concurrency', 'part-size'] },
  serve: { options: ['model', 'port', 'host', 'max-batch', 'max-in-flight', 'max-decoding', 'batch-window-ms', 'max-body-bytes'] },
  sagemaker: { options: ['root'], args: 1 },
  run: { options: ['source', 'preset', 'data-dir', 'out', 'augment', 'no-train', 'no-calibrate', 'eager', 'graph', 'remote', 'download-whole', 'groups'] },
};
const EVERY_COMMAND = ['json', 'quiet', 'help'] as const;

/** A command's own options as written on a command line ("--from, --out"); '' when it has none. */
function flagsOf(command: string): string {
  return (Object.hasOwn(COMMANDS, command) ? COMMANDS[command]?.options ?? [] : []).map((o) => `--${o}`).join(', ');
}

/** The usage error for an option or argument `command` does not take; undefined when all are its own. */
export function usageError(command: string, values: Readonly<Record<string, unknown>>, positionals: readonly string[]): string | undefined {
  const spec = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (spec === undefined) return undefined; // an unknown command has its own message
  const own = new Set<string>([...spec.options, ...EVERY_COMMAND]);
  const flags = flagsOf(command);
  const foreign = Object.keys(values).filter((name) => !own.has(name));
  if (foreign.length > 0) {
    const takes = spec.options.length > 0 ? `it takes ${flags}` : 'it takes none';
    const list = foreign.map((o) => `--${o}`).join(', ');
    return `${list} ${foreign.length === 1 ? 'is not an option' : 'are not options'} of ${command}; ${takes} (and --json, --quiet)`;
  }
  const extra = positionals.slice(1 + (spec.args ?? 0));
  if (extra.length > 0) {
    const takes = spec.args ? `at most ${spec.args} argument${spec.args === 1 ? '' : 's'}` : 'no arguments';
    const options = spec.options.length > 0 ? ` (${flags}): a value needs its option` : '';
    return `unexpected argument ${quote(extra[0])}: ${command} takes ${takes} besides its options${options}`;
  }
  return undefined;
}

/**
 * Node's own words for a command line it cannot parse, said in ours: an unknown option with the nearest ones of the
 * command, an option without its value at the end, or a value starting with "-" that needs "=". Undefined for other
 * failures.
 */
export function parseFailure(argv: readonly string[], err: unknown): string | undefined {
  const code = (err as { code?: unknown }).code;
  const message = (err as Error).message ?? '';
  const command = commandOf(argv);
  const who = command === undefined ? 'pneumotype' : `pneumotype ${command}`;
  const usage = `Run \`pneumotype help${command === undefined ? '' : ` ${command}`}\` for usage.\n`;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const found = /'(--?)([^'=]+)/.exec(message);
    if (found === null) return undefined;
    const [, dashes = '--', name = ''] = found;
    const candidates = command === undefined ? Object.keys(OPTIONS) : [...(COMMANDS[command]?.options ?? []), ...EVERY_COMMAND];
    // Long options only: a short one (-m) is one letter, close to anything.
    const guess = dashes === '--' ? didYouMean(name, candidates, (c) => `--${c}`) : '';
    const takes = command === undefined ? '' : `; ${command} takes ${flagsOf(command) || 'no options'} (and --json, --quiet)`;
    return `${who}: unknown option ${dashes}${name}${guess}${takes}\n${usage}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && /argument missing/.test(message)) {
    // The option ended the line (`predict --model`): Node says "Option '-m, --model <value>' argument missing".
    const name = /--([^' <]+) <value>/.exec(message)?.[1];
    if (name === undefined) return undefined;
    return `${who}: --${name} needs a value, and the command line ends after it\n${usage}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && /argument is ambiguous/.test(message)) {
    const name = /'--([^']+)'/.exec(message)?.[1] ?? 'OPTION';
    return `${who}: the value of --${name} starts with "-", which reads as another option: write it with "=", as --${name}=VALUE (e.g. --init-range=-1,1)\n${usage}`;
  }
  return undefined;
}

/** The command of a command line that could not be parsed: its first word that is no option and no option's value. */
function commandOf(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') return undefined;
    if (a.startsWith('-')) {
      const name = a.replace(/^--?/, '');
      if (!name.includes('=') && (OPTIONS as Record<string, { type: string }>)[name]?.type === 'string') i++; // its value
      continue;
    }
    return Object.hasOwn(COMMANDS, a) ? a : undefined;
  }
  return undefined;
}

/**
 * ` (did you mean X?)` for the candidates (three at most) that start with what was typed or are within 2 edits of it;
 * '' when none is.
 *
 * @example didYouMean('trian', ['train', 'predict']) // ' (did you mean "train"?)'
 */
function didYouMean(typed: string, candidates: readonly string[], show: (c: string) => string = (c) => quote(c)): string {
  const near = typed === '' ? [] : candidates.filter((c) => c !== typed && (c.startsWith(typed) || editDistance(c, typed) <= 2)).slice(0, 3);
  return near.length > 0 ? ` (did you mean ${near.map(show).join(' or ')}?)` : '';
}

/** Levenshtein distance (for "did you mean"). */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min((row[j] ?? 0) + 1, (next[j - 1] ?? 0) + 1, (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/** A decimal number as a person writes one: `5`, ` 5`, `-0.5`, `.5`, `1e3`. */
const DECIMAL = /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function number(values: Values, name: 'mixup' | 'learning-rate' | 'weight-decay' | 'patience' | 'image-size' | 'val-fraction' | 'seed' | 'epochs' | 'batch-size' | 'bootstrap' | 'concurrency' | 'part-size' | 'port' | 'max-batch' | 'max-in-flight' | 'max-decoding' | 'batch-window-ms' | 'max-body-bytes' | 'max-bytes', check?: { ok: (n: number) => boolean; expected: string }): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  // Decimal only: Number() also reads 0x1F90, 0b11 and 0o17, which nobody means by a port or a count.
  if (!DECIMAL.test(raw) || !Number.isFinite(n)) throw new UsageError(`--${name} ${quote(raw)} is not a number`);
  if (check && !check.ok(n)) throw new UsageError(`--${name} ${quote(raw)} is not ${check.expected}`);
  return n;
}

/** The checks of whole-number options: at least `min` (and at most `max`). */
function whole(min: number, max?: number): { ok: (n: number) => boolean; expected: string } {
  return {
    ok: (n) => Number.isInteger(n) && n >= min && (max === undefined || n <= max),
    expected: max === undefined ? `a whole number of at least ${min}` : `a whole number from ${min} to ${max}`,
  };
}

function preset(values: Values): PresetName | undefined {
  const p = presetAlias(values.preset ?? process.env.PNEUMOTYPE_PRESET);
  if (p === undefined) return undefined;
  if (!Object.hasOwn(PRESETS, p)) {
    // Named where it came from: a variable set in the environment is no option typed on this command line.
    const guess = didYouMean(p, [...Object.keys(PRESETS), 'tiny']);
    if (values.preset === undefined) throw new ConfigError(`PNEUMOTYPE_PRESET=${quote(p)} is not one of ${KNOWN_PRESETS}${guess}: set it to one of them, or unset it`);
    throw new UsageError(`preset ${quote(p)} is not one of ${KNOWN_PRESETS}${guess}`);
  }
  return p as PresetName;
}


/** `--init-range LO,HI` as a pair with LO < HI. */
function parseRange(value: string): [number, number] {
  const parts = value.split(',').map((p) => (p.trim() === '' ? Number.NaN : Number(p)));
  const [low, high] = parts;
  if (parts.length !== 2 || low === undefined || high === undefined || !Number.isFinite(low) || !Number.isFinite(high) || low >= high) {
    throw new UsageError(`--init-range ${quote(value)} is not LO,HI with LO < HI (for example -1,1)`);
  }
  return [low, high];
}

function parseGroups(value: string, flag = 'groups'): { csv: string; column: string } {
  const at = value.lastIndexOf(':');
  if (at <= 0 || at === value.length - 1) throw new UsageError(`--${flag} ${quote(value)} is not CSV:COLUMN`);
  return { csv: value.slice(0, at), column: value.slice(at + 1) };
}

/** `--NAME`'s value when it is one of `options` (undefined when not given); a UsageError quoting it otherwise. */
function oneOf<T extends string>(values: Values, name: 'optimizer' | 'split', options: readonly T[]): T | undefined {
  const raw = values[name];
  if (raw === undefined || (options as readonly string[]).includes(raw)) return raw as T | undefined;
  throw new UsageError(`--${name} ${quote(raw)} is not one of ${options.map((o) => quote(o)).join(', ')}${didYouMean(raw, options)}`);
}

/** Images a command could not read, listed (five, then a count) even with --quiet: they are missing from `what`. */
function warnLeftOut(command: string, failed: readonly FailedImage[], what: string): void {
  if (failed.length === 0) return;
  process.stderr.write(`pneumotype ${command}: warning: ${failed.length} image(s) could not be used and are left out of ${what}:\n${listFailed(failed, ' (see "failed")')}\n`);
}

/** A usage error when more than one of `names` is given: they contradict each other. */
function exclusive(values: Values, ...names: (keyof Values)[]): void {
  const given = names.filter((n) => values[n] !== undefined && values[n] !== false);
  if (given.length > 1) throw new UsageError(`${given.map((n) => `--${String(n)}`).join(' and ')} cannot be given together`);
}

/** train's network options, checked against each other before any work: each wrong one named by its flag. */
function checkNetworkOptions(values: Values, model: string): void {
  const fromScratch = (['model', 'depth', 'antialias', 'standardize'] as const).filter((n) => values[n] !== undefined && values[n] !== false);
  if (values['init-from'] !== undefined && fromScratch.length > 0) {
    throw new UsageError(`${fromScratch.map((n) => `--${n}`).join(', ')} shape${fromScratch.length === 1 ? 's' : ''} a network built from scratch; --init-from brings its own: leave ${fromScratch.length === 1 ? 'it' : 'them'} out`);
  }
  for (const n of ['freeze', 'unfreeze', 'init-range', 'feature-layer'] as const) {
    if (values[n] !== undefined && values[n] !== false && values['init-from'] === undefined) throw new UsageError(`--${n} needs a pretrained model: give --init-from DIR|URL too`);
  }
  exclusive(values, 'freeze', 'unfreeze');
  if (!Object.hasOwn(MODEL_CATALOG, model)) throw new UsageError(`--model ${quote(model)} is not one of ${Object.keys(MODEL_CATALOG).map((m) => quote(m)).join(', ')}`);
  if (values.depth !== undefined) {
    if (!/^\s*[1-9]\d*\s*(,\s*[1-9]\d*\s*)*$/.test(values.depth)) throw new UsageError(`--depth ${quote(values.depth)} is not blocks per stage: whole numbers of at least 1 separated by commas, e.g. "3,4,6,3"`);
    if (model !== 'resnet') throw new UsageError(`--depth is for the resnet model only (the model is ${quote(model)})`);
  }
  if (values.antialias && model !== 'resnet') throw new UsageError(`--antialias is for the resnet model only (the model is ${quote(model)})`);
}

/** An ArchiveError when extract selected no entry: an archive of something else, where exit 0 would hide it. */
function noChestEntries(archive: string, r: { entries: readonly string[] }): void {
  if (r.entries.length > 0) return;
  throw new ArchiveError(
    `Archive ${quote(archive)} holds no chest X-ray entries (a chest_xray/ folder as in ChestXRay2017.zip and ZhangLabData.zip, or {train,test}/{NORMAL,PNEUMONIA}/ folders); ` +
      '--all extracts every entry',
    { path: archive },
  );
}

/** `--augment`'s augmentation (default traces); a bad name is a usage error. */
function augmentOption(values: Values): ReturnType<typeof augmentFromName> {
  try {
    return augmentFromName(values.augment ?? 'traces');
  } catch (err) {
    throw new UsageError(messageOf(err));
  }
}

function printEpoch(e: EpochRecord): void {
  endProgressLine();
  process.stderr.write(
    `epoch ${e.epoch}: loss ${e.loss.toFixed(4)} acc ${e.accuracy.toFixed(3)} | val loss ${e.valLoss.toFixed(4)} acc ${e.valAccuracy.toFixed(3)} ` +
      `macro-F1 ${e.valMacroF1.toFixed(3)}${e.best ? ' (best)' : ''} | lr ${e.learningRate.toExponential(2)} | ${e.imagesPerSecond.toFixed(1)} img/s, ${e.seconds.toFixed(0)} s\n`,
  );
}

/**
 * Until the returned undo: Ctrl-C (status 130) or SIGTERM (143) ends the process with `hint` on stderr. Training writes every
 * checkpoint atomically, so a run stopped at any moment resumes from its last finished epoch.
 */
function onInterrupt(hint: string): () => void {
  // SIGTERM too (`docker stop`, a scheduler's time limit): status 128 + its number, as a shell reports it.
  const stop = (signal: NodeJS.Signals): void => {
    endProgressLine();
    process.stderr.write(`\n${hint}\n`);
    process.exit(signal === 'SIGTERM' ? 143 : 130);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return () => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  };
}

function print(values: Values, result: unknown, human: string): void {
  endProgressLine(); // stdout and stderr share the terminal
  process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : `${human}\n`);
}

/**
 * The usage of one command (`pneumotype evaluate --help`): the usage line, the command's own lines of HELP and the
 * options every command takes; the whole text for `help` or a command it does not list.
 */
export function commandHelp(command: string): string {
  const lines = HELP.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`  ${command} `));
  if (command === 'help' || start < 0) return HELP;
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('   '));
  const footer = lines.findIndex((l) => l.startsWith('Options for every command'));
  // The words HELP gives the command (`sagemaker train`), not its first word alone.
  const words = /^ {2}(\S+(?: [a-z]+)?)(?: {2,}|$)/.exec(lines[start] ?? '')?.[1] ?? command;
  // sagemaker train takes its settings from hyperparameters.json, not options: list them.
  const hyperparameters = words === 'sagemaker train'
    ? ['', 'Hyperparameters (hyperparameters.json; each a string, as SageMaker sends them):', ...Object.entries(HYPERPARAMETERS).map(([k, v]) => `  ${k.padEnd(15)}${v}`)]
    : [];
  return [`Usage: pneumotype ${words} [options]`, '', ...lines.slice(start, end), ...hyperparameters, '', ...lines.slice(footer)].join('\n');
}

/**
 * An option given twice with different values (`--model a --model b`): which one was meant is not ours to guess.
 * Undefined when none is; a flag or the same value repeated is harmless.
 */
function repeatedOption(tokens: readonly { kind: string; name?: string; value?: string | undefined }[]): string | undefined {
  const seen = new Map<string, string | undefined>();
  for (const t of tokens) {
    if (t.kind !== 'option' || t.name === undefined) continue;
    if (seen.has(t.name) && seen.get(t.name) !== t.value) {
      return `--${t.name} is given twice (${quote(seen.get(t.name) ?? '')}, then ${quote(t.value ?? '')}): give it once`;
    }
    seen.set(t.name, t.value);
  }
  return undefined;
}

/** The command being run (set by {@link main}): long-running ones outlive a closed stdout. */
let running: string | undefined;

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  if (argv.length === 1 && argv[0] === '--version') {
    process.stdout.write(`${pneumotypeVersion()}\n`);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (err) {
    const explained = parseFailure(argv, err);
    process.stderr.write(explained ?? `pneumotype: ${(err as Error).message}\nRun \`pneumotype help\` for usage.\n`);
    return 2;
  }
  const { values, positionals, tokens } = parsed;
  const command = positionals[0] ?? 'help';
  running = command;
  const twice = repeatedOption(tokens);
  if (twice !== undefined) {
    process.stderr.write(`pneumotype${positionals[0] === undefined ? '' : ` ${command}`}: ${twice}\n`);
    return 2;
  }
  // Options without a command: the command is what is missing, not an option of `help`.
  if (positionals[0] === undefined && !values.help && Object.keys(values).some((k) => !(EVERY_COMMAND as readonly string[]).includes(k))) {
    process.stderr.write(`pneumotype: a command is missing before the options (${argv.join(' ')})\n\n${HELP}`);
    return 2;
  }
  // `help bogus` and `bogus --help` are mistakes, as `bogus` is.
  const helpFor = values.help ? command : command === 'help' ? positionals[1] : undefined;
  if (helpFor !== undefined && helpFor !== 'help' && !Object.hasOwn(COMMANDS, helpFor)) {
    process.stderr.write(`pneumotype: unknown command ${quote(helpFor)}${didYouMean(helpFor, Object.keys(COMMANDS))}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  // `help sagemaker train` is the one help of two words.
  const misuse = command === 'help' && positionals[2] !== undefined && !(positionals[1] === 'sagemaker' && positionals[2] === 'train')
    ? `unexpected argument ${quote(positionals[2])}: help takes one command (or \`sagemaker train\`)`
    : usageError(command, values, positionals);
  if (misuse !== undefined) {
    process.stderr.write(`pneumotype ${command}: ${misuse}\nRun \`pneumotype help${command === 'help' ? '' : ` ${command}`}\` for usage.\n`);
    return 2;
  }
  const onProgress = values.quiet ? undefined : progressRenderer(process.stderr);
  const progress = onProgress ? { onProgress } : {};
  try {
    switch (command) {
      case 'help':
        process.stdout.write(commandHelp(positionals[1] ?? 'help'));
        return 0;
      case 'doctor': {
        const report = await diagnose();
        const tf = report.tensorflow;
        const lines = [
          `pneumotype ${report.pneumotype}`,
          `node ${report.node} on ${report.platform}, ${report.cpu.cores} cores (${report.cpu.model}), ${report.memoryGiB} GiB`,
          'error' in tf
            ? `TensorFlow.js: NOT LOADED: ${tf.error}`
            : `TensorFlow.js ${tf.tfjsVersion}: ${tf.package} (backend ${tf.backend}` +
              `${tf.libtensorflowVersion ? `, libtensorflow ${tf.libtensorflowVersion}` : ''}), requested ${tf.requested}`,
          ...('error' in tf ? [] : tf.reasons.map((r) => `  - ${r}`)),
          `GPU: ${report.gpu.nvidiaSmi ?? 'none visible (nvidia-smi not found or failed)'}`,
          ...(Object.keys(report.gpu.cudaLibraries).length === 0
            ? []
            : [`CUDA 11 runtime for tfjs-node-gpu: ${Object.entries(report.gpu.cudaLibraries).map(([name, path]) => `${name} ${path ?? 'not found'}`).join(', ')}`]),
          `training steps: ${report.training.note}`,
          `sharp ${report.sharp.sharp} (libvips ${report.sharp.libvips})`,
          `installed: ${Object.entries(report.installed).map(([k, v]) => `${k}@${v ?? '-'}`).join(', ')}`,
        ];
        print(values, report, lines.join('\n'));
        return 'error' in tf ? 1 : 0;
      }
      case 'fetch': {
        if (values.sha256 !== undefined && !/^\s*[0-9a-fA-F]{64}\s*$/.test(values.sha256)) throw new UsageError(`--sha256 ${quote(values.sha256)} is not 64 hexadecimal digits`);
        const maxBytes = number(values, 'max-bytes', whole(1));
        const r = await fetchDataset({
          ...(values.source !== undefined ? { source: values.source } : {}),
          ...(values.out !== undefined ? { outDir: values.out } : {}),
          ...(values.sha256 !== undefined ? { sha256: values.sha256 } : {}),
          ...(maxBytes !== undefined ? { maxBytes } : {}),
          ...progress,
        });
        print(values, r, `${r.downloaded ? 'downloaded' : 'verified'} ${r.path} (${formatBytes(r.bytes)}, sha256 ${r.sha256})`);
        return 0;
      }
      case 'extract': {
        if (!values.archive) throw new UsageError('extract needs --archive ZIP|URL|v2|v3');
        const target = resolveSource(values.archive);
        if (target.kind !== 'path') {
          const r = await extractRemoteZip({
            url: target.kind === 'known' ? target.known.url : target.url,
            outDir: values.out ?? DEFAULTS.extractedDir,
            include: values.all ? () => true : datasetEntryFilter,
            ...progress,
          });
          if (!values.all) noChestEntries(shownUrl(values.archive), r);
          print(values, r, `extracted ${r.files} file(s) (${formatBytes(r.bytes)}) to ${r.outDir}, transferring ${formatBytes(r.transferredBytes)} of ${formatBytes(r.archiveBytes)}; ${r.alreadyPresent} already present`);
          return 0;
        }
        const r = await extractZip({
          archive: values.archive,
          outDir: values.out ?? DEFAULTS.extractedDir,
          ...(values.all ? {} : { include: datasetEntryFilter }),
          ...progress,
        });
        if (!values.all) noChestEntries(values.archive, r);
        print(values, r, `extracted ${r.files} file(s) (${formatBytes(r.bytes)}) to ${r.outDir}; ${r.alreadyPresent} already present, ${r.skippedJunk} junk skipped, ${r.excluded} not selected`);
        return 0;
      }
      case 'relabel': {
        if (!values.from) throw new UsageError('relabel needs --from FOLDER|ZIP');
        const r = await relabel({
          from: values.from,
          ...(values.out !== undefined ? { out: values.out } : {}),
          ...(values.extracted !== undefined ? { extractedDir: values.extracted } : {}),
          ...(values['allow-unknown'] ? { allowUnknown: true } : {}),
          ...progress,
        });
        const c = r.summary.counts;
        const line = (s: 'train' | 'test' | 'val'): string =>
          c[s] ? `  ${s}: ${c[s].normal} normal, ${c[s].bacteria} bacteria, ${c[s].virus} virus (${r.summary.patients[s]?.total ?? 0} patients)` : '';
        const audit = r.summary.leakage;
        print(values, { changed: r.changed, out: r.out, summary: r.summary }, [
          r.changed ? `relabelled into ${r.out}` : `unchanged: ${r.out} already holds this dataset`,
          line('train'), line('test'), line('val'),
          `  skipped ${r.summary.skipped.junk} junk, ${r.summary.skipped.ignored.length} ignored, ${r.summary.rejected.length} rejected, ${r.summary.undecodable.length} undecodable`,
          `  leakage audit: ${audit.clean ? 'clean' : `${audit.identicalAcrossSplits.length} identical and ${audit.nearDuplicatesAcrossSplits.length} near-duplicate pair(s) across splits`}`,
        ].filter(Boolean).join('\n'));
        return 0;
      }
      case 'prepare': {
        const named = preset(values);
        const imageSize = number(values, 'image-size', whole(16, 4096));
        const valFraction = number(values, 'val-fraction', { ok: (n) => n > 0 && n < 1, expected: 'a fraction between 0 and 1' });
        const seed = number(values, 'seed', whole(0));
        // The cpu preset's cache is the gpu preset's too (only the concurrency differs), so no TensorFlow is loaded to choose.
        const p = named ?? 'cpu';
        const r = await prepareStep({
          ...(values.data !== undefined ? { labeledDir: values.data } : {}),
          ...(values.cache !== undefined ? { cacheDir: values.cache } : {}),
          ...(p ? { preset: p } : {}),
          ...(imageSize !== undefined ? { imageSize } : {}),
          ...(valFraction !== undefined ? { valFraction } : {}),
          ...(seed !== undefined ? { seed } : {}),
          ...progress,
        });
        print(values, r, r.description);
        return 0;
      }
      case 'train': {
        if (!values.out) throw new UsageError('train needs --out runs/NAME');
        const named = preset(values);
        const overrides: Partial<Config> = {};
        const set = <K extends keyof Config>(k: K, v: Config[K] | undefined): void => {
          if (v !== undefined) overrides[k] = v;
        };
        set('imageSize', number(values, 'image-size', whole(16, 4096)));
        set('epochs', number(values, 'epochs', whole(1)));
        set('batchSize', number(values, 'batch-size', whole(1)));
        set('seed', number(values, 'seed', whole(0)));
        set('model', values.model);
        set('modelDepth', values.depth);
        set('mixup', number(values, 'mixup', { ok: (n) => n === 0 || n >= 0.01, expected: '0 (off) or a number of at least 0.01' }));
        set('optimizer', oneOf(values, 'optimizer', ['adam', 'sgd'] as const));
        set('learningRate', number(values, 'learning-rate', { ok: (n) => n > 0, expected: 'a positive number' }));
        set('weightDecay', number(values, 'weight-decay', { ok: (n) => n >= 0, expected: 'a number of at least 0' }));
        set('patience', number(values, 'patience', whole(1)));
        if (values.antialias) overrides.antialias = true;
        if (values.standardize) overrides.standardize = true;
        exclusive(values, 'eager', 'graph');
        if (values.graph) overrides.graphOps = true;
        if (values.eager) overrides.graphOps = false;
        checkNetworkOptions(values, resolveConfig(named, overrides).model);
        // As run: gpu with a native GPU backend, else cpu; a resumed run keeps the preset it was started with (none,
        // before this default; gpu on another machine).
        const p = await presetForRun(named, { out: values.out, overrides, resume: values.resume === true });
        // A mistyped --out with --resume would otherwise start a new run without a word.
        if (values.resume && !(await hasCheckpoint(values.out))) {
          process.stderr.write(`pneumotype train: nothing to resume in ${quote(resolve(values.out))} (no checkpoint there yet): starting a new run\n`);
        }
        const undo = onInterrupt(`pneumotype train: interrupted; the epochs finished so far (if any) are saved in ${quote(join(values.out, 'checkpoints', 'last'))}: run the same command with --resume to continue`);
        const r = await train({
          data: values.data ?? DEFAULTS.labeledDir,
          out: values.out,
          ...(p ? { preset: p } : {}),
          config: overrides,
          augment: augmentOption(values),
          ...(values.cache !== undefined ? { cacheDir: values.cache } : {}),
          ...(values.resume ? { resume: true } : {}),
          ...(values['init-from'] !== undefined ? { initFrom: values['init-from'] } : {}),
          ...(values.freeze ? { freeze: true } : {}),
          ...(values.unfreeze ? { unfreeze: true } : {}),
          ...(values['init-range'] !== undefined ? { initRange: parseRange(values['init-range']) } : {}),
          ...(values['feature-layer'] !== undefined ? { featureLayer: values['feature-layer'] } : {}),
          ...(values['balance-groups'] !== undefined ? { balanceGroups: parseGroups(values['balance-groups'], 'balance-groups') } : {}),
          ...progress,
          onEpoch: printEpoch,
        }).finally(undo);
        print(values, r, `best epoch ${r.bestEpoch} of ${r.history.length}${r.stoppedEarly ? ' (stopped early)' : ''}: validation accuracy ${r.card.validation.accuracy.toFixed(3)}, macro-F1 ${r.card.validation.macroF1.toFixed(3)}; model in ${r.modelDir}`);
        return 0;
      }
      case 'evaluate': {
        const split = oneOf(values, 'split', ['test', 'val'] as const) ?? 'test';
        const bootstrap = number(values, 'bootstrap', whole(0, MAX_BOOTSTRAP));
        const r = await evaluateModel({
          ...(values.model !== undefined ? { model: values.model } : {}),
          data: values.data ?? DEFAULTS.labeledDir,
          split,
          ...(bootstrap !== undefined ? { bootstrap } : {}),
          ...(values.out !== undefined ? { out: values.out } : {}),
          ...(values.predictions !== undefined ? { predictions: values.predictions } : {}),
          ...(values.groups !== undefined ? { groups: parseGroups(values.groups) } : {}),
          ...(values.extracted !== undefined ? { extractedDir: values.extracted } : {}),
          ...progress,
        });
        endProgressLine();
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        // A step line: it stays with --quiet, as run's do (only progress bars go).
        const unread = r.failed.length > 0 ? `, ${r.failed.length} left out (listed in "failed" with why)` : '';
        process.stderr.write(`== evaluate: ${evaluationSummary(r)} (${r.n} images${unread})\n`);
        warnLeftOut('evaluate', r.failed, `the scores (n = ${r.n})`);
        for (const w of r.warnings ?? []) process.stderr.write(`pneumotype evaluate: warning: ${w}\n`);
        return 0;
      }
      case 'calibrate': {
        if (!values.model) throw new UsageError('calibrate needs --model DIR (the folder of a trained model)');
        const split = oneOf(values, 'split', ['test', 'val'] as const) ?? 'val';
        const r = await calibrateModel({
          model: values.model,
          data: values.data ?? DEFAULTS.labeledDir,
          split,
          ...(values.out !== undefined ? { out: values.out } : {}),
          ...progress,
        });
        const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
        print(values, r, `temperature ${r.temperature.toFixed(3)} fitted on ${r.images} ${split} images: expected calibration error ${f(r.before.ece)} -> ${f(r.after.ece)} ` +
          `(${f(r.crossFitted.ece)} cross-fitted by patient), log loss ${f(r.before.logLoss)} -> ${f(r.after.logLoss)}; model in ${r.out}`);
        warnLeftOut('calibrate', r.failed, `the fit (${r.images} images)`);
        for (const w of r.warnings) process.stderr.write(`pneumotype calibrate: warning: ${w}\n`);
        return 0;
      }
      case 'predict': {
        if (positionals.length < 2) throw new UsageError('predict needs at least one IMAGE or FOLDER');
        // Each argument on its own: a folder without images gets its error line, as a bad image does, and the rest go on.
        const files: (string | { file: string; error: string })[] = [];
        for (const arg of positionals.slice(1)) {
          try {
            files.push(...(await expandImagePaths([arg])));
          } catch (err) {
            if (!(err instanceof ConfigError)) throw err;
            files.push({ file: arg, error: err.message });
          }
        }
        const loaded = await loadModel(values.model);
        try {
          let bad = 0;
          // In chunks, so that lines appear as a large folder goes.
          for (let i = 0; i < files.length; i += PREDICT_CHUNK) {
            const chunk = files.slice(i, i + PREDICT_CHUNK);
            const scored = await predict(loaded, chunk.filter((f): f is string => typeof f === 'string'));
            let next = 0;
            for (const f of chunk) {
              const r = typeof f === 'string' ? scored[next++] : f;
              if (r === undefined) continue;
              if ('error' in r) bad++;
              process.stdout.write(`${JSON.stringify(r)}\n`);
            }
          }
          // Named on stderr too (as evaluate does), even with --quiet: a pipe that keeps only labels would not see them.
          if (bad > 0) process.stderr.write(`pneumotype predict: warning: ${bad} of ${files.length} image(s) could not be read (their lines carry "error")\n`);
          return bad === files.length ? 1 : 0;
        } finally {
          loaded.dispose();
        }
      }
      case 'report': {
        if (!values.run) throw new UsageError('report needs --run runs/NAME');
        const r = await writeRunReport({
          runDir: values.run,
          ...(values.eval !== undefined ? { evaluation: values.eval } : {}),
          ...(values.predictions !== undefined ? { predictionsCsv: values.predictions } : {}),
          ...(values.data !== undefined ? { labeledDir: values.data } : {}),
          ...(values.out !== undefined ? { out: values.out } : {}),
        });
        print(values, r, `wrote ${r.out} (${formatBytes(r.bytes)}, ${r.figures} charts)${r.notes.length ? `\n  left out: ${r.notes.join('; ')}` : ''}`);
        return 0;
      }
      case 'upload': {
        if (!values.bucket) throw new UsageError('upload needs --bucket NAME');
        const concurrency = number(values, 'concurrency', whole(1));
        const partMiB = number(values, 'part-size', { ok: (n) => n >= 5 && n <= 5120, expected: "a size in MiB from 5 to 5120 (S3's limits for one part)" });
        const uploadOptions = {
          data: values.data ?? DEFAULTS.labeledDir,
          bucket: values.bucket,
          ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
          ...(values.region !== undefined ? { region: values.region } : {}),
          ...(values.endpoint !== undefined ? { endpoint: values.endpoint } : {}),
          ...(concurrency !== undefined ? { concurrency } : {}),
          ...(partMiB !== undefined ? { partSize: Math.round(partMiB * 1024 ** 2) } : {}),
        };
        // Bucket, region, endpoint and prefix: usage errors, found before any work.
        try {
          checkUploadOptions(uploadOptions);
        } catch (err) {
          throw err instanceof ConfigError ? new UsageError(err.message) : err;
        }
        const controller = new AbortController();
        const stop = (signal: NodeJS.Signals): void => controller.abort(signal);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          const r = await upload({
            ...uploadOptions,
            signal: controller.signal,
            ...progress,
          });
          print(values, r, `${r.uploaded} uploaded (${formatBytes(r.bytes)}), ${r.skipped} already there; complete: s3://${r.bucket}/${r.manifestKey}`);
          return 0;
        } catch (err) {
          // Ctrl-C: the upload stopped cleanly and says how to go on; the status is an interrupt's, as for run and train.
          if (!controller.signal.aborted || !(err instanceof PneumotypeError)) throw err;
          process.stderr.write(`\npneumotype upload: ${err.message}\n`);
          return controller.signal.reason === 'SIGTERM' ? 143 : 130;
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
      }
      case 'serve': {
        const port = number(values, 'port', whole(0, 65535));
        const maxBatch = number(values, 'max-batch', whole(1));
        const maxInFlight = number(values, 'max-in-flight', whole(1));
        const maxDecoding = number(values, 'max-decoding', whole(1));
        const batchWindowMs = number(values, 'batch-window-ms', { ok: (n) => n >= 0 && n <= MAX_TIMER_MS, expected: `a number from 0 to ${MAX_TIMER_MS}` });
        const maxBodyBytes = number(values, 'max-body-bytes', whole(1));
        return await serveUntilSignal({
          ...(values.model !== undefined ? { model: values.model } : process.env.PNEUMOTYPE_MODEL_DIR ? { model: process.env.PNEUMOTYPE_MODEL_DIR } : {}),
          ...(port !== undefined ? { port } : {}),
          ...(values.host !== undefined ? { host: values.host } : {}),
          ...(maxBatch !== undefined ? { maxBatch } : {}),
          ...(maxInFlight !== undefined ? { maxInFlight } : {}),
          ...(maxDecoding !== undefined ? { maxDecoding } : {}),
          ...(batchWindowMs !== undefined ? { batchWindowMs } : {}),
          ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
          onLog: (line) => process.stdout.write(`${JSON.stringify(line)}\n`),
        });
      }
      case 'sagemaker': {
        if (positionals[1] !== 'train') throw new UsageError(`sagemaker needs a subcommand: "train" (got ${quote(positionals[1] ?? '')})`);
        // process.exit, not exitCode: an epoch outliving SIGTERM's grace period must not keep the process alive.
        process.exit(await runSageMakerTrainingUntilSignal({
          ...(values.root !== undefined ? { root: values.root } : {}),
          onLog: (line) => process.stdout.write(`${JSON.stringify(line)}\n`),
        }));
      }
      case 'run': {
        const p = preset(values);
        exclusive(values, 'eager', 'graph');
        exclusive(values, 'remote', 'download-whole');
        if (values['no-train']) {
          // Options of the steps that --no-train leaves out would be silently ignored.
          const unused = (['out', 'groups', 'augment', 'no-calibrate', 'eager', 'graph'] as const).filter((n) => values[n] !== undefined && values[n] !== false);
          if (unused.length > 0) throw new UsageError(`${unused.map((n) => `--${n}`).join(', ')} ${unused.length === 1 ? 'is' : 'are'} for training, which --no-train leaves out`);
        }
        augmentOption(values); // a bad name is found before any work
        const undo = onInterrupt('pneumotype run: interrupted; finished steps and epochs are kept: run the same command again to continue');
        const r = await runPipeline({
          ...(values.source !== undefined ? { source: values.source } : {}),
          ...(values['data-dir'] !== undefined ? { dataDir: values['data-dir'] } : {}),
          ...(p ? { preset: p } : {}),
          ...(values.eager ? { config: { graphOps: false } } : values.graph ? { config: { graphOps: true } } : {}),
          ...(values.remote ? { remote: true } : values['download-whole'] ? { remote: false } : {}),
          ...(values['no-train'] ? { train: false } : {}),
          ...(values['no-calibrate'] ? { calibrate: false } : {}),
          ...(values.out !== undefined ? { runDir: values.out } : {}),
          ...(values.groups !== undefined ? { groups: parseGroups(values.groups) } : {}),
          augment: augmentOption(values),
          onEpoch: printEpoch,
          ...progress,
          onStep: (step, note) => {
            endProgressLine();
            process.stderr.write(`== ${step}: ${note}\n`);
          },
        }).finally(undo);
        print(values, r, r.steps.map((s) => `${s.step}: ${s.note}`).join('\n'));
        return 0;
      }
      default:
        process.stderr.write(`pneumotype: unknown command ${quote(command)}${didYouMean(command, Object.keys(COMMANDS))}\n\n${HELP}`);
        return 2;
    }
  } catch (err) {
    // A progress bar left open on a terminal is cleared first; no blank line otherwise.
    endProgressLine();
    if (err instanceof UsageError) {
      // The command line itself: status 2, like an unknown option, with the way to its usage.
      process.stderr.write(`pneumotype ${command}: ${err.message}\nRun \`pneumotype help ${command}\` for usage.\n`);
      return 2;
    }
    if (err instanceof PneumotypeError) {
      process.stderr.write(`pneumotype ${command}: ${err.message}\n`);
      return 1;
    }
    // A file-system error (a path that is a file where a folder is needed, say) names its path: one line, no trace.
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code) && (err as NodeJS.ErrnoException).syscall !== undefined) {
      process.stderr.write(`pneumotype ${command}: ${messageOf(err)}\n`);
      return 1;
    }
    throw err;
  }
}

/** True when this module is the program itself (`node dist/cli.js …`), not imported by bin/pneumotype.js or a test. */
function runDirectly(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  // `node dist/cli` names the file without its extension.
  for (const candidate of [script, `${script}.js`]) {
    try {
      return pathToFileURL(realpathSync(candidate)).href === import.meta.url;
    } catch {
      // no such file: the next candidate
    }
  }
  return false;
}

/** Runs the CLI as the program: the command line of this process, its exit code set; output piped into a reader that stops early (`| head`) ends it quietly. */
export async function runCli(): Promise<void> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    // A server or a SageMaker job whose log reader went away goes on (its requests and epochs matter more than its
    // log lines, which are dropped); a command whose output nobody reads any more is done.
    if (running === 'serve' || running === 'sagemaker') return;
    process.exit(0);
  });
  // A closed stderr (a progress bar's reader gone) never ends a command or changes its exit status.
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  process.exitCode = await main(process.argv.slice(2));
}

if (runDirectly()) await runCli();
