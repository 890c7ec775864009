// Lock files, so that two processes never write the same download, cache or run at once.
import { rmSync } from 'node:fs';
import { link, mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { BusyError, quote, type LockHolder } from './errors.js';

/** Options of {@link withLock}. */
export interface LockOptions {
  /**
   * Wait while another process holds the lock, instead of a BusyError: `onWait` hears the BusyError's message once,
   * the lock is tried again every `pollMs` (default 1000) until it is free or `signal` aborts.
   */
  readonly wait?: { readonly onWait?: (message: string) => void; readonly pollMs?: number; readonly signal?: AbortSignal };
  /** How often the held lock file is touched (default 30 s; tests use less). */
  readonly heartbeatMs?: number;
}

/** How often a held lock file is touched, and how long untouched before another machine's lock counts as left. */
const HEARTBEAT_MS = 30_000;
const STALE_MS = 5 * 60_000;
/** A takeover takes milliseconds: its marker, older than this, was left by a killed taker. */
const TAKEOVER_STALE_MS = 10_000;

/**
 * Runs `fn` while holding the lock file `path` (created exclusively, touched every 30 s, removed afterwards however
 * `fn` ends). Another live process holding it gives a BusyError that names the work, the process and the file (or,
 * with `wait`, a wait until it is free). A lock is taken over when it was left: by a process of this machine that no
 * longer runs (killed with SIGKILL, say), or, for another machine's (a shared folder, another container), when it has
 * not been touched for 5 minutes.
 *
 * @example await withLock('data/downloads/ChestXRay2017.zip.lock', 'downloading ChestXRay2017.zip', () => download())
 */
export async function withLock<T>(path: string, what: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  let token: symbol;
  for (let waited = false; ; ) {
    try {
      token = await acquire(path, what);
      break;
    } catch (err) {
      // Any BusyError waits: a holder at work, or another taker of a left lock (it will hold it, or leave it free).
      if (!options.wait || !(err instanceof BusyError)) throw err;
      if (!waited) options.wait.onWait?.(err.message);
      waited = true;
      const { signal } = options.wait;
      await delay(options.wait.pollMs ?? 1000, undefined, signal ? { signal } : {}).catch(() => signal?.throwIfAborted());
    }
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, options.heartbeatMs ?? HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    // The file first, then the record (if it is still this call's): a call of this process in between is told it is
    // busy, and one that takes the lock once the file is gone keeps its own record.
    await rm(path, { force: true });
    if (held.get(resolve(path)) === token) held.delete(resolve(path));
  }
}

/** The lock files this process holds (resolved path → the holding call); removed at exit too, as when Ctrl-C ends the CLI. */
const held = new Map<string, symbol>();
let exitHook = false;

function hold(path: string): symbol {
  const token = Symbol(path);
  held.set(resolve(path), token);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const p of held.keys()) rmSync(p, { force: true });
    });
  }
  return token;
}

async function acquire(path: string, what: string): Promise<symbol> {
  await mkdir(dirname(path), { recursive: true });
  const me: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  // Written whole beside the lock, then linked into place: the lock file never exists without its owner in it.
  const tmp = `${path}.${process.pid}.${lockCounter++}.tmp`;
  await writeFile(tmp, `${JSON.stringify(me)}\n`);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await createExclusive(path, tmp, me);
        return hold(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (held.has(resolve(path))) {
        throw new BusyError(`This process is already ${what} (lock file ${quote(path)}): wait for that call to finish`, { path });
      }
      const owner = await readOwner(path);
      // Our own id in a lock this process does not hold: left by an earlier process that had the same id (a restarted
      // container's PID 1, say), so taken over like any other dead owner's.
      const ownId = owner !== undefined && owner.host === me.host && owner.pid === process.pid;
      if (owner !== undefined && !ownId && (owner.host === me.host ? isAlive(owner.pid) : Date.now() - (await touched(path)) < STALE_MS)) {
        throw new BusyError(
          `Another process is already ${what}: process ${owner.pid} on ${quote(owner.host)}, since ${owner.started} ` +
            `(lock file ${quote(path)}); wait for it to finish, or delete the lock file if no such process runs`,
          { path, holder: owner },
        );
      }
      const racing = new BusyError(`Cannot take the lock file ${quote(path)} for ${what}: another process keeps taking it`, { path });
      if (attempt > 0) throw racing;
      // Left (a dead process of this machine, another machine's untouched for STALE_MS) or unreadable: taken over, by
      // one taker at a time. The taker holds `PATH.takeover` (made like the lock; one a killed taker left is dropped
      // after TAKEOVER_STALE_MS) and removes the lock only if it still holds the owner judged left, so a lock that
      // another taker has just made is never removed.
      const mutex = `${path}.takeover`;
      const takeMarker = (): Promise<boolean> =>
        createExclusive(mutex, tmp, me).then(() => true, (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          return false;
        });
      let taking = await takeMarker();
      if (!taking && Date.now() - (await touched(mutex)) > TAKEOVER_STALE_MS) {
        await rm(mutex, { force: true }); // a killed taker's
        taking = await takeMarker();
      }
      if (!taking) throw racing;
      try {
        if (JSON.stringify(await readOwner(path)) === JSON.stringify(owner)) await rm(path, { force: true });
      } finally {
        await rm(mutex, { force: true });
      }
    }
  } finally {
    await rm(tmp, { force: true });
  }
}
let lockCounter = 0;

/**
 * Makes `path` exclusively (EEXIST when it is there), with `owner` in it from the start: a hard link to `tmp`, which
 * already holds it; where the file system has no hard links (FAT, some network shares), created and written at once.
 */
async function createExclusive(path: string, tmp: string, owner: LockHolder): Promise<void> {
  await link(tmp, path).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code === 'EEXIST' || !['EPERM', 'ENOTSUP', 'ENOSYS', 'EOPNOTSUPP'].includes(err.code ?? '')) throw err;
    await writeFile(path, `${JSON.stringify(owner)}\n`, { flag: 'wx' });
  });
}

/** When the lock file was last touched (ms since the epoch); 0 when it is gone. */
async function touched(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.mtimeMs ?? 0;
}

async function readOwner(path: string): Promise<LockHolder | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<LockHolder>;
    if (typeof parsed.pid === 'number' && typeof parsed.host === 'string' && typeof parsed.started === 'string') {
      return { pid: parsed.pid, host: parsed.host, started: parsed.started };
    }
  } catch {
    // missing, empty or garbled: treated as stale
  }
  return undefined;
}

/** True when a process with this id runs on this machine (EPERM: it runs as another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
