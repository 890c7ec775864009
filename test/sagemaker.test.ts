// SageMaker's training contract end to end on a fixture /opt/ml tree, its failure texts, and the lifecycle scripts.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, afterEach, before, test } from 'node:test';
import { loadModel, predict } from '../lib/evaluate.js';
import { readManifest } from '../lib/manifest.js';
import { defaultPreset } from '../lib/pipeline.js';
import { relabel } from '../lib/relabel.js';
import { parseHyperparameters, runSageMakerTraining, sageMakerRoot, type SageMakerLogLine } from '../lib/sagemaker.js';
import { loadTf } from '../lib/tf.js';
import type { ModelCard } from '../lib/train.js';
import { datasetFiles, makeJpeg, writeTree } from './helpers/fixtures.js';

let tmp: string;
let raw: string;
let labeled: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-sagemaker-'));
  raw = join(tmp, 'raw');
  labeled = join(tmp, 'labeled');
  await writeTree(raw, await datasetFiles({ perClass: { train: 6, test: 1 } }));
  await relabel({ from: raw, out: labeled });
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

// Work that a stop's grace period gave up on goes on in the background: each test waits for its own before it ends,
// so that none of it writes into a folder being removed (or into the next test's time).
const abandoned: Promise<void>[] = [];
const onAbandoned = (settled: Promise<void>): void => void abandoned.push(settled);
afterEach(async () => {
  await Promise.all(abandoned.splice(0));
});

/** A fresh /opt/ml tree: hyperparameters.json (when given) and the training channel copied from `channel`. */
async function mlRoot(name: string, hyperparameters: Record<string, unknown> | undefined, channel?: string): Promise<string> {
  const root = join(tmp, name);
  await mkdir(join(root, 'input', 'config'), { recursive: true });
  await mkdir(join(root, 'model'), { recursive: true });
  if (hyperparameters) await writeFile(join(root, 'input', 'config', 'hyperparameters.json'), JSON.stringify(hyperparameters));
  if (channel) await cp(channel, join(root, 'input', 'data', 'training'), { recursive: true });
  return root;
}

const failure = (root: string): Promise<string> => readFile(join(root, 'output', 'failure'), 'utf8');

