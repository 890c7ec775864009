import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { BusyError, PneumotypeError } from '../lib/errors.js';
import { prepareCache } from '../lib/cache.js';
import { withLock } from '../lib/lock.js';
import { STRAY_AGE_MS } from '../lib/fsx.js';
import { relabel } from '../lib/relabel.js';
import { train } from '../lib/train.js';
import { extractZip } from '../lib/zip.js';

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pneumotype-lock-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
const freshLock = (): string => join(root, `w${n++}`, 'out.lock');

/** A node process that waits until killed: a live owner that is not this process. `since`: a time after it started. */
async function sleeper(): Promise<ChildProcess & { pid: number; since: string }> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return Object.assign(child as ChildProcess & { pid: number }, { since: new Date().toISOString() });
}

test('withLock holds the lock file while fn runs (its owner inside) and removes it however fn ends', async () => {
  const lock = freshLock();
  const seen = await withLock(lock, 'testing', async () => JSON.parse(await readFile(lock, 'utf8')) as Record<string, unknown>);
  assert.equal(seen.pid, process.pid);
  assert.equal(seen.host, hostname());
  assert.match(String(seen.started), /^\d{4}-\d\d-\d\dT/);
  await assert.rejects(readFile(lock), { code: 'ENOENT' });
  await assert.rejects(withLock(lock, 'testing', () => Promise.reject(new Error('boom'))), /^Error: boom$/);
  assert.deepEqual(await readdir(join(lock, '..')), [], 'no lock and no temporary file left');
});

test('a second call in the same process is refused while the first holds the lock', async () => {
  const lock = freshLock();
  let release: () => void = () => {};
  let entered: () => void = () => {};
  const inside = new Promise<void>((r) => (entered = r));
  const first = withLock(lock, 'downloading "x.zip"', () => new Promise<void>((r) => {
    release = r;
    entered();
  }));
  // Both while the first is taking the lock and once it holds it (a fixed wait of 20 ms was sometimes neither on a
  // loaded machine: release() then ran before the first call's fn had set it, and the test waited on nothing).
  await assert.rejects(withLock(lock, 'downloading "x.zip"', async () => 0), { name: 'BusyError' });
  await inside;
  await assert.rejects(withLock(lock, 'downloading "x.zip"', async () => 1), (err: unknown) => {
    assert.ok(err instanceof BusyError);
    assert.equal(err.code, 'ERR_BUSY');
    assert.equal(err.path, lock);
    assert.equal(err.message, `This process is already downloading "x.zip" (lock file ${JSON.stringify(lock)}): wait for that call to finish`);
    return true;
  });
  release();
  await first;
  assert.equal(await withLock(lock, 'downloading "x.zip"', async () => 2), 2, 'free again once the first has finished');
});

test('a lock held by another live process is a BusyError naming the process, the work and the file', async () => {
  const lock = freshLock();
  const child = await sleeper();
  try {
    await mkdir(dirname(lock), { recursive: true });
    // The lock file of a live process, as that process would have written it:
    await writeFile(lock, `${JSON.stringify({ pid: child.pid, host: hostname(), started: child.since })}\n`);
    let ran = false;
    await assert.rejects(
      withLock(lock, 'training into "runs/a"', async () => {
        ran = true;
      }),
      {
        name: 'BusyError',
        message:
          `Another process is already training into "runs/a": process ${child.pid} on ${JSON.stringify(hostname())}, since ` +
          `${child.since} (lock file ${JSON.stringify(lock)}); wait for it to finish, or delete the lock file if no such process runs`,
      },
    );
    assert.equal(ran, false);
    assert.equal(JSON.parse(await readFile(lock, 'utf8')).pid, child.pid, "the other process's lock is left alone");
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit').catch(() => {});
  }
});

