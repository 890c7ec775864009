// Group-balanced sample weights and the grouping CSV they come from; a training run that uses them.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { groupBalancedWeights, groupOf, readGroups } from '../lib/balance.js';
import { readManifest } from '../lib/manifest.js';
import { relabel } from '../lib/relabel.js';
import { train } from '../lib/train.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-balance-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const close = (a: readonly number[], b: readonly number[]): void => {
  assert.equal(a.length, b.length);
  a.forEach((v, i) => assert.ok(Math.abs(v - (b[i] ?? Number.NaN)) < 1e-9, `${i}: ${v} vs ${b[i]}`));
};

test('every class weighs the same within its group, every group keeps its share, the mean is 1', () => {
  // Group a: 1 normal, 3 bacteria; group b: 2 normal, 2 virus.
  const labels = [0, 1, 1, 1, 0, 0, 2, 2];
  const groups = ['a', 'a', 'a', 'a', 'b', 'b', 'b', 'b'];
  const w = groupBalancedWeights(labels, groups);
  close(w, [2, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1]);
  const total = (g: string, k: number) => w.filter((_, i) => groups[i] === g && labels[i] === k).reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(total('a', 0) - total('a', 1)) < 1e-9);
  assert.equal(groupBalancedWeights([], []).length, 0);
});

test('a rare class in a big group is capped at maxWeight times the mean', () => {
  const labels = [0, ...Array.from({ length: 99 }, () => 1)];
  const groups = labels.map(() => 'g');
  const raw = groupBalancedWeights(labels, groups, { maxWeight: 100 });
  assert.ok(Math.abs((raw[0] ?? 0) - 50) < 1e-9);
  const capped = groupBalancedWeights(labels, groups, { maxWeight: 5 });
  assert.ok((capped[0] ?? 0) / (capped[1] ?? 1) < 50 && (capped[0] ?? 0) > (capped[1] ?? 0));
  assert.ok(Math.abs(capped.reduce((s, v) => s + v, 0) / capped.length - 1) < 1e-9);
  // The cap holds after the mean is brought back to 1: the rare image at exactly 5 (once, 8.33), the rest share 95.
  assert.ok(Math.abs((capped[0] ?? 0) - 5) < 1e-9, String(capped[0]));
  assert.ok(Math.abs((capped[1] ?? 0) - 95 / 99) < 1e-9);
  const ten = groupBalancedWeights(labels, groups, { maxWeight: 10 });
  assert.ok(Math.max(...ten) <= 10 + 1e-9, String(Math.max(...ten)));
  assert.throws(() => groupBalancedWeights([0], ['a', 'b']), { name: 'ConfigError', message: '1 labels but 2 groups: one group per image expected' });
  assert.throws(() => groupBalancedWeights([0], ['a'], { maxWeight: 0.5 }), { name: 'ConfigError', message: 'maxWeight 0.5 is not a number >= 1' });
});

test('readGroups maps base names to groups and names a missing column', async () => {
  const csv = join(tmp, 'groups.csv');
  await writeFile(csv, 'file,derived_from\nperson1_bacteria_1.jpeg,full-res\nIM-0001-0001.jpeg,resized\n');
  const groups = await readGroups({ csv, column: 'derived_from' });
  assert.equal(groupOf(groups, 'train/bacteria/person1_bacteria_1.jpeg'), 'full-res');
  assert.equal(groupOf(groups, 'IM-0001-0001.jpeg'), 'resized');
  assert.equal(groupOf(groups, 'other.jpeg'), '(not listed)');
  await assert.rejects(readGroups({ csv, column: 'pipeline' }), {
    name: 'ConfigError',
    message: `"${csv}" has no column "pipeline" (columns: file, derived_from)`,
  });
  const noFile = join(tmp, 'nofile.csv');
  await writeFile(noFile, 'name,derived_from\na,b\n');
  await assert.rejects(readGroups({ csv: noFile, column: 'derived_from' }), {
    name: 'ConfigError',
    message: `"${noFile}" has no column "file" (columns: name, derived_from)`,
  });
});

test('train --balance-groups weighs the images by group and records the grouping (not its path) in the card', async () => {
  const labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass: { train: 12, test: 2 } }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
  const rows = await readManifest(labeled);
  const csv = join(tmp, 'pipelines.csv');
  await writeFile(csv, `file,pipeline\n${rows.map((r, i) => `${r.file.split('/').at(-1)},${i % 2 ? 'copy' : 'original'}`).join('\n')}\n`);
  const r = await train({
    data: labeled, out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { epochs: 2 },
    balanceGroups: { csv, column: 'pipeline' },
  });
  assert.equal(r.card.training.balanceGroups, 'pipelines.csv:pipeline');
  assert.ok(Number.isFinite(r.history.at(-1)?.loss ?? Number.NaN));
  const saved = JSON.parse(await readFile(join(r.modelDir, 'pneumotype.json'), 'utf8'));
  assert.equal(saved.training.balanceGroups, 'pipelines.csv:pipeline');
});
