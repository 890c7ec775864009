import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CACHE_VERSION, cacheDirFor, openCache, prepareCache, type CacheIndex } from '../lib/cache.js';
import type { Label } from '../lib/config.js';
import { CacheError, OutputError, quote } from '../lib/errors.js';
import { sha256 } from '../lib/fsx.js';
import { decodeGray, readImageInfo } from '../lib/images.js';
import { patientGroupedSplit } from '../lib/split.js';
import { readManifest, writeManifest, type ManifestRow } from '../lib/manifest.js';
import type { Progress } from '../lib/progress.js';
import { datasetFiles } from './helpers/fixtures.js';
import { withSmallDisk } from './helpers/small-disk.js';

const SIZE = 16;
let root = '';
let labeled = '';
const q = (s: string): string => JSON.stringify(s);

/** A labelled folder as relabel writes it: DIR/{train,test}/{label}/NAME plus manifest.csv. */
async function writeLabeled(dir: string, options: { train: number; test: number; badImages?: boolean }): Promise<ManifestRow[]> {
  const files = await datasetFiles({ perClass: { train: options.train, test: options.test }, badImages: options.badImages ?? false });
  const rows: ManifestRow[] = [];
  for (const f of files) {
    const [, split, folder, name] = f.path.split('/') as [string, 'train' | 'test', string, string];
    const label: Label = folder === 'NORMAL' ? 'normal' : name.includes('_virus_') ? 'virus' : 'bacteria';
    const patientId = /^(person\d+)_/.exec(name)?.[1] ?? name.replace(/-\d{4}\.jpeg$/, '');
    const file = `${split}/${label}/${name}`;
    await mkdir(join(dir, split, label), { recursive: true });
    await writeFile(join(dir, file), f.data);
    const info = await readImageInfo(f.data).catch(() => ({ width: 0, height: 0, channels: 0 }));
    rows.push({ split, label, file, patientId, bytes: f.data.length, sha256: sha256(f.data), width: info.width, height: info.height, channels: info.channels });
  }
  await writeManifest(dir, rows);
  return rows;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pneumotype-cache-'));
  labeled = join(root, 'labeled');
  await writeLabeled(labeled, { train: 8, test: 3, badImages: true });
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

const strip = (index: CacheIndex): Omit<CacheIndex, 'createdAt'> => {
  const { createdAt: _createdAt, ...rest } = index;
  return rest;
};

test('prepareCache decodes every image once, skips bad ones and carves a patient-grouped validation subset', async () => {
  const events: Progress[] = [];
  const cacheDir = join(root, 'c1');
  const res = await prepareCache({ labeledDir: labeled, cacheDir, imageSize: SIZE, valFraction: 0.25, seed: 3, onProgress: (p) => events.push(p) });
  assert.equal(res.dir, join(cacheDir, String(SIZE)));
  assert.equal(res.dir, cacheDirFor({ cacheDir, imageSize: SIZE }));
  assert.equal(res.reused, false);
  const { index } = res;
  const manifest = await readManifest(labeled);
  assert.equal(index.imageSize, SIZE);
  assert.equal(index.manifestSha256, sha256(await readFile(join(labeled, 'manifest.csv'))));
  assert.deepEqual(index.classes, ['normal', 'bacteria', 'virus']);
  assert.equal(index.splits.train?.count, 24);
  assert.equal(index.splits.test?.count, 9);
  assert.equal((await stat(join(res.dir, 'train.u8'))).size, 24 * SIZE * SIZE);
  assert.equal((await stat(join(res.dir, 'test.u8'))).size, 9 * SIZE * SIZE);
  assert.equal(index.images.length + index.failed.length, manifest.length);

  const path = (f: string): string => join(labeled, f);
  // Each reason is exactly what decodeGray says about the file (its exact texts are tested in images.test.ts).
  const bad = [
    'train/bacteria/person900_bacteria_9001.jpeg', // corrupt
    'train/bacteria/person901_bacteria_9002.jpeg', // truncated
    'train/virus/person902_virus_9003.jpeg', // not an image
  ];
  const expectedFailed = [];
  for (const file of bad) {
    const reason = await decodeGray(path(file), { size: SIZE }).then(
      () => 'decoded',
      (err: unknown) => (err as Error).message,
    );
    expectedFailed.push({ split: 'train', file, reason });
  }
  assert.deepEqual([...index.failed].sort((a, b) => a.file.localeCompare(b.file)), expectedFailed);
  assert.match(expectedFailed[1]?.reason ?? '', / is truncated: /);
  assert.match(expectedFailed[2]?.reason ?? '', /: not a decodable image \(unsupported or unrecognised format\)$/);
  assert.ok(events.every((e) => e.stage === 'prepare' && e.unit === 'images'));
  assert.equal(events.filter((e) => e.message?.startsWith('skipped ')).length, 3);
  assert.equal(events.at(-1)?.done, manifest.length);
  assert.equal(events.at(-1)?.message, `cached 33 images at ${q(res.dir)}, skipped 3`);
  assert.ok(!(await stat(join(res.dir, 'train.u8.part')).catch(() => undefined)), 'no .part left');

  // Subsets: test is test, val comes from train, no patient on both sides, every label in val.
  const subsets = index.images.map((im) => `${im.split}:${im.subset}`);
  assert.ok(subsets.every((s) => s === 'test:test' || s === 'train:train' || s === 'train:val'));
  const trainPatients = new Set(index.images.filter((im) => im.subset === 'train').map((im) => im.patientId));
  const val = index.images.filter((im) => im.subset === 'val');
  assert.ok(val.every((im) => !trainPatients.has(im.patientId)));
  assert.deepEqual(new Set(val.map((im) => im.label)), new Set(['normal', 'bacteria', 'virus']));
  // The validation patients are those `evaluate --split val` carves from the manifest (rows relabel could read), so
  // the truncated image, whose header reads but which does not decode, leaves a hole instead of another split.
  const readable = manifest.filter((row) => row.split === 'train' && row.width > 0);
  assert.ok(readable.some((row) => row.file === bad[1]), 'the truncated image has a readable header');
  const carved = patientGroupedSplit(readable, { valFraction: 0.25, seed: 3 }).val.map((k) => readable[k]?.file ?? '');
  assert.deepEqual(val.map((im) => im.file).sort(), carved.filter((f) => !bad.includes(f)).sort());

  // Every cached row equals a fresh decode, in either read mode.
  for (const preloadBytes of [0, undefined]) {
    const cache = await openCache(res.dir, preloadBytes === undefined ? {} : { preloadBytes });
    try {
      assert.equal(cache.count('train') + cache.count('val'), 24);
      assert.equal(cache.count('test'), 9);
      for (const [i, im] of index.images.entries()) {
        assert.equal(im.offset, index.images.filter((x, k) => k < i && x.split === im.split).length);
        assert.deepEqual(cache.readImage(i), await decodeGray(path(im.file), { size: SIZE }), im.file);
      }
    } finally {
      cache.close();
    }
  }
});

test('an up-to-date cache is reused untouched; a new seed only rewrites the index', async () => {
  const cacheDir = join(root, 'c2');
  const opts = { labeledDir: labeled, cacheDir, imageSize: SIZE, valFraction: 0.25, seed: 3 };
  const first = await prepareCache(opts);
  const u8 = join(first.dir, 'train.u8');
  const before = await stat(u8);
  const indexText = await readFile(join(first.dir, 'index.json'), 'utf8');
  const events: Progress[] = [];
  const again = await prepareCache({ ...opts, onProgress: (p) => events.push(p) });
  assert.equal(again.reused, true);
  assert.deepEqual(again.index, first.index);
  assert.equal(await readFile(join(first.dir, 'index.json'), 'utf8'), indexText);
  assert.equal(events.at(-1)?.message, `the cache at ${q(first.dir)} is up to date`);

  const resplit = await prepareCache({ ...opts, seed: 4 });
  assert.equal(resplit.reused, false);
  assert.equal(resplit.resplit, true);
  assert.equal(resplit.index.seed, 4);
  assert.equal((await stat(u8)).mtimeMs, before.mtimeMs, 'pixels kept');
  assert.deepEqual(
    resplit.index.images.map(({ subset: _s, ...im }) => im),
    first.index.images.map(({ subset: _s, ...im }) => im),
  );
});

test('announceReuse false: a cache found up to date passes in silence, one rebuilt still reports; the note on val rows comes once', async () => {
  const dir = join(root, 'announce');
  const rows = await writeLabeled(dir, { train: 2, test: 1 });
  // A Kaggle-style val/ row in the manifest: not cached, and said so.
  const first = rows[0] as ManifestRow;
  await writeManifest(dir, [...rows, { ...first, split: 'val', file: first.file.replace(/^train\//, 'val/') }]);
  const opts = { labeledDir: dir, cacheDir: join(root, 'c-announce'), imageSize: SIZE, valFraction: 0.25, seed: 3 };
  const messages = async (extra: { announceReuse?: boolean }): Promise<{ reused: boolean; messages: string[] }> => {
    const events: Progress[] = [];
    const r = await prepareCache({ ...opts, ...extra, onProgress: (p) => events.push(p) });
    assert.equal(r.notCached, 1); // in the result too, for the step's own line (pipeline's prepareStep)
    return { reused: r.reused, messages: events.flatMap((e) => (e.message ? [e.message.replace(/"\/.*"/, 'DIR')] : [])) };
  };
  const note = '1 manifest rows of split "val" are not cached: only train and test are';
  assert.deepEqual(await messages({}), { reused: false, messages: [note, 'cached 9 images at DIR'] });
  assert.deepEqual(await messages({ announceReuse: false }), { reused: true, messages: [] });
  assert.deepEqual(await messages({}), { reused: true, messages: [note, 'the cache at DIR is up to date'] });
  const checked: Progress[] = [];
  await prepareCache({ ...opts, onProgress: (p) => checked.push(p) });
  assert.ok(checked.length > 0 && checked.every((e) => e.rate === undefined), 'an up-to-date cache is checked, not decoded: no images/s');
  await truncate(join(opts.cacheDir, String(SIZE), 'train.u8'), 10);
  assert.deepEqual(await messages({ announceReuse: false }), { reused: false, messages: [note, 'cached 9 images at DIR'] });
});

test('a stale cache is rebuilt, never mixed', async () => {
  const dir = join(root, 'stale');
  await writeLabeled(dir, { train: 4, test: 2 });
  const cacheDir = join(root, 'c3');
  const opts = { labeledDir: dir, cacheDir, imageSize: SIZE, valFraction: 0.2, seed: 1 };
  const first = await prepareCache(opts);
  assert.equal(first.index.images.length, 18);

  // The manifest changes (an image dropped): a full rebuild.
  const rows = await readManifest(dir);
  await writeManifest(dir, rows.filter((r) => r.file !== 'test/normal/IM-0100-0001.jpeg'));
  const second = await prepareCache(opts);
  assert.equal(second.reused, false);
  assert.equal(second.resplit, false);
  assert.equal(second.index.images.length, 17);
  assert.equal((await stat(join(second.dir, 'test.u8'))).size, 5 * SIZE * SIZE);

  // A damaged .u8 file: openCache refuses it with an exact message, prepareCache rebuilds.
  const u8 = join(second.dir, 'train.u8');
  await truncate(u8, 100);
  await assert.rejects(openCache(second.dir), (err: unknown) => {
    assert.ok(err instanceof CacheError);
    assert.equal(
      err.message,
      `${q(u8)} is 100 bytes, expected 12 x 16 x 16 = 3072: the cache is incomplete or corrupt; run \`pneumotype prepare\` again`,
    );
    return true;
  });
  const third = await prepareCache(opts);
  assert.equal(third.reused, false);
  assert.equal((await stat(u8)).size, 12 * SIZE * SIZE);
  const cache = await openCache(third.dir);
  cache.close();

  // Only the train split: test.u8 goes away with the old index.
  const trainOnly = await prepareCache({ ...opts, splits: ['train'] });
  assert.deepEqual(Object.keys(trainOnly.index.splits), ['train']);
  assert.ok(trainOnly.index.images.every((im) => im.split === 'train'));
  assert.equal(await stat(join(trainOnly.dir, 'test.u8')).catch(() => 'gone'), 'gone');
});

test('a cache is not reused across versions, verification settings, a split rule it does not follow, or a file that is back', async () => {
  const dir = join(root, 'back');
  const rows = await writeLabeled(dir, { train: 4, test: 2 });
  const opts = { labeledDir: dir, cacheDir: join(root, 'c-back'), imageSize: SIZE, valFraction: 0.2, seed: 1 };
  // A file missing for the moment (not yet synced, say) fails as transient, and is decoded once it is back.
  const file = rows.find((r) => r.split === 'train' && r.label === 'virus')?.file ?? '';
  const gone = join(dir, file);
  const aside = `${gone}.aside`;
  await rename(gone, aside);
  const first = await prepareCache(opts);
  assert.deepEqual(first.index.failed, [{ split: 'train', file, reason: `${q(gone)} is listed in the manifest but missing`, transient: true }]);
  assert.equal((await prepareCache(opts)).reused, true, 'still missing: reused, not rebuilt each time');
  await rename(aside, gone);
  const back = await prepareCache(opts);
  assert.deepEqual([back.reused, back.index.failed.length, back.index.images.length], [false, 0, first.index.images.length + 1]);
  // Made without checking the manifest's SHA-256s: not reused by a prepare that checks them.
  assert.equal((await prepareCache({ ...opts, verify: false })).reused, false);
  assert.equal((await prepareCache(opts)).reused, false);
  // Subsets that today's rule would not carve (an older cache's) are carved again, pixels kept.
  const indexPath = join(first.dir, 'index.json');
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as CacheIndex;
  await writeFile(indexPath, JSON.stringify({ ...index, images: index.images.map((im) => ({ ...im, subset: im.split === 'train' ? 'train' : im.subset })) }));
  const recarved = await prepareCache(opts);
  assert.deepEqual([recarved.reused, recarved.resplit], [false, true]);
  assert.deepEqual(recarved.index.images, index.images);
  // Another version (older decoding): rebuilt.
  await writeFile(indexPath, JSON.stringify({ ...index, version: 1 }));
  assert.deepEqual([(await prepareCache(opts)).reused, (await prepareCache(opts)).reused], [false, true]);
});

test('an interrupted build resumes from its last checkpoint and ends identical to a fresh one', async () => {
  const fresh = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'fresh'), imageSize: SIZE, seed: 9 });
  const cacheDir = join(root, 'c4');
  const opts = { labeledDir: labeled, cacheDir, imageSize: SIZE, seed: 9, chunkRows: 5 };
  const controller = new AbortController();
  await assert.rejects(
    prepareCache({
      ...opts,
      signal: controller.signal,
      onProgress: (p) => {
        // The first bad image (row 9, in the second chunk of 5) reports at once: abort there, after that chunk.
        if (p.done >= 9) controller.abort();
      },
    }),
    (err: unknown) => {
      // The step's own error, as a download's abort is a FetchError: it says how to go on, the abort is its cause.
      assert.ok(err instanceof CacheError, String(err));
      assert.equal(err.message, `preparing the cache ${q(join(cacheDir, String(SIZE)))} was aborted: run it again to continue from its last checkpoint`);
      assert.equal(err.path, join(cacheDir, String(SIZE)));
      assert.equal(err.cause, controller.signal.reason);
      assert.equal((err.cause as Error).name, 'AbortError');
      return true;
    },
  );
  assert.equal(await stat(join(cacheDir, String(SIZE), 'index.json')).catch(() => 'none'), 'none');
  const events: Progress[] = [];
  const resumed = await prepareCache({ ...opts, onProgress: (p) => events.push(p) });
  assert.equal(resumed.resumedRows, 10);
  assert.equal(events.find((e) => e.message?.startsWith('resuming'))?.message, 'resuming train at image 11 of 27');
  assert.deepEqual(strip(resumed.index), strip(fresh.index));
  for (const f of ['train.u8', 'test.u8']) {
    assert.deepEqual(await readFile(join(resumed.dir, f)), await readFile(join(fresh.dir, f)), f);
  }

  // A journal made under other limits is not trusted: the build starts over.
  const other = join(root, 'c5');
  const c2 = new AbortController();
  await assert.rejects(
    prepareCache({ ...opts, cacheDir: other, signal: c2.signal, onProgress: (p) => p.done >= 5 && c2.abort() }),
    { name: 'CacheError', message: `preparing the cache ${q(join(other, String(SIZE)))} was aborted: run it again to continue from its last checkpoint` },
  );
  const restarted = await prepareCache({ ...opts, cacheDir: other, maxInputPixels: 1_000_000 });
  assert.equal(restarted.resumedRows, 0);
  assert.deepEqual(strip({ ...restarted.index, maxInputPixels: fresh.index.maxInputPixels }), strip(fresh.index));
});

test('openCache reports a missing, broken or foreign index, and bad reads', async () => {
  const empty = join(root, 'nothing');
  await assert.rejects(openCache(empty), {
    name: 'CacheError',
    message: `no prepared cache at ${q(join(empty, 'index.json'))}: run \`pneumotype prepare\` first`,
  });
  const broken = join(root, 'broken');
  await mkdir(broken, { recursive: true });
  await writeFile(join(broken, 'index.json'), '{"version": 1,');
  await assert.rejects(openCache(broken), (err: unknown) => {
    assert.ok(err instanceof CacheError);
    assert.match(err.message, /^".*index\.json" is not valid JSON \(.+\): run `pneumotype prepare` again$/);
    return true;
  });
  await writeFile(join(broken, 'index.json'), '{"version": 99}');
  await assert.rejects(openCache(broken), {
    message: `${q(join(broken, 'index.json'))} has version 99, expected 4: run \`pneumotype prepare\` again`,
  });
  await writeFile(join(broken, 'index.json'), `{"version": ${CACHE_VERSION}, "imageSize": 16, "splits": {}}`);
  await assert.rejects(openCache(broken), {
    message: `${q(join(broken, 'index.json'))} is not a cache index: missing images, failed or splits; run \`pneumotype prepare\` again`,
  });

  const { dir } = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'c1'), imageSize: SIZE, valFraction: 0.25, seed: 3 });
  await rm(join(dir, 'test.u8'));
  await assert.rejects(openCache(dir), {
    message: `${q(join(dir, 'test.u8'))} is missing: the cache is incomplete; run \`pneumotype prepare\` again`,
  });
  const again = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'c1'), imageSize: SIZE, valFraction: 0.25, seed: 3 });
  assert.equal(again.reused, false);
  const cache = await openCache(dir);
  assert.throws(() => cache.readImage(1000), {
    name: 'CacheError',
    message: `image 1000 is not in the cache at ${q(dir)}: expected 0 to 32`,
  });
  cache.close();
  assert.throws(() => cache.readImage(0), { message: `the cache at ${q(dir)} is closed` });
});