test('a lock left by a process that no longer runs, or a garbled one, is taken over', async () => {
  const child = await sleeper();
  child.kill('SIGKILL');
  await once(child, 'exit');
  const elevenSecondsAgo = new Date(Date.now() - 11_000);
  for (const content of [JSON.stringify({ pid: child.pid, host: hostname(), started: '2026-11-27T06:00:00.000Z' }), '', '{"pid":']) {
    const lock = freshLock();
    await mkdir(dirname(lock), { recursive: true });
    await writeFile(lock, content);
    // A lock without an owner may be one being written (where there are no hard links): left once 10 s old.
    if (!content.endsWith('}')) {
      await assert.rejects(withLock(lock, 'preparing', async () => 0), {
        name: 'BusyError',
        message: `Cannot take the lock file ${JSON.stringify(lock)} for preparing: another process is writing it (it holds no owner yet); try again in a few seconds`,
      });
      await utimes(lock, elevenSecondsAgo, elevenSecondsAgo);
    }
    // The owner record that process wrote beside the lock before it was killed goes too.
    const left = `${lock}.${child.pid}.0.tmp`;
    await writeFile(left, content);
    const longAgo = new Date(Date.now() - STRAY_AGE_MS - 60_000);
    await utimes(left, longAgo, longAgo);
    assert.equal(await withLock(lock, 'preparing', async () => JSON.parse(await readFile(lock, 'utf8')).pid as number), process.pid);
    await assert.rejects(readFile(lock), { code: 'ENOENT' });
    assert.deepEqual(await readdir(dirname(lock)), [], 'nothing left beside the lock');
  }
});

test("another machine's lock (a shared folder, another container) holds while it is touched, and is taken over after 5 minutes untouched", async () => {
  const lock = freshLock();
  await mkdir(dirname(lock), { recursive: true });
  await writeFile(lock, JSON.stringify({ pid: 999_999_999, host: 'other-host', started: '2026-11-27T06:00:00.000Z' }));
  await assert.rejects(withLock(lock, 'relabelling', async () => {}), {
    name: 'BusyError',
    message:
      'Another process is already relabelling: process 999999999 on "other-host", since 2026-11-27T06:00:00.000Z ' +
      `(lock file ${JSON.stringify(lock)}); wait for it to finish, or delete the lock file if no such process runs`,
  });
  const fourMinutesAgo = new Date(Date.now() - 4 * 60_000);
  await utimes(lock, fourMinutesAgo, fourMinutesAgo);
  await assert.rejects(withLock(lock, 'relabelling', async () => {}), { name: 'BusyError' });
  const sixMinutesAgo = new Date(Date.now() - 6 * 60_000);
  await utimes(lock, sixMinutesAgo, sixMinutesAgo);
  assert.equal(await withLock(lock, 'relabelling', async () => JSON.parse(await readFile(lock, 'utf8')).host as string), hostname());
});

test('a held lock is touched every 30 s (here 20 ms), so that other machines see it alive', async () => {
  const lock = freshLock();
  let release: () => void = () => {};
  let entered: () => void = () => {};
  const inside = new Promise<void>((r) => (entered = r));
  const held = withLock(lock, 'training', () => new Promise<void>((r) => {
    release = r;
    entered();
  }), { heartbeatMs: 20 });
  await inside; // the lock is held and fn runs: release() now ends it
  const longAgo = new Date(Date.now() - 10 * 60_000);
  await utimes(lock, longAgo, longAgo);
  for (let i = 0; i < 100 && (await stat(lock)).mtimeMs < Date.now() - 60_000; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok((await stat(lock)).mtimeMs > Date.now() - 60_000, 'touched by the heartbeat');
  release();
  await held;
});

test('a lock taken over by another process (this one suspended past 5 minutes, say) is its own: neither touched nor removed by the old holder', async () => {
  const lock = freshLock();
  const other = `${JSON.stringify({ pid: 999_999_999, host: 'other-host', started: new Date().toISOString() })}\n`;
  const longAgo = new Date(Date.now() - 10 * 60_000);
  await withLock(lock, 'training', async () => {
    // The taker removes the left lock and makes its own; its clock says it was touched long ago.
    await rm(lock);
    await writeFile(lock, other, { flag: 'wx' });
    await utimes(lock, longAgo, longAgo);
    await new Promise((r) => setTimeout(r, 150));
    assert.ok((await stat(lock)).mtimeMs < Date.now() - 60_000, "the new owner's lock is not touched by the old holder's heartbeat");
  }, { heartbeatMs: 20 });
  assert.equal(await readFile(lock, 'utf8'), other, "the new owner's lock is left in place");
  assert.deepEqual(await readdir(dirname(lock)), ['out.lock']);
  // One removed while held is not made again.
  const gone = freshLock();
  await withLock(gone, 'training', async () => {
    await rm(gone);
    await new Promise((r) => setTimeout(r, 100));
  }, { heartbeatMs: 20 });
  assert.deepEqual(await readdir(dirname(gone)), []);
  // Nor at exit (Ctrl-C in the CLI): a process whose lock was taken over leaves the new owner's.
  const script = join(root, `exit${n++}.mts`);
  await writeFile(script, `import { rm, writeFile } from 'node:fs/promises';\n` +
    `import { withLock } from ${JSON.stringify(join(process.cwd(), 'lib', 'lock.ts'))};\n` +
    `await withLock(${JSON.stringify(lock)}, 'training', async () => {\n` +
    `  await rm(${JSON.stringify(lock)});\n` +
    `  await writeFile(${JSON.stringify(lock)}, ${JSON.stringify(other)});\n` +
    `  process.exit(130);\n` +
    `});\n`);
  await rm(lock);
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'ignore' });
  const [code] = (await once(child, 'exit')) as [number];
  assert.equal(code, 130);
  assert.equal(await readFile(lock, 'utf8'), other, "the new owner's lock is left at exit too");
});

