// Temperature scaling: the fit on hand-made and synthetic cases, folding into the output layer, and calibrate end to end.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { SymbolicTensor, Tensor } from '@tensorflow/tfjs';
import { calibrateModel, crossFittedFigures, fitTemperature, foldTemperature, temperatureScaled } from '../lib/calibrate.js';
import { evaluateModel, loadModel, predictSplit } from '../lib/evaluate.js';
import { argmax, type Prediction } from '../lib/metrics.js';
import { createRng } from '../lib/random.js';
import { loadTf } from '../lib/tf.js';
import type { ModelCard } from '../lib/train.js';
import { trainFixtureModel } from './helpers/fixture-model.js';
import { assertNoTensorLeak } from './helpers/tf-leaks.js';

const close = (a: number, b: number, tol = 1e-9): void => assert.ok(Math.abs(a - b) <= tol, `${a} is not ${b}`);

let tmp: string;
let labeled: string;
let modelDir: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-calibrate-'));
  ({ labeled, modelDir } = await trainFixtureModel(tmp, { train: 12, test: 2 }));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('temperatureScaled: softmax(log p / T), by hand', () => {
  assert.deepEqual(temperatureScaled([0.7, 0.2, 0.1], 1).map((p) => Math.round(p * 1e12) / 1e12), [0.7, 0.2, 0.1]);
  // T = 2: proportional to the square roots.
  const roots = [0.7, 0.2, 0.1].map(Math.sqrt);
  const sum = roots.reduce((a, b) => a + b, 0);
  temperatureScaled([0.7, 0.2, 0.1], 2).forEach((p, i) => close(p, (roots[i] as number) / sum, 1e-12));
  // A probability of 0 stays (almost) 0 and the order never changes.
  const sharp = temperatureScaled([0.5, 0.5, 0], 0.5);
  close(sharp[0] as number, 0.5, 1e-12);
  assert.ok((sharp[2] as number) < 1e-50);
});

test('fitTemperature finds the temperature that made synthetic labels, and 1 for calibrated ones', () => {
  const rng = createRng(7);
  const sample = (temperature: number, n: number): Prediction[] =>
    Array.from({ length: n }, (_, i) => {
      // The model's logits; the true class is drawn from softmax(logits / temperature): a model overconfident by T.
      const logits = [0, 1, 2].map(() => 4 * (rng() - 0.5));
      const truth = temperatureScaled(temperatureScaled(logits.map(Math.exp), 1), temperature);
      const u = rng();
      const trueIndex = u < (truth[0] as number) ? 0 : u < (truth[0] as number) + (truth[1] as number) ? 1 : 2;
      return { trueIndex, probs: temperatureScaled(logits.map(Math.exp), 1), patientId: `p${i}` };
    });
  const over = fitTemperature(sample(2, 6000));
  assert.ok(Math.abs(over - 2) < 0.15, `overconfident by 2: fitted ${over}`);
  const calibrated = fitTemperature(sample(1, 6000));
  assert.ok(Math.abs(calibrated - 1) < 0.08, `calibrated: fitted ${calibrated}`);
  const timid = fitTemperature(sample(0.5, 6000));
  assert.ok(Math.abs(timid - 0.5) < 0.05, `underconfident: fitted ${timid}`);
  assert.throws(() => fitTemperature([]), { name: 'ConfigError', message: 'no predictions to fit a temperature on: expected at least one' });
  // Bad predictions are named, not fitted to an edge of the range; a temperature must be positive.
  const good: Prediction = { trueIndex: 0, probs: [0.7, 0.2, 0.1], patientId: 'a' };
  assert.throws(() => fitTemperature([good, { ...good, probs: [Number.NaN, 0.5, 0.5], file: 'x.jpeg' }]), (err: Error) =>
    err.name === 'ConfigError' && err.message.startsWith('predictions[1] (file "x.jpeg") '));
  assert.throws(() => fitTemperature([{ ...good, trueIndex: 5 }]), (err: Error) => err.name === 'ConfigError' && err.message.startsWith('predictions[0] '));
  for (const t of [0, -1, Number.NaN]) {
    assert.throws(() => temperatureScaled([0.5, 0.3, 0.2], t), { name: 'ConfigError', message: `temperature ${Number.isNaN(t) ? 'NaN' : t} is not valid: expected a positive number` });
  }
});

