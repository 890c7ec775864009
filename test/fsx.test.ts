import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeDirAtomic } from '../lib/checkpoint.js';
import { OutputError } from '../lib/errors.js';
import { checkOutputFile, ensureFolder, STRAY_AGE_MS, writeFileAtomic } from '../lib/fsx.js';
import { withSmallDisk } from './helpers/small-disk.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-fsx-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const q = (s: string): string => JSON.stringify(s);

test('an output with a folder in its place, or a file where its folder has to go, is an OutputError naming both', async () => {
  const folder = join(tmp, 'a-folder');
  await mkdir(folder);
  const file = join(tmp, 'a-file');
  await writeFile(file, 'keep me');
  const under = join(file, 'eval.json');

  await assert.rejects(checkOutputFile(folder), { name: 'OutputError', message: `${q(folder)} is a folder: expected the path of a file to write` });
  await assert.rejects(checkOutputFile(join(under, 'deeper.json')), {
    name: 'OutputError',
    message: `${q(join(under, 'deeper.json'))} cannot be written: ${q(file)} is a file, not a folder`,
  });
  await checkOutputFile(join(tmp, 'new', 'eval.json')); // a path whose folders do not exist yet is fine

  await assert.rejects(writeFileAtomic(folder, '{}'), (err: unknown) => {
    assert.ok(err instanceof OutputError);
    assert.match(err.message, new RegExp(`^${q(folder).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} cannot be written: a folder is in its place \\(EISDIR: illegal operation on a directory, rename '.+\\.tmp' -> '.+'\\); give the path of a file$`));
    assert.equal(err.path, folder);
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'EISDIR');
    return true;
  });
  await assert.rejects(writeFileAtomic(under, '{}'), {
    name: 'OutputError',
    message: `${q(under)} cannot be written: ${q(file)} is a file, not a folder (EEXIST: file already exists, mkdir '${file}'); choose another path`,
  });
  await assert.rejects(ensureFolder(join(file, 'run')), {
    name: 'OutputError',
    message: `${q(join(file, 'run'))} cannot be written: ${q(file)} is a file, not a folder (ENOTDIR: not a directory, mkdir '${join(file, 'run')}'); choose another path`,
  });
  assert.equal(await readFile(file, 'utf8'), 'keep me');
  assert.deepEqual((await readdir(tmp)).sort(), ['a-file', 'a-folder'], 'no temporary file left');
  assert.deepEqual(await readdir(folder), []);
});

test('a full disk is an OutputError naming the output, and the file or folder written before is kept (a real 64 KiB tmpfs)', async (t) => {
  const disk = join(tmp, 'small-disk');
  const ran = await withSmallDisk(disk, '64k', async () => {
    const path = join(disk, 'eval.json');
    await writeFileAtomic(path, 'old');
    const big = Buffer.alloc(1024 * 1024, 1);
    await assert.rejects(writeFileAtomic(path, big), (err: unknown) => {
      assert.ok(err instanceof OutputError);
      assert.equal(err.message, `${q(path)} cannot be written: the disk is full (ENOSPC: no space left on device, write); make room and run it again`);
      return true;
    });
    assert.equal(await readFile(path, 'utf8'), 'old');
    assert.deepEqual(await readdir(disk), ['eval.json'], 'no temporary file left');

    const dir = join(disk, 'model');
    await writeDirAtomic(dir, async (d) => writeFile(join(d, 'model.json'), '1'));
    await assert.rejects(writeDirAtomic(dir, async (d) => writeFile(join(d, 'weights.bin'), big)), {
      name: 'OutputError',
      message: `${q(dir)} cannot be written: the disk is full (ENOSPC: no space left on device, write); make room and run it again`,
    });
    assert.deepEqual(await readdir(dir), ['model.json']);
    assert.deepEqual((await readdir(disk)).sort(), ['eval.json', 'model'], 'no swap folder left');
  });
  if (!ran) t.skip('cannot mount a small tmpfs here');
});

test("an atomic write removes what writers no longer running left beside its file long ago, and nothing else", async () => {
  const dir = join(tmp, 'strays');
  await mkdir(dir);
  const path = join(dir, 'eval.json');
  // A process that has ended (its id now free), one that runs, and this one.
  const gone = spawn(process.execPath, ['-e', '']);
  await once(gone, 'exit');
  const running = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    const left = [`eval.json.${gone.pid}.3.tmp`, `eval.json.${running.pid}.0.tmp`, `eval.json.${process.pid}.99.tmp`, 'eval.json.bak.tmp', 'other.json.1.2.tmp'];
    const old = new Date(Date.now() - STRAY_AGE_MS - 60_000);
    for (const name of left) {
      await writeFile(join(dir, name), 'half');
      await utimes(join(dir, name), old, old);
    }
    // A fresh one of a process that runs nowhere here may be another machine's, being written: kept.
    const fresh = `eval.json.${gone.pid}.7.tmp`;
    await writeFile(join(dir, fresh), 'being written');
    // One that cannot be removed (a folder of that name) stays, and the write still succeeds.
    await mkdir(join(dir, `eval.json.${gone.pid}.8.tmp`));
    await utimes(join(dir, `eval.json.${gone.pid}.8.tmp`), old, old);
    await writeFileAtomic(path, '{}');
    assert.deepEqual((await readdir(dir)).sort(), ['eval.json', fresh, `eval.json.${gone.pid}.8.tmp`, ...left.filter((n) => !n.startsWith(`eval.json.${gone.pid}.`))].sort());
  } finally {
    running.kill('SIGKILL');
  }
});