const linuxOnly = { skip: process.platform !== 'linux' && 'Linux only (/proc)' };
test('a lock naming a live process of this machine that is not its writer (its id reused: after a reboot, say) is taken over', linuxOnly, async () => {
  const child = await sleeper();
  try {
    const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const owner = { pid: child.pid, host: hostname(), started: child.since };
    // Another boot whose lock has not been touched for 5 minutes (a reboot since), or the same boot and an earlier
    // process of that id: not the child, so the lock was left.
    const sixMinutesAgo = new Date(Date.now() - 6 * 60_000);
    for (const [what, record] of [['another boot', { ...owner, boot: 'a-boot-before', startTicks }], ['another process', { ...owner, boot, startTicks: startTicks - 1 }]] as const) {
      const lock = freshLock();
      await mkdir(dirname(lock), { recursive: true });
      await writeFile(lock, JSON.stringify(record));
      if (what === 'another boot') await utimes(lock, sixMinutesAgo, sixMinutesAgo);
      assert.equal(await withLock(lock, 'training', async () => JSON.parse(await readFile(lock, 'utf8')).pid as number), process.pid, what);
      await assert.rejects(readFile(lock), { code: 'ENOENT' });
    }
    // Another boot's lock that is still touched: another machine or container with this host name on a shared
    // folder, whose process ids mean nothing here, at work. Held.
    const shared = freshLock();
    await mkdir(dirname(shared), { recursive: true });
    await writeFile(shared, JSON.stringify({ ...owner, pid: 999_999_999, boot: 'another-machine', startTicks: 1 }));
    await assert.rejects(withLock(shared, 'training', async () => 0), { name: 'BusyError' });
    // The child's own record (whatever the clocks say: a lock written 'in 2020' by it is still its own), and a record
    // without the two (an older version's): held.
    for (const record of [{ ...owner, started: '2020-01-01T00:00:00.000Z', boot, startTicks }, owner]) {
      const lock = freshLock();
      await mkdir(dirname(lock), { recursive: true });
      await writeFile(lock, JSON.stringify(record));
      await assert.rejects(withLock(lock, 'training', async () => 0), { name: 'BusyError' });
    }
    // This process's own record carries them, and its PID namespace.
    const mine = freshLock();
    const written = await withLock(mine, 'training', async () => JSON.parse(await readFile(mine, 'utf8')) as Record<string, unknown>);
    assert.equal(written.boot, boot);
    assert.equal(typeof written.startTicks, 'number');
    assert.equal(written.pidNs, await readlink('/proc/self/ns/pid'));
    // Another container on this kernel with this host name (the same boot id), whose PID 1 has this process's id: its
    // lock holds while it is touched, and is taken over once untouched for 5 minutes, as another machine's.
    const container = freshLock();
    await mkdir(dirname(container), { recursive: true });
    await writeFile(container, JSON.stringify({ ...owner, pid: process.pid, boot, startTicks: 1, pidNs: 'pid:[1]' }));
    await assert.rejects(withLock(container, 'training', async () => 0), { name: 'BusyError' });
    await utimes(container, sixMinutesAgo, sixMinutesAgo);
    assert.equal(await withLock(container, 'training', async () => JSON.parse(await readFile(container, 'utf8')).pidNs as string), written.pidNs);
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit').catch(() => {});
  }
});