test('crossFittedFigures: each half of the patients tempered by the other half\'s fit; none for a single patient', () => {
  const rng = createRng(3);
  const preds = Array.from({ length: 40 }, (_, i) => {
    const t = i % 3;
    const logits = [0, 0, 0].map((_, c) => (c === t ? 3 : 0) + rng());
    const z = logits.map(Math.exp);
    const sum = z.reduce((a, b) => a + b, 0);
    return { trueIndex: t, probs: z.map((v) => v / sum), patientId: `p${i % 10}` };
  });
  const r = crossFittedFigures(preds);
  for (const k of ['ece', 'brier', 'logLoss'] as const) assert.ok(Number.isFinite(r[k]), k);
  // One patient: no other half to fit on, so no figure (before, it fell back on the fit to all images and called that cross-fitted).
  assert.deepEqual(crossFittedFigures(preds.map((p) => ({ ...p, patientId: 'only' }))), { ece: NaN, brier: NaN, logLoss: NaN });
});

test('foldTemperature divides the softmax layer so the model gives the tempered probabilities', async () => {
  const tf = loadTf();
  const loaded = await loadModel(modelDir);
  const xs = tf.randomUniform([3, loaded.card.imageSize, loaded.card.imageSize, 1], 0, 1, 'float32', 5);
  try {
    const before = (tf.tidy(() => loaded.model.predict(xs) as Tensor).arraySync() as number[][]);
    foldTemperature(loaded.model, 1.7);
    const after = (tf.tidy(() => loaded.model.predict(xs) as Tensor).arraySync() as number[][]);
    before.forEach((row, i) => temperatureScaled(row, 1.7).forEach((p, k) => close(after[i]?.[k] ?? NaN, p, 1e-5)));
    await assertNoTensorLeak('foldTemperature', () => foldTemperature(loaded.model, 1));
  } finally {
    xs.dispose();
    loaded.dispose();
  }
  const input = tf.input({ shape: [4] });
  const linear = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 3, name: 'scores' }).apply(input) as SymbolicTensor });
  assert.throws(() => foldTemperature(linear, 2), {
    name: 'ConfigError',
    message: 'the model\'s output layer "scores" is not a softmax Dense layer: a temperature cannot be folded into it',
  });
  assert.throws(() => foldTemperature(linear, 0), { name: 'ConfigError', message: 'temperature 0 is not valid: expected a positive number' });
  linear.dispose();
});