test('openCache closes the splits it opened when a later one fails to open', { skip: !existsSync('/proc/self/fd') && 'needs /proc/self/fd' }, async () => {
  const { dir } = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'fds'), imageSize: SIZE, valFraction: 0.25, seed: 3 });
  // The process runs out of file handles (EMFILE) after train.u8 opens: the fault is injected into node:fs itself, since
  // no file that passes the index's checks fails to open except in a race.
  const fs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
  const realOpenSync = fs.openSync;
  let opens = 0;
  fs.openSync = ((...args: Parameters<typeof realOpenSync>) => {
    opens += 1;
    if (opens === 2) throw Object.assign(new Error(`EMFILE: too many open files, open '${String(args[0])}'`), { code: 'EMFILE' });
    return realOpenSync(...args);
  }) as typeof realOpenSync;
  syncBuiltinESMExports();
  const openFds = (): number => readdirSync('/proc/self/fd').length;
  const before = openFds();
  try {
    await assert.rejects(openCache(dir, { preloadBytes: 0, pixelsChecked: true }), {
      name: 'CacheError',
      message: `${q(join(dir, 'test.u8'))} cannot be opened (EMFILE: too many open files, open '${join(dir, 'test.u8')}'): run \`pneumotype prepare\` again`,
    });
  } finally {
    fs.openSync = realOpenSync;
    syncBuiltinESMExports();
  }
  assert.equal(opens, 2);
  assert.equal(openFds(), before, 'train.u8\'s handle is closed again');
});