test('every step that writes a shared output takes its lock first: extract, relabel, train', async () => {
  const child = await sleeper();
  try {
    const base = join(root, `steps${n++}`);
    await mkdir(base, { recursive: true });
    const steps: Array<[string, string, () => Promise<unknown>]> = [
      [join(base, 'extracted'), 'extracting into', () => extractZip({ archive: join(base, 'none.zip'), outDir: join(base, 'extracted') })],
      [join(base, 'labeled'), 'relabelling into', () => relabel({ from: join(base, 'none'), out: join(base, 'labeled') })],
      [join(base, 'runs', 'a'), 'training into', () => train({ data: join(base, 'none'), out: join(base, 'runs', 'a'), preset: 'smoke' })],
    ];
    for (const [dir, what, step] of steps) {
      const lock = `${dir}.lock`;
      await mkdir(dirname(lock), { recursive: true });
      await writeFile(lock, JSON.stringify({ pid: child.pid, host: hostname(), started: child.since }));
      await assert.rejects(step(), {
        name: 'BusyError',
        message:
          `Another process is already ${what} ${JSON.stringify(dir)}: process ${child.pid} on ${JSON.stringify(hostname())}, since ` +
          `${child.since} (lock file ${JSON.stringify(lock)}); wait for it to finish, or delete the lock file if no such process runs`,
      });
      await rm(lock);
      // Without the lock it goes on, and fails on its missing input: our own error naming it, not a lock's (or a bug's).
      await assert.rejects(step(), (err: unknown) => err instanceof PneumotypeError && !(err instanceof BusyError) && err.message.includes(join(base, 'none')), what);
    }
    // SageMaker trains without a lock (lock: false): one training per container, its checkpoints copied to S3 and back.
    const run = join(base, 'runs', 'b');
    await writeFile(`${run}.lock`, JSON.stringify({ pid: child.pid, host: hostname(), started: child.since }));
    await assert.rejects(
      train({ data: join(base, 'none'), out: run, preset: 'smoke', lock: false }),
      (err: unknown) => err instanceof PneumotypeError && !(err instanceof BusyError) && err.message.includes(join(base, 'none')),
    );
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit').catch(() => {});
  }
});

test('prepare waits for another process preparing the same cache (two trainings started together), then goes on', async () => {
  const child = await sleeper();
  const base = join(root, `wait${n++}`);
  const dir = join(base, 'cache', '64');
  await mkdir(dirname(dir), { recursive: true });
  await writeFile(`${dir}.lock`, JSON.stringify({ pid: child.pid, host: hostname(), started: child.since }));
  const notes: string[] = [];
  const prepared = prepareCache({ labeledDir: join(base, 'none'), cacheDir: join(base, 'cache'), imageSize: 64, onProgress: (p) => notes.push(p.message ?? '') });
  const outcome = prepared.then(() => 'done', (err: unknown) => (err instanceof BusyError ? 'busy' : 'went on'));
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(notes, [
    `waiting: Another process is already preparing the cache ${JSON.stringify(dir)}: process ${child.pid} on ${JSON.stringify(hostname())}, ` +
      `since ${child.since} (lock file ${JSON.stringify(`${dir}.lock`)}); wait for it to finish, or delete the lock file if no such process runs`,
  ], 'said once, while waiting');
  child.kill('SIGKILL');
  await once(child, 'exit');
  // The holder is gone: its lock is taken over, and prepare goes on (to fail here on the missing labelled folder).
  assert.equal(await outcome, 'went on');
  // Waiting stops when the signal aborts.
  await writeFile(`${dir}.lock`, JSON.stringify({ pid: process.ppid, host: hostname(), started: new Date().toISOString() }));
  const controller = new AbortController();
  const aborted = prepareCache({ labeledDir: join(base, 'none'), cacheDir: join(base, 'cache'), imageSize: 64, signal: controller.signal });
  setTimeout(() => controller.abort(new Error('stop waiting')), 300);
  await assert.rejects(aborted, /^Error: stop waiting$/);
});