test('calibrate: fits on the validation patients, folds, keeps the predictions and the folder\'s other files, records it', async () => {
  const dir = join(tmp, 'to-calibrate');
  await cp(modelDir, dir, { recursive: true });
  await writeFile(join(dir, 'README.md'), '# a model card\n');
  await writeFile(join(dir, 'evaluation.json'), '{}\n');
  const loadedBefore = await loadModel(dir);
  const { preds: before } = await predictSplit(loadedBefore, { data: labeled, split: 'val' });
  loadedBefore.dispose();

  const r = await calibrateModel({ model: dir, data: labeled });
  assert.equal(r.out, dir);
  assert.equal(r.split, 'val');
  assert.equal(r.images, before.length);
  close(r.temperature, fitTemperature(before), 1e-9);
  assert.ok(r.after.logLoss <= r.before.logLoss + 1e-12, 'the fit lowers the log loss on its own images');
  for (const k of ['ece', 'brier', 'logLoss'] as const) assert.ok(Number.isFinite(r.crossFitted[k]), k);

  const card = JSON.parse(await readFile(join(dir, 'pneumotype.json'), 'utf8')) as ModelCard;
  assert.deepEqual(card.calibration, { temperature: r.temperature, split: r.split, images: r.images, before: r.before, after: r.after, crossFitted: r.crossFitted });
  assert.equal(await readFile(join(dir, 'README.md'), 'utf8'), '# a model card\n', 'other files go along');
  // A model card's README goes along, stale: said so. Every image was read.
  assert.deepEqual(r.failed, []);
  assert.deepEqual(r.warnings, [
    `"${join(dir, 'README.md')}" (the model card) was copied as it was: its figures predate this calibration (temperature ${r.temperature.toFixed(3)}); write it again (scripts/ship-model.ts)`,
    `"${join(dir, 'evaluation.json')}" (the saved evaluation) was copied as it was: of the weights before this calibration; evaluate again ` +
      `(pneumotype evaluate --model ${dir} --data ${labeled} --split val --out ${join(dir, 'evaluation.json')} --predictions ${join(dir, 'predictions.csv')}, ` +
      'with --groups as before; for models/default: npx tsx scripts/ship-model.ts --card-only)',
  ]);

  // The saved model gives the tempered probabilities, the same predictions, and the fitted log loss.
  const loadedAfter = await loadModel(dir);
  const { preds: afterPreds } = await predictSplit(loadedAfter, { data: labeled, split: 'val' });
  loadedAfter.dispose();
  afterPreds.forEach((p, i) => {
    const was = before[i] as Prediction;
    assert.equal(argmax(p.probs), argmax(was.probs), p.file);
    temperatureScaled(was.probs, r.temperature).forEach((q, k) => close(p.probs[k] ?? NaN, q, 1e-5));
  });
  const evaluation = await evaluateModel({ model: dir, data: labeled, split: 'val', bootstrap: 0 });
  close(evaluation.calibration.logLoss.value, r.after.logLoss, 1e-4);

  // Calibrating again composes: the second temperature is about 1, and the card holds the product.
  const twice = join(tmp, 'twice');
  // A second calibration of the folder while the first works (started from its progress) is refused at once, so no
  // temperature is folded twice.
  let second: Promise<unknown> | undefined; // settles to the second call's error
  const again = await calibrateModel({
    model: dir, data: labeled, out: twice,
    onProgress: () => void (second ??= calibrateModel({ model: dir, data: labeled, out: twice }).then(() => undefined, (err: unknown) => err)),
  });
  const refused = (await second) as Error | undefined;
  assert.deepEqual({ name: refused?.name, message: refused?.message }, {
    name: 'BusyError',
    message: `This process is already calibrating into ${JSON.stringify(twice)} (lock file ${JSON.stringify(`${twice}.lock`)}): wait for that call to finish`,
  });
  assert.equal(existsSync(`${twice}.lock`), false, 'the lock is gone');
  close(again.temperature, r.temperature, 1e-3 * r.temperature);
  await assert.rejects(calibrateModel({ model: join(tmp, 'nothing'), data: labeled }), {
    name: 'CacheError',
    message: `the model folder "${join(tmp, 'nothing')}" does not exist: expected a folder that pneumotype train wrote (pneumotype.json, model.json, weights.bin)`,
  });
  // An output that exists and is not a model folder (a dataset, a file) is refused, never replaced.
  const precious = join(tmp, 'precious');
  await mkdir(precious);
  await writeFile(join(precious, 'notes.txt'), 'keep me');
  let progressed = 0;
  await assert.rejects(calibrateModel({ model: dir, data: labeled, out: precious, onProgress: () => void progressed++ }), {
    name: 'ConfigError',
    message: `"${precious}" exists and is not a model folder (no model.json): choose another output folder; nothing was replaced`,
  });
  assert.equal(progressed, 0, 'refused before any image is scored');
  assert.equal(await readFile(join(precious, 'notes.txt'), 'utf8'), 'keep me');
  // In place, a subfolder would be lost with the folder written anew: refused, nothing touched.
  await mkdir(join(dir, 'exports'));
  await writeFile(join(dir, 'exports', 'model.onnx'), 'keep me too');
  await assert.rejects(calibrateModel({ model: dir, data: labeled }), {
    name: 'ConfigError',
    message: `"${dir}" holds "exports", which calibrating in place would drop (the folder is written anew): give --out another folder, or move them out`,
  });
  assert.equal(await readFile(join(dir, 'exports', 'model.onnx'), 'utf8'), 'keep me too');
  await rm(join(dir, 'exports'), { recursive: true });
  // A link to a folder is a folder; a broken link is named before any image is scored.
  await mkdir(join(tmp, 'elsewhere'), { recursive: true });
  await symlink(join(tmp, 'elsewhere'), join(dir, 'linked'));
  await assert.rejects(calibrateModel({ model: dir, data: labeled }), {
    name: 'ConfigError',
    message: `"${dir}" holds "linked", which calibrating in place would drop (the folder is written anew): give --out another folder, or move them out`,
  });
  await rm(join(dir, 'linked'));
  await symlink(join(tmp, 'no-such-notes.txt'), join(dir, 'notes.txt'));
  let scored = false;
  await assert.rejects(calibrateModel({ model: dir, data: labeled, onProgress: () => void (scored = true) }), {
    name: 'ConfigError',
    message: `"${join(dir, 'notes.txt')}" cannot be read (ENOENT: no such file or directory, stat '${join(dir, 'notes.txt')}'): a broken link? Remove or repair it`,
  });
  assert.equal(scored, false, 'named before any image is scored');
  await rm(join(dir, 'notes.txt'));
  // Another model folder given as --out is written anew too: what it holds beyond a model's files is named, nothing
  // is scored or replaced.
  const other = join(tmp, 'other-model');
  await cp(modelDir, other, { recursive: true });
  await mkdir(join(other, 'assets'));
  await writeFile(join(other, 'NOTES.md'), 'mine');
  progressed = 0;
  await assert.rejects(calibrateModel({ model: dir, data: labeled, out: other, onProgress: () => void progressed++ }), {
    name: 'ConfigError',
    message: `"${other}" holds "NOTES.md", "assets", which replacing it would drop (the folder is written anew): give --out another folder, or move them out`,
  });
  assert.equal(progressed, 0, 'refused before any image is scored');
  assert.equal(await readFile(join(other, 'NOTES.md'), 'utf8'), 'mine');
  // A trailing slash (as tab completion writes it) names the same folder: swapped beside it, nothing left inside.
  await rm(join(other, 'assets'), { recursive: true });
  await rm(join(other, 'NOTES.md'));
  const slashed = await calibrateModel({ model: `${dir}/`, data: labeled, out: `${other}/` });
  assert.ok(Number.isFinite(slashed.temperature));
  assert.deepEqual((await readdir(other)).filter((f) => f.startsWith('.') || f.includes('pneumotype-')), []);
  assert.deepEqual((await readdir(tmp)).filter((f) => f.startsWith('other-model')), ['other-model']);
});

test('calibrate leaves an unreadable image out and returns it, as evaluate does', async () => {
  const data = join(tmp, 'labeled-one-bad');
  await cp(labeled, data, { recursive: true });
  const loaded = await loadModel(modelDir);
  const { preds } = await predictSplit(loaded, { data, split: 'val' });
  loaded.dispose();
  const victim = preds[0]?.file ?? '';
  await writeFile(join(data, victim), 'not an image any more');
  const r = await calibrateModel({ model: modelDir, data, out: join(tmp, 'one-bad') });
  assert.equal(r.images, preds.length - 1);
  assert.deepEqual(r.failed.map((f) => f.file), [victim]);
  assert.match(r.failed[0]?.reason ?? '', /^changed since relabel: SHA-256/);
});