test('a full disk while preparing is an OutputError naming the file it could not write (a real tmpfs)', async (t) => {
  const disk = join(root, 'small-disk');
  const ran = await withSmallDisk(disk, '48k', async () => {
    // 64 x 64 bytes an image: the train split's 30 images need 120 KiB.
    await assert.rejects(prepareCache({ labeledDir: labeled, cacheDir: disk, imageSize: 64, valFraction: 0.25, seed: 3, concurrency: 1 }), (err: unknown) => {
      assert.ok(err instanceof OutputError, String(err));
      // The pixels or the journal that vouches for them, whichever met the full disk first.
      const file = /^"(.+)" cannot be written: the disk is full \(ENOSPC: no space left on device, write\); make room and run it again$/.exec(err.message)?.[1];
      assert.ok(file === join(disk, '64', 'train.u8.part') || file === join(disk, '64', 'train.journal.json'), err.message);
      return true;
    });
  });
  if (!ran) t.skip('cannot mount a small tmpfs here');
});

test('prepareCache records the SHA-256 of each .u8 file in index.json', async () => {
  const { dir, index } = await prepareCache({ labeledDir: labeled, cacheDir: join(root, 'h1'), imageSize: SIZE, valFraction: 0.25, seed: 3 });
  assert.deepEqual(Object.keys(index.splits), ['train', 'test']);
  for (const split of ['train', 'test'] as const) {
    const info = index.splits[split];
    assert.match(info?.sha256 ?? '', /^[0-9a-f]{64}$/, split);
    assert.equal(info?.sha256, sha256(await readFile(join(dir, `${split}.u8`))), split);
  }
  const written = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as CacheIndex;
  assert.deepEqual(written.splits, index.splits);
});

