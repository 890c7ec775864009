// Integration: the real train split served over loopback HTTP, cut mid-way and resumed, then relabel and prepare.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { openCache, prepareCache } from '../lib/cache.js';
import { batches } from '../lib/dataset.js';
import { fetchDataset } from '../lib/fetch.js';
import type { Progress } from '../lib/progress.js';
import { relabel } from '../lib/relabel.js';
import { loadTf } from '../lib/tf.js';
import { startFileServer, type FileServer } from './helpers/http-server.js';

const REAL_ZIP = resolve('../shared/data/chest_xray_train_224.zip');
const skip = existsSync(REAL_ZIP) ? false : `the real data is not beside the checkout (${REAL_ZIP})`;

let tmp: string;
let server: FileServer;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-integration-'));
  if (!skip) server = await startFileServer({ file: REAL_ZIP, cutAfterBytes: 20_000_000, cutTimes: 1 });
});
after(async () => {
  await server?.close();
  await rm(tmp, { recursive: true, force: true });
});

test('the real train split: download cut and resumed, relabelled with exact counts, cached, one epoch read', { skip }, async () => {
  const events: Progress[] = [];
  const fetched = await fetchDataset({ source: server.url, outDir: join(tmp, 'downloads'), retries: 3, backoffMs: 10, onProgress: (p) => events.push(p) });
  assert.equal(fetched.bytes, (await stat(REAL_ZIP)).size);
  assert.equal(fetched.resumed, true);
  const gets = server.requests.filter((r) => r.method === 'GET');
  assert.ok(gets.some((r) => r.range?.startsWith('bytes=') && r.range !== 'bytes=0-'), `a Range request resumed the download: ${JSON.stringify(gets)}`);
  assert.equal(events.at(-1)?.done, fetched.bytes);

  const labeled = join(tmp, 'labeled');
  const r = await relabel({ from: fetched.path, out: labeled, extractedDir: join(tmp, 'extracted') });
  assert.deepEqual(r.summary.counts, { train: { normal: 1349, bacteria: 2538, virus: 1345, total: 5232 } });
  assert.equal(r.summary.leakage.clean, true);
  assert.deepEqual(r.summary.undecodable, []);
  assert.deepEqual(r.summary.rejected, []);
  assert.equal(r.extract?.files, 5232);

  const prepared = await prepareCache({ labeledDir: labeled, cacheDir: join(tmp, 'cache'), imageSize: 64, valFraction: 0.1, seed: 1 });
  assert.deepEqual(prepared.index.failed, []);
  const cache = await openCache(prepared.dir);
  try {
    const tf = loadTf();
    const val = new Set(prepared.index.images.filter((i) => i.subset === 'val').map((i) => i.patientId));
    const train = new Set(prepared.index.images.filter((i) => i.subset === 'train').map((i) => i.patientId));
    assert.deepEqual([...val].filter((p) => train.has(p)), [], 'no patient on both sides of the validation split');
    const share = prepared.index.images.filter((i) => i.subset === 'val').length / 5232;
    assert.ok(share > 0.08 && share < 0.12, `validation share ${share}`);
    let seen = 0;
    for await (const batch of batches(cache, { subset: 'train', batchSize: 256, seed: 1, epoch: 0 })) {
      assert.deepEqual(batch.xs.shape.slice(1), [64, 64, 1]);
      seen += batch.xs.shape[0];
      tf.dispose([batch.xs, batch.ys]);
    }
    assert.equal(seen, cache.count('train'));
  } finally {
    await cache.close();
  }
});