test("a lock with this process's own id that it does not hold (a restarted container's PID 1) is taken over; exit removes held locks", async () => {
  const lock = freshLock();
  await mkdir(dirname(lock), { recursive: true });
  await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), started: '2026-11-27T06:00:00.000Z' }));
  assert.equal(await withLock(lock, 'training', async () => JSON.parse(await readFile(lock, 'utf8')).started !== '2026-11-27T06:00:00.000Z'), true);
  // Ctrl-C in the CLI ends the process at once (process.exit): the locks it held go with it.
  const script = join(root, `exit${n++}.mts`);
  await writeFile(script, `import { withLock } from ${JSON.stringify(join(process.cwd(), 'lib', 'lock.ts'))};\n` +
    `await withLock(${JSON.stringify(lock)}, 'training', async () => { process.exit(130); });\n`);
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'ignore' });
  const [code] = (await once(child, 'exit')) as [number];
  assert.equal(code, 130);
  await assert.rejects(readFile(lock), { code: 'ENOENT' });
});

test('several takers of one left lock at once: exactly one holds it', async () => {
  const child = await sleeper();
  child.kill('SIGKILL');
  await once(child, 'exit');
  for (let round = 0; round < 40; round++) {
    const lock = freshLock();
    await mkdir(dirname(lock), { recursive: true });
    await writeFile(lock, JSON.stringify({ pid: child.pid, host: hostname(), started: '2026-11-27T06:00:00.000Z' }));
    const inside: number[] = [];
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => withLock(lock, 'training', async () => {
        inside.push(i);
        await new Promise((r) => setTimeout(r, 30));
      })),
    );
    assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1, `round ${round}`);
    assert.ok(outcomes.every((o) => o.status === 'fulfilled' || o.reason instanceof BusyError));
    assert.equal(inside.length, 1);
    assert.deepEqual(await readdir(dirname(lock)), [], 'nothing left beside it');
  }
});

test('several takers of one left lock and a takeover marker left by a killed taker: exactly one holds it', async () => {
  const child = await sleeper();
  child.kill('SIGKILL');
  await once(child, 'exit');
  const left = JSON.stringify({ pid: child.pid, host: hostname(), started: '2026-11-27T06:00:00.000Z' });
  const minuteAgo = new Date(Date.now() - 60_000);
  for (let round = 0; round < 40; round++) {
    const lock = freshLock();
    await mkdir(dirname(lock), { recursive: true });
    await writeFile(lock, left);
    await writeFile(`${lock}.takeover`, left);
    await utimes(`${lock}.takeover`, minuteAgo, minuteAgo);
    let inside = 0;
    let most = 0;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, () => withLock(lock, 'training', async () => {
        most = Math.max(most, ++inside);
        await new Promise((r) => setTimeout(r, 30));
        inside--;
      })),
    );
    assert.equal(most, 1, `round ${round}: one at a time`);
    assert.ok(outcomes.some((o) => o.status === 'fulfilled'), `round ${round}`);
    assert.ok(outcomes.every((o) => o.status === 'fulfilled' || o.reason instanceof BusyError));
    assert.deepEqual(await readdir(dirname(lock)), [], 'nothing left beside it');
  }
});

test('with wait, callers that meet on one left lock all get it in turn, none fails', async () => {
  const child = await sleeper();
  child.kill('SIGKILL');
  await once(child, 'exit');
  const lock = freshLock();
  await mkdir(dirname(lock), { recursive: true });
  await writeFile(lock, JSON.stringify({ pid: child.pid, host: hostname(), started: '2026-11-27T06:00:00.000Z' }));
  const order: number[] = [];
  await Promise.all(Array.from({ length: 4 }, (_, i) => withLock(lock, 'preparing', async () => {
    order.push(i);
    await new Promise((r) => setTimeout(r, 20));
  }, { wait: { pollMs: 10 } })));
  assert.equal(order.length, 4);
  await assert.rejects(readFile(lock), { code: 'ENOENT' });
});

test('calls of this process at once on one lock: one holds it, the others are busy, never two inside (no self-takeover)', async () => {
  // Before, a second call that found the file between the first's creating it and holding it read its own process id
  // there, took it for a dead process's lock, and took it over: both ran.
  const path = freshLock();
  let inside = 0;
  let most = 0;
  const work = (): Promise<void> =>
    withLock(path, 'working', async () => {
      inside++;
      most = Math.max(most, inside);
      await new Promise((resolve) => setTimeout(resolve, 50));
      inside--;
    });
  const results = await Promise.allSettled([work(), work(), work()]);
  assert.equal(most, 1);
  assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected', 'rejected']);
  for (const r of results) {
    if (r.status === 'rejected') assert.ok(r.reason instanceof BusyError && r.reason.message === `This process is already working (lock file "${path}"): wait for that call to finish`, String(r.reason));
  }
});