test('a .u8 file damaged at the same size is refused by openCache and rebuilt by prepareCache', async () => {
  const opts = { labeledDir: labeled, cacheDir: join(root, 'h2'), imageSize: SIZE, valFraction: 0.25, seed: 3 };
  const first = await prepareCache(opts);
  const u8 = join(first.dir, 'train.u8');
  const original = await readFile(u8);
  const damaged = Buffer.from(original);
  damaged[1000] = (damaged[1000] ?? 0) ^ 0xff;
  await writeFile(u8, damaged);
  assert.equal((await stat(u8)).size, original.length);
  const expected = first.index.splits.train?.sha256 ?? '';
  for (const preloadBytes of [0, undefined]) {
    await assert.rejects(openCache(first.dir, preloadBytes === undefined ? {} : { preloadBytes }), (err: unknown) => {
      assert.ok(err instanceof CacheError);
      assert.equal(
        err.message,
        `${q(u8)} does not match index.json (SHA-256 ${sha256(damaged).slice(0, 12)}…, index.json says ${expected.slice(0, 12)}…): ` +
          'the cache is corrupt; run `pneumotype prepare` again',
      );
      assert.equal(err.path, u8);
      return true;
    });
  }

  const rebuilt = await prepareCache(opts);
  assert.equal(rebuilt.reused, false);
  assert.equal(rebuilt.resplit, false);
  assert.deepEqual(strip(rebuilt.index), strip(first.index));
  assert.deepEqual(await readFile(u8), original);
  const cache = await openCache(rebuilt.dir);
  cache.close();
  assert.equal((await prepareCache(opts)).reused, true);

  // A new seed over damaged pixels is no mere resplit either: the pixels are rebuilt.
  await writeFile(u8, damaged);
  const reseeded = await prepareCache({ ...opts, seed: 4 });
  assert.equal(reseeded.resplit, false);
  assert.equal(reseeded.reused, false);
  assert.deepEqual(await readFile(u8), original);
});