test('a training job on the labelled channel writes the model to /opt/ml/model and no failure', async () => {
  const root = await mlRoot('ok', { preset: 'smoke', epochs: '1', seed: '7', 'learning-rate': '0.003', augment: 'none', sagemaker_region: '"eu-west-1"', _tuning_objective_metric: 'x' }, labeled);
  await mkdir(join(root, 'output'), { recursive: true });
  await writeFile(join(root, 'output', 'failure'), 'left over from an earlier run\n');
  const tf = loadTf();
  const tensors = tf.memory().numTensors;
  const events: string[] = [];
  const code = await runSageMakerTraining({ root, onLog: (l) => events.push(l.event) });
  assert.equal(code, 0);
  assert.equal(tf.memory().numTensors, tensors);
  assert.deepEqual((await readdir(join(root, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
  await assert.rejects(failure(root), { code: 'ENOENT' });
  assert.deepEqual(events, ['start', 'data', 'epoch', 'calibrated', 'model_saved']);
  const card = JSON.parse(await readFile(join(root, 'model', 'pneumotype.json'), 'utf8')) as { imageSize: number; training: { config: { seed: number; learningRate: number; epochs: number } } };
  assert.deepEqual([card.imageSize, card.training.config.seed, card.training.config.learningRate, card.training.config.epochs], [32, 7, 0.003, 1]);
  assert.ok((await readdir(join(root, 'output', 'data', 'run'))).includes('history.json'));
  const m = await loadModel(join(root, 'model'));
  try {
    const [p] = await predict(m, [{ name: 'x', data: await makeJpeg({ seed: 1 }) }]);
    assert.ok(p && 'label' in p);
  } finally {
    m.dispose();
  }
});

test('without a preset hyperparameter a job trains as train does (cpu on a CPU backend, gpu with tfjs-node-gpu), not the 224 px defaults', async () => {
  const root = await mlRoot('no-preset', { epochs: '1', 'image-size': '32', augment: 'none', calibrate: 'false' }, labeled);
  const saved = process.env.PNEUMOTYPE_PRESET;
  delete process.env.PNEUMOTYPE_PRESET;
  const starts: SageMakerLogLine[] = [];
  let expected: string;
  try {
    expected = defaultPreset();
    assert.equal(await runSageMakerTraining({ root, onLog: (l) => { if (l.event === 'start') starts.push(l); } }), 0);
  } finally {
    if (saved !== undefined) process.env.PNEUMOTYPE_PRESET = saved;
  }
  assert.ok(expected === 'cpu' || expected === 'gpu');
  assert.equal(starts[0]?.preset, expected);
  const card = JSON.parse(await readFile(join(root, 'model', 'pneumotype.json'), 'utf8')) as ModelCard;
  // The cpu and gpu presets' network (DEFAULTS alone: width 0, the architecture's own 32), at the size asked for.
  assert.deepEqual([card.training.config.model, card.training.config.modelWidth, card.imageSize], ['resnet', 16, 32]);
});

test('a restart of a finished job with checkpoints trains nothing and does not calibrate the calibrated model again', async () => {
  const root = await mlRoot('restart', { preset: 'smoke', epochs: '1', augment: 'none' }, labeled);
  await mkdir(join(root, 'checkpoints'));
  const first: string[] = [];
  assert.equal(await runSageMakerTraining({ root, onLog: (l) => first.push(l.event) }), 0);
  assert.deepEqual(first, ['start', 'data', 'epoch', 'calibrated', 'model_saved']);
  const card = await readFile(join(root, 'model', 'pneumotype.json'), 'utf8');
  assert.ok((JSON.parse(card) as ModelCard).calibration);
  // The restart (resume is the default) finds the finished run: a second temperature folded on top would be wrong.
  const again: string[] = [];
  assert.equal(await runSageMakerTraining({ root, onLog: (l) => again.push(l.event) }), 0);
  assert.deepEqual(again, ['start', 'data', 'model_saved']);
  assert.equal(await readFile(join(root, 'model', 'pneumotype.json'), 'utf8'), card);
  // No lock files in the folder that SageMaker copies to S3 and back.
  const run = join(root, 'checkpoints', 'run');
  assert.deepEqual([...await readdir(join(root, 'checkpoints')), ...await readdir(run)].filter((f) => f.endsWith('.lock')), []);
});

test('the raw archive layout is relabelled first; a stop signal ends training after the epoch, keeps the model and says so', async () => {
  const root = await mlRoot('stopped', { preset: 'tiny', epochs: '3' }, raw);
  const controller = new AbortController();
  const lines: SageMakerLogLine[] = [];
  const code = await runSageMakerTraining({
    root,
    signal: controller.signal,
    onLog: (l) => {
      lines.push(l);
      if (l.event === 'epoch') controller.abort('SIGTERM');
    },
  });
  assert.equal(code, 143);
  assert.equal(lines.find((l) => l.event === 'data')?.layout, 'archive folders');
  assert.equal(await failure(root), `stopped by SIGTERM after epoch 1 of 3: the best model so far (epoch 1) is in "${join(root, 'model')}"\n`);
  assert.deepEqual((await readdir(join(root, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
  // A stop that the work in progress outlives: the job gives up on it after the grace period.
  const slow = await mlRoot('slow', { preset: 'smoke' }, raw);
  const late = new AbortController();
  const code2 = await runSageMakerTraining({ root: slow, workDir: join(tmp, 'slow-work'), stopGraceMs: 0, onAbandoned, signal: late.signal, onLog: (l) => l.event === 'data' && late.abort('SIGTERM') });
  assert.equal(code2, 143);
  assert.equal(await failure(slow), 'stopped by SIGTERM before the first epoch ended (the work in progress did not end within 0 s of the signal): no model was saved\n');
  // A signal before anything started: nothing to keep.
  const early = await mlRoot('early', {}, labeled);
  const aborted = new AbortController();
  aborted.abort('SIGINT');
  assert.equal(await runSageMakerTraining({ root: early, signal: aborted.signal }), 130);
  assert.equal(await failure(early), 'stopped by SIGINT before training started: no model was saved\n');
});

test('resume false starts over: a stop before the first new epoch saves no model, never the earlier run\'s', async () => {
  // Job 1 (checkpoint configuration, 32 px) finishes; job 2 reuses its checkpoint folder with resume false, 48 px.
  const root = await mlRoot('replace', { preset: 'smoke', epochs: '1', augment: 'none', 'image-size': '32' }, labeled);
  await mkdir(join(root, 'checkpoints'));
  // What a killed copy of an earlier container left in the model folder is not packed with the model.
  await writeFile(join(root, 'model', '.weights.bin.4242.tmp'), 'half a copy');
  assert.equal(await runSageMakerTraining({ root }), 0);
  assert.deepEqual((await readdir(join(root, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
  const run = join(root, 'checkpoints', 'run');
  assert.deepEqual((await readdir(run)).sort(), ['checkpoints', 'history.json', 'model']);
  await writeFile(join(run, 'notes.txt'), 'not a training output\n');
  await writeFile(join(run, 'checkpoints', 'keep.txt'), 'not a training output\n');
  await rm(join(root, 'model'), { recursive: true });
  await mkdir(join(root, 'model')); // a new job's model folder starts empty
  await writeFile(join(root, 'input', 'config', 'hyperparameters.json'), JSON.stringify({ preset: 'smoke', epochs: '2', augment: 'none', 'image-size': '48', resume: 'false' }));
  const controller = new AbortController();
  const events: string[] = [];
  // SIGTERM while train prepares its cache, before any epoch of this job.
  const code = await runSageMakerTraining({
    root,
    signal: controller.signal,
    onLog: (l) => events.push(l.event),
    onProgress: (p) => p.stage === 'prepare' && !controller.signal.aborted && controller.abort('SIGTERM'),
  });
  assert.equal(code, 143);
  assert.deepEqual(events, ['start', 'data', 'stopping', 'stopped_with_error', 'stopped']);
  assert.equal(await failure(root), 'stopped by SIGTERM before the first epoch ended: no model was saved\n');
  assert.deepEqual(await readdir(join(root, 'model')), []);
  // The earlier run's outputs are gone; other files stay.
  assert.deepEqual((await readdir(run)).sort(), ['checkpoints', 'notes.txt']);
  assert.deepEqual(await readdir(join(run, 'checkpoints')), ['keep.txt']);
});

test('a resumed job stopped before its own first epoch ends publishes the resumed run\'s best model', async () => {
  const root = await mlRoot('resumed', { preset: 'smoke', epochs: '3', augment: 'none', 'image-size': '32' }, labeled);
  await mkdir(join(root, 'checkpoints'));
  const first = new AbortController();
  assert.equal(await runSageMakerTraining({ root, signal: first.signal, onLog: (l) => l.event === 'epoch' && first.abort('SIGTERM') }), 143);
  // A spot restart: a new container, its model folder empty, the checkpoints copied back; stopped again while it
  // rebuilds its cache, before an epoch of its own, and the work in progress outlives the grace period.
  await rm(join(root, 'model'), { recursive: true });
  await mkdir(join(root, 'model'));
  const second = new AbortController();
  const events: string[] = [];
  const code = await runSageMakerTraining({
    root,
    stopGraceMs: 0, onAbandoned,
    signal: second.signal,
    onLog: (l) => events.push(l.event),
    onProgress: (p) => p.stage === 'prepare' && !second.signal.aborted && second.abort('SIGTERM'),
  });
  assert.equal(code, 143);
  assert.deepEqual(events.filter((e) => e === 'epoch'), []);
  assert.equal(
    await failure(root),
    `stopped by SIGTERM before this job's first epoch ended (the work in progress did not end within 0 s of the signal): the resumed run's best model so far (epoch 1) is in "${join(root, 'model')}"\n`,
  );
  assert.deepEqual((await readdir(join(root, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
  // A best checkpoint that cannot be copied whole (its weights gone): no half model, no temporary file, and the job
  // still ends as stopped, saying why.
  const best = join(root, 'checkpoints', 'run', 'checkpoints', 'best');
  await rm(join(best, 'weights.bin'));
  await rm(join(root, 'model'), { recursive: true });
  await mkdir(join(root, 'model'));
  const third = new AbortController();
  const code3 = await runSageMakerTraining({
    root,
    stopGraceMs: 0, onAbandoned,
    signal: third.signal,
    onProgress: (p) => p.stage === 'prepare' && !third.signal.aborted && third.abort('SIGTERM'),
  });
  assert.equal(code3, 143);
  assert.match(await failure(root), new RegExp(`^stopped by SIGTERM; the best checkpoint so far could not be saved: the model ${JSON.stringify(best).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} could not be copied to .*: ENOENT`));
  assert.deepEqual(await readdir(join(root, 'model')), []);
});

test('a stop after the last epoch still calibrates within the grace period; past it the model goes uncalibrated and the failure says so', async () => {
  const hp = { preset: 'smoke', epochs: '1', augment: 'none', calibrate: 'true' };
  const calibration = async (root: string): Promise<unknown> => (JSON.parse(await readFile(join(root, 'model', 'pneumotype.json'), 'utf8')) as ModelCard).calibration;
  // SIGTERM on the last epoch's log line: nothing was cut short, calibration runs (seconds) and the job succeeds.
  const root = await mlRoot('stop-last', hp, labeled);
  const controller = new AbortController();
  const events: string[] = [];
  const code = await runSageMakerTraining({ root, signal: controller.signal, onLog: (l) => { events.push(l.event); if (l.event === 'epoch') controller.abort('SIGTERM'); } });
  assert.equal(code, 0);
  assert.deepEqual(events, ['start', 'data', 'epoch', 'stopping', 'calibrated', 'model_saved']);
  await assert.rejects(failure(root), { code: 'ENOENT' });
  assert.ok(await calibration(root));
  // The grace period runs out while calibrating: the best checkpoint is saved uncalibrated, with the stop status.
  const late = await mlRoot('stop-calibrating', hp, labeled);
  const c2 = new AbortController();
  const code2 = await runSageMakerTraining({
    root: late,
    stopGraceMs: 0, onAbandoned,
    signal: c2.signal,
    onProgress: (p) => p.stage === 'calibrate' && !c2.signal.aborted && c2.abort('SIGTERM'),
  });
  assert.equal(code2, 143);
  assert.equal(await failure(late), `stopped by SIGTERM after the last epoch (1 of 1), while calibrating its model, which did not end within 0 s of the signal: calibration was skipped and the uncalibrated best model (epoch 1) is in "${join(late, 'model')}"\n`);
  assert.deepEqual((await readdir(join(late, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
  assert.equal(await calibration(late), undefined);
  // ... or while train still saves the run's model after the last epoch.
  const saving = await mlRoot('stop-saving', hp, labeled);
  const c3 = new AbortController();
  const code3 = await runSageMakerTraining({ root: saving, stopGraceMs: 0, onAbandoned, signal: c3.signal, onLog: (l) => l.event === 'epoch' && c3.abort('SIGTERM') });
  assert.equal(code3, 143);
  assert.equal(await failure(saving), `stopped by SIGTERM after the last epoch (1 of 1), while saving its model, which did not end within 0 s of the signal: calibration was skipped and the uncalibrated best model (epoch 1) is in "${join(saving, 'model')}"\n`);
  assert.equal(await calibration(saving), undefined);
});

test('runSageMakerTrainingUntilSignal: a real SIGTERM stops the job after the epoch in progress, exit code 143', async () => {
  const root = await mlRoot('sigterm', { preset: 'smoke', epochs: '50' }, labeled);
  const script = join(tmp, 'train-child.mts');
  const url = pathToFileURL(join(import.meta.dirname, '..', 'lib', 'sagemaker.ts')).href;
  await writeFile(script, [
    `import { runSageMakerTrainingUntilSignal } from ${JSON.stringify(url)};`,
    'process.exit(await runSageMakerTrainingUntilSignal({ root: process.argv[2], onLog: (l) => process.stdout.write(`${JSON.stringify(l)}\\n`) }));',
  ].join('\n'));
  const child = spawn(process.execPath, ['--import', 'tsx', script, root], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.stdout.on('data', (c: Buffer) => {
    const first = !out.includes('"event":"epoch"');
    out += c.toString('utf8');
    if (first && out.includes('"event":"epoch"')) child.kill('SIGTERM');
  });
  assert.equal(await exited, 143, err);
  const events = out.trim().split('\n').map((l) => (JSON.parse(l) as SageMakerLogLine).event);
  assert.deepEqual(events.filter((e) => e !== 'epoch'), ['start', 'data', 'stopping', 'model_saved', 'stopped']);
  const text = await failure(root);
  assert.match(text, /^stopped by SIGTERM after epoch \d+ of 50: the best model so far \(epoch \d+\) is in "/);
  assert.ok(text.endsWith(`"${join(root, 'model')}"\n`), text);
  assert.deepEqual((await readdir(join(root, 'model'))).sort(), ['model.json', 'pneumotype.json', 'training-thumbnails.u8', 'weights.bin']);
});

test('bad hyperparameters and a missing channel fail with an exact reason in /opt/ml/output/failure', async () => {
  const cases: [Record<string, unknown> | string, (file: string) => string][] = [
    [{ epochs: 'ten' }, (f) => `hyperparameter "epochs" is "ten" in "${f}": expected a whole number from 1 to 10000`],
    [{ epoch: '3' }, (f) => `unknown hyperparameter "epoch" in "${f}": expected preset, model, epochs, image-size, batch-size, seed, learning-rate, optimizer, weight-decay, augment, resume, calibrate`],
    [{ 'weight-decay': '-0.1' }, (f) => `hyperparameter "weight-decay" is "-0.1" in "${f}": expected a number from 0 to 1 (the L2 penalty)`],
    [{ optimizer: 'lbfgs' }, (f) => `hyperparameter "optimizer" is "lbfgs" in "${f}": expected adam | sgd (Nesterov momentum 0.9)`],
    [{ preset: 'huge' }, (f) => `hyperparameter "preset" is "huge" in "${f}": expected smoke | cpu | gpu (tiny = smoke); default $PNEUMOTYPE_PRESET, else as train: gpu with tfjs-node-gpu, else cpu (a resumed run keeps its own)`],
    [{ augment: 'lots' }, (f) => `hyperparameter "augment" is "lots" in "${f}": expected none | basic | traces (default traces, as the CLI)`],
    [{ 'learning-rate': '0' }, (f) => `hyperparameter "learning-rate" is "0" in "${f}": expected a number above 0 and at most 1`],
    [{ 'batch-size': ['8'] }, (f) => `hyperparameter "batch-size" is ["8"] in "${f}": expected a whole number from 1 to 4096`],
    ['{"epochs": "1",', (f) => `"${f}" is not valid JSON (`],
  ];
  for (const [i, [hp, message]] of cases.entries()) {
    const root = await mlRoot(`bad-${i}`, undefined, labeled);
    const file = join(root, 'input', 'config', 'hyperparameters.json');
    await writeFile(file, typeof hp === 'string' ? hp : JSON.stringify(hp));
    assert.equal(await runSageMakerTraining({ root }), 1);
    const text = await failure(root);
    if (typeof hp === 'string') assert.ok(text.startsWith(message(file)), text);
    else assert.equal(text, `${message(file)}\n`);
  }
  const root = await mlRoot('no-channel', { preset: 'smoke' });
  await mkdir(join(root, 'input', 'data', 'validation'), { recursive: true });
  assert.equal(await runSageMakerTraining({ root }), 1);
  assert.equal(
    await failure(root),
    `the "training" channel is missing: "${join(root, 'input', 'data', 'training')}" does not exist (channels: "validation"); ` +
      'give the training job a channel named "training" with the labelled folder (manifest.csv) or the dataset\'s NORMAL/PNEUMONIA folders\n',
  );
  // A channel that an upload stopped part way left: files its manifest lists are missing or cut short.
  const partial = await mlRoot('partial-channel', { preset: 'smoke' }, labeled);
  const channel = join(partial, 'input', 'data', 'training');
  const rows = await readManifest(channel);
  const [gone, cut] = [rows[0]!, rows[1]!];
  await rm(join(channel, gone.file));
  await writeFile(join(channel, cut.file), 'cut');
  assert.equal(await runSageMakerTraining({ root: partial }), 1);
  assert.equal(
    await failure(partial),
    `the "training" channel "${channel}" is incomplete: 2 of the ${rows.length} files its manifest.csv lists are missing or of another size ` +
      `("${gone.file}" is missing; "${cut.file}" has 3 bytes, expected ${cut.bytes}) and it has no _pneumotype-upload.json, which \`pneumotype upload\` writes last; ` +
      'an upload that stopped part way? Run `pneumotype upload` again, then start the job again\n',
  );
  // A channel sharded across instances holds part of the images by design: said so, not reported as an upload cut short.
  const sharded = await mlRoot('sharded-channel', { preset: 'smoke' }, labeled);
  const dataConfig = join(sharded, 'input', 'config', 'inputdataconfig.json');
  await writeFile(dataConfig, JSON.stringify({ training: { TrainingInputMode: 'File', S3DistributionType: 'ShardedByS3Key', RecordWrapperType: 'None' } }));
  assert.equal(await runSageMakerTraining({ root: sharded }), 1);
  assert.equal(
    await failure(sharded),
    `the "training" channel is sharded across instances (S3DistributionType "ShardedByS3Key" in "${dataConfig}"): pneumotype trains on one instance ` +
      'with every image; give the channel S3DataDistributionType "FullyReplicated" (the default)\n',
  );
  // The root comes from PNEUMOTYPE_SM_ROOT when no option names it.
  const envRoot = await mlRoot('env-root', { epochs: '0' });
  const saved = process.env.PNEUMOTYPE_SM_ROOT;
  process.env.PNEUMOTYPE_SM_ROOT = envRoot;
  try {
    assert.equal(await runSageMakerTraining(), 1);
  } finally {
    if (saved === undefined) delete process.env.PNEUMOTYPE_SM_ROOT;
    else process.env.PNEUMOTYPE_SM_ROOT = saved;
  }
  assert.equal(await failure(envRoot), `hyperparameter "epochs" is "0" in "${join(envRoot, 'input', 'config', 'hyperparameters.json')}": expected a whole number from 1 to 10000\n`);
});

test('empty PNEUMOTYPE_SM_ROOT and PNEUMOTYPE_SM_WORK count as unset; relative ones are resolved', async () => {
  assert.equal(sageMakerRoot(undefined, { PNEUMOTYPE_SM_ROOT: '' }), '/opt/ml');
  assert.equal(sageMakerRoot('', {}), '/opt/ml');
  assert.equal(sageMakerRoot(undefined, {}), '/opt/ml');
  assert.equal(sageMakerRoot(undefined, { PNEUMOTYPE_SM_ROOT: 'ml' }), join(process.cwd(), 'ml'));
  assert.equal(sageMakerRoot('/x/ml', { PNEUMOTYPE_SM_ROOT: '/y' }), '/x/ml');
  const saved = { root: process.env.PNEUMOTYPE_SM_ROOT, work: process.env.PNEUMOTYPE_SM_WORK, cwd: process.cwd() };
  const root = await mlRoot('env-relative', { preset: 'smoke' });
  const channel = join(root, 'input', 'data', 'training');
  const missing = `the "training" channel is missing: "${channel}" does not exist (channels: none); ` +
    'give the training job a channel named "training" with the labelled folder (manifest.csv) or the dataset\'s NORMAL/PNEUMONIA folders\n';
  try {
    process.chdir(tmp);
    // A relative root is the folder under the current one, its failure file at an absolute path.
    process.env.PNEUMOTYPE_SM_ROOT = 'env-relative';
    process.env.PNEUMOTYPE_SM_WORK = '';
    const roots: unknown[] = [];
    assert.equal(await runSageMakerTraining({ onLog: (l) => l.event === 'start' && roots.push(l.root) }), 1);
    assert.deepEqual(roots, [root]);
    // Empty PNEUMOTYPE_SM_WORK: the OS temp folder (it was mkdir(''): ENOENT), so the job gets as far as the channel.
    assert.equal(await failure(root), missing);
    process.env.PNEUMOTYPE_SM_WORK = 'scratch';
    assert.equal(await runSageMakerTraining(), 1);
    assert.equal(await failure(root), missing);
    assert.deepEqual(await readdir(join(tmp, 'scratch')), []); // made there, its job folder removed at the end
  } finally {
    process.chdir(saved.cwd);
    for (const [key, value] of [['PNEUMOTYPE_SM_ROOT', saved.root], ['PNEUMOTYPE_SM_WORK', saved.work]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
});

test('parseHyperparameters takes SageMaker strings, JSON numbers, once-more-quoted strings and Python booleans', () => {
  assert.deepEqual(parseHyperparameters({ preset: 'gpu', epochs: '20', 'image-size': 128, 'batch-size': ' 16 ', seed: '0', model: 'MOBILE', optimizer: 'SGD', 'weight-decay': '5e-4', augment: '"traces"', resume: 'False', calibrate: false }), {
    preset: 'gpu',
    config: { model: 'mobile', epochs: 20, imageSize: 128, batchSize: 16, seed: 0, optimizer: 'sgd', weightDecay: 5e-4 },
    augment: 'traces',
    resume: false,
    calibrate: false,
  });
  assert.deepEqual(parseHyperparameters({}, 'hp.json', 'cpu'), { preset: 'cpu', config: {}, augment: 'traces', resume: true, calibrate: true });
  assert.deepEqual(parseHyperparameters({ preset: 'tiny' }), { preset: 'smoke', config: {}, augment: 'traces', resume: true, calibrate: true });
  assert.throws(() => parseHyperparameters([], 'hp.json'), { name: 'ConfigError', message: '"hp.json" is not a JSON object of hyperparameters' });
  assert.throws(() => parseHyperparameters({}, 'hp.json', 'huge'), { name: 'ConfigError', message: 'PNEUMOTYPE_PRESET="huge" is not one of smoke, cpu, gpu' });
});

test('the notebook lifecycle scripts are bash -n clean, use the persistent volume and run the long install in the background', async () => {
  const dir = join(import.meta.dirname, '..', 'sagemaker');
  for (const name of ['on-create.sh', 'on-start.sh']) {
    const path = join(dir, name);
    const r = spawnSync('bash', ['-n', path], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    const text = await readFile(path, 'utf8');
    assert.match(text, /^#!\/bin\/bash\n/);
    assert.ok(text.includes('/home/ec2-user/SageMaker'), `${name} works in the persistent volume`);
    assert.match(text, /sudo -u ec2-user -i <<EOF\nnohup "\$STATE\/setup\.sh" install >> "\$STATE\/setup\.log" 2>&1 &\nEOF/, `${name} installs in the background`);
    assert.match(text, /\nexit 0\n$/, `${name} never fails the instance`);
  }
  // The installer that on-create.sh writes is checked too.
  const create = await readFile(join(dir, 'on-create.sh'), 'utf8');
  const setup = /<<'SETUP'\n([\s\S]*?)\nSETUP\n/.exec(create)?.[1] ?? '';
  assert.ok(setup.includes('nvm install'));
  assert.ok(setup.includes('npm install -g tslab'));
  assert.ok(setup.includes('install --python="$JUPYTER_PYTHON"'));
  assert.ok(setup.includes('/home/ec2-user/anaconda3/envs/JupyterSystemEnv/bin/python'));
  await writeFile(join(tmp, 'setup.sh'), setup);
  const r = spawnSync('bash', ['-n', join(tmp, 'setup.sh')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok((await readFile(join(dir, 'on-start.sh'), 'utf8')).includes('setup.sh" kernel'), 'on-start re-registers the kernel');
  // SageMaker takes a lifecycle script of at most 16,384 characters, base64-encoded.
  for (const name of ['on-create.sh', 'on-start.sh']) {
    const size = Buffer.from(await readFile(join(dir, name))).toString('base64').length;
    assert.ok(size <= 16_384, `${name}: ${size} characters in base64, SageMaker's limit is 16,384`);
  }
});

// The GPU step on a fake instance: a CUDA environment that lacks the libraries tfjs-node-gpu opens is not taken as done
// (the package would load, then train on the CPU without a word), and is made again on the next try.
test('the lifecycle installer refuses a CUDA environment without libcudart and libcudnn, and makes it again', { skip: process.platform === 'win32' && 'bash' }, async () => {
  const create = await readFile(join(import.meta.dirname, '..', 'sagemaker', 'on-create.sh'), 'utf8');
  const setup = /<<'SETUP'\n([\s\S]*?)\nSETUP\n/.exec(create)?.[1] ?? '';
  const dir = join(tmp, 'gpu-step');
  const bin = join(dir, 'bin');
  const state = join(dir, 'persist', '.pneumotype');
  await mkdir(bin, { recursive: true });
  await mkdir(state, { recursive: true });
  await mkdir(join(dir, 'project'), { recursive: true });
  // Only the GPU step runs, with a conda that makes the prefix (its libraries only with FAKE_LIBS=1), an npm that
  // "installs" the package, and a node whose binding check passes.
  const gpuOnly = setup
    .replace(/^CONDA=.*$/m, `CONDA=${JSON.stringify(join(bin, 'conda'))}`)
    .replace(/\ncase "\$\{1:-install\}" in[\s\S]*$/, '\ninstall_gpu; echo "install_gpu: $?"\n');
  assert.notEqual(gpuOnly, setup);
  await writeFile(join(state, 'setup.sh'), gpuOnly);
  await writeFile(join(state, 'config.sh'), `PERSIST=${JSON.stringify(join(dir, 'persist'))}\nSTATE=${JSON.stringify(state)}\nPROJECT_DIR=${JSON.stringify(join(dir, 'project'))}\nPROJECT_REPO=\nINSTALL_GPU=yes\n`);
  await writeFile(join(bin, 'conda'), '#!/bin/bash\nwhile [ $# -gt 0 ] && [ "$1" != -p ]; do shift; done\n[ $# -gt 1 ] || exit 2\nmkdir -p "$2/lib"\n' +
    '[ "${FAKE_LIBS:-}" = 1 ] && touch "$2/lib/libcudart.so.11.0" "$2/lib/libcudnn.so.8"\nexit 0\n', { mode: 0o755 });
  await writeFile(join(bin, 'npm'), '#!/bin/bash\nmkdir -p node_modules/@tensorflow/tfjs-node-gpu\n', { mode: 0o755 });
  await writeFile(join(bin, 'node'), '#!/bin/bash\nexit 0\n', { mode: 0o755 });
  const run = (env: Record<string, string>) =>
    spawnSync('bash', [join(state, 'setup.sh')], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, ...env } });
  const stamps = async () => (await readdir(state)).filter((f) => f.endsWith('.done')).sort();

  const without = run({});
  assert.match(without.stdout, new RegExp(`${join(dir, 'persist', 'envs', 'cuda112', 'lib').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} has no libcudart\\.so\\.11\\.0: the notebooks use the CPU`), without.stdout + without.stderr);
  assert.match(without.stdout, /install_gpu: 1\n$/);
  assert.deepEqual(await stamps(), [], 'neither step is taken as done');
  const withLibs = run({ FAKE_LIBS: '1' });
  assert.match(withLibs.stdout, /install_gpu: 0\n$/, withLibs.stdout + withLibs.stderr);
  assert.deepEqual(await stamps(), ['cuda-env.done', 'tfjs-node-gpu.done']);
  // Libraries gone from an env that was done (a conda clean, say): both steps are undone, so the kernel wrapper no
  // longer picks the gpu preset for a package that would train on the CPU.
  await rm(join(dir, 'persist', 'envs', 'cuda112', 'lib', 'libcudnn.so.8'));
  const gone = run({});
  assert.match(gone.stdout, /has no libcudnn\.so\.8: the notebooks use the CPU/, gone.stdout + gone.stderr);
  assert.match(gone.stdout, /install_gpu: 1\n$/);
  assert.deepEqual(await stamps(), []);
});

test("the container's entry point: SageMaker's serve gets the port and model folder, unless the arguments name their own", { skip: process.platform === 'win32' && 'a POSIX shell script' }, async () => {
  const dockerfile = await readFile(join(import.meta.dirname, '..', 'Dockerfile'), 'utf8');
  const script = /<<'SCRIPT' \/usr\/local\/bin\/pneumotype-entrypoint\n([\s\S]*?)\nSCRIPT\n/.exec(dockerfile)?.[1];
  assert.ok(script, 'the entry point heredoc in the Dockerfile');
  const dir = await mkdtemp(join(tmp, 'entrypoint-'));
  await writeFile(join(dir, 'entrypoint'), script);
  // A `node` that prints the arguments it was given, one per line.
  await writeFile(join(dir, 'node'), '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n', { mode: 0o755 });
  const run = (args: string[], env: Record<string, string> = {}): string[] => {
    const r = spawnSync('sh', [join(dir, 'entrypoint'), ...args], { encoding: 'utf8', env: { PATH: `${dir}:${process.env.PATH ?? ''}`, ...env } });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim().split('\n').slice(1); // without the CLI's path
  };
  assert.deepEqual(run(['serve']), ['serve', '--port', '8080', '--model', '/opt/ml/model']);
  assert.deepEqual(run(['serve'], { SAGEMAKER_BIND_TO_PORT: '9090', PNEUMOTYPE_MODEL_DIR: '/models/a b' }), ['serve', '--port', '9090', '--model', '/models/a b']);
  assert.deepEqual(run(['serve', '--port', '9000', '--max-batch', '4']), ['serve', '--model', '/opt/ml/model', '--port', '9000', '--max-batch', '4']);
  assert.deepEqual(run(['serve', '--model=/m']), ['serve', '--port', '8080', '--model=/m']);
  assert.deepEqual(run(['train']), ['sagemaker', 'train']);
  assert.deepEqual(run(['doctor', '--json']), ['doctor', '--json']);
});