test('an index written without SHA-256s (an older cache) still opens and is reused; a malformed one is refused', async () => {
  const opts = { labeledDir: labeled, cacheDir: join(root, 'h3'), imageSize: SIZE, valFraction: 0.25, seed: 3 };
  const { dir } = await prepareCache(opts);
  const indexPath = join(dir, 'index.json');
  const raw = JSON.parse(await readFile(indexPath, 'utf8')) as { splits: Record<string, { sha256?: string }> };
  for (const info of Object.values(raw.splits)) delete info.sha256;
  await writeFile(indexPath, `${JSON.stringify(raw, null, 2)}\n`);
  const cache = await openCache(dir);
  try {
    assert.equal(cache.index.splits.train?.sha256, undefined);
    assert.equal(cache.count('test'), 9);
  } finally {
    cache.close();
  }
  const again = await prepareCache(opts);
  assert.equal(again.reused, true);
  assert.equal(again.index.splits.train?.sha256, undefined);

  (raw.splits.train as { sha256?: string }).sha256 = 'not-a-hash';
  await writeFile(indexPath, `${JSON.stringify(raw, null, 2)}\n`);
  await assert.rejects(openCache(dir), {
    name: 'CacheError',
    message: `${q(indexPath)} is not a cache index: split "train" is malformed; run \`pneumotype prepare\` again`,
  });
});

test('a labelled folder none of whose images decodes is an error, not an empty cache that passes for done', async () => {
  const dir = join(root, 'all-bad');
  const rows = await writeLabeled(dir, { train: 1, test: 0 });
  for (const row of rows) await writeFile(join(dir, row.file), row.file.endsWith('.jpeg') ? Buffer.alloc(row.bytes, 0x2a) : 'x');
  // The manifest still matches the files' sizes; their bytes are not images.
  const cacheDir = join(root, 'all-bad-cache');
  await assert.rejects(prepareCache({ labeledDir: dir, cacheDir, imageSize: 16, verify: false }), (err: unknown) => {
    assert.ok(err instanceof CacheError);
    assert.match(err.message, new RegExp(`^none of the ${rows.length} images of ${quote(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} could be decoded \\(the first: .+\\): nothing to cache$`));
    return true;
  });
  assert.equal(existsSync(join(cacheDir, '16', 'index.json')), false);
});
