// Lock files, so that two processes never write the same download, cache or run at once.
import { readFileSync, rmSync } from 'node:fs';
import { link, open, readFile, readlink, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { BusyError, quote, type LockHolder } from './errors.js';
import { ensureFolder, isAlive, removeStrayTemporaries } from './fsx.js';

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
 * longer runs (killed with SIGKILL, say) or whose id another process has had since (after a reboot, say: seen on Linux,
 * from /proc), or, for another machine's (a shared folder, another container), when it has not been touched for 5
 * minutes. A lock that another process has taken over meanwhile (this one suspended past 5 minutes, say) is its new
 * owner's: no longer touched, and not removed, by this call or at exit.
 *
 * @example await withLock('data/downloads/ChestXRay2017.zip.lock', 'downloading ChestXRay2017.zip', () => download())
 */
export async function withLock<T>(path: string, what: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  let holding: Holding;
  for (let waited = false; ; ) {
    try {
      holding = await acquire(path, what);
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
  // Touched while it holds this call's owner record; once it holds another's (taken over) or is gone, left alone.
  const heartbeat = setInterval(() => {
    void touchIfOwn(path, holding.record).then((own) => {
      if (!own) clearInterval(heartbeat);
    });
  }, options.heartbeatMs ?? HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    // The file first (if it still holds this call's owner record), then the record of this process (if it is still this
    // call's): a call of this process in between is told it is busy, and one that takes the lock once the file is gone
    // keeps its own record.
    await removeIfOwn(path, holding.record);
    if (held.get(resolve(path)) === holding) held.delete(resolve(path));
  }
}

/** A lock this process holds: the owner record in its file (a line of JSON; its `started` tells one call from another). */
interface Holding {
  readonly record: string;
}

/**
 * The lock files this process holds (resolved path → the holding call); removed at exit too, as when Ctrl-C ends the
 * CLI, each only if it still holds the call's owner record.
 */
const held = new Map<string, Holding>();
let exitHook = false;

function hold(path: string, record: string): Holding {
  const holding: Holding = { record };
  held.set(resolve(path), holding);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const [p, { record: own }] of held) {
        try {
          if (readFileSync(p, 'utf8') === own) rmSync(p, { force: true });
        } catch {
          // gone already, or unreadable: not this process's to remove
        }
      }
    });
  }
  return holding;
}

async function acquire(path: string, what: string): Promise<Holding> {
  // Another call of this process holding it, or on its way to (between creating the file and holding it, where a
  // second call would read its own id in the file and take it for a dead process's): busy, decided before any await.
  const key = resolve(path);
  if (held.has(key) || claiming.has(key)) {
    throw new BusyError(`This process is already ${what} (lock file ${quote(path)}): wait for that call to finish`, { path });
  }
  claiming.add(key);
  try {
    return await acquireUnclaimed(path, what);
  } finally {
    claiming.delete(key);
  }
}

/** Lock files a call of this process is taking (see acquire). */
const claiming = new Set<string>();

async function acquireUnclaimed(path: string, what: string): Promise<Holding> {
  await ensureFolder(dirname(path), path);
  const pidNs = await ownPidNamespace();
  const me: LockHolder = {
    pid: process.pid, host: hostname(), started: new Date().toISOString(), ...(await processIdentity(process.pid)), ...(pidNs !== undefined ? { pidNs } : {}),
  };
  const record = `${JSON.stringify(me)}\n`;
  // Written whole beside the lock, then linked into place: the lock file never exists without its owner in it.
  const tmp = `${path}.${process.pid}.${lockCounter++}.tmp`;
  await removeStrayTemporaries(path); // those of processes killed while they took this lock
  await writeFile(tmp, record);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await createExclusive(path, tmp, record);
        return hold(path, record);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = await readOwner(path);
      // A lock file that holds no owner yet may be one being written (where the file system has no hard links, it is
      // made empty, then written): busy while it is fresh; unreadable for longer, it was left, and is taken over.
      if (owner === undefined && Date.now() - (await touched(path)) < TAKEOVER_STALE_MS) {
        throw new BusyError(`Cannot take the lock file ${quote(path)} for ${what}: another process is writing it (it holds no owner yet); try again in a few seconds`, { path });
      }
      // Our own id in a lock this process does not hold: left by an earlier process that had the same id (a restarted
      // container's PID 1, say), so taken over like any other dead owner's. Only in our own process namespace: another
      // container's PID 1 has our id too.
      const ownId = owner !== undefined && owner.host === me.host && owner.pid === process.pid && !otherNamespace(owner, me);
      if (owner !== undefined && !ownId && (await mayHold(owner, path, me))) {
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
        createExclusive(mutex, tmp, record).then(() => true, (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          return false;
        });
      let taking = await takeMarker();
      if (!taking && (await dropLeftMarker(mutex, `${mutex}.${process.pid}.${lockCounter++}.left`))) taking = await takeMarker();
      if (!taking) throw racing;
      try {
        if (JSON.stringify(await readOwner(path)) === JSON.stringify(owner)) await rm(path, { force: true });
      } finally {
        await removeIfOwn(mutex, record);
      }
    }
  } finally {
    await rm(tmp, { force: true });
  }
}
let lockCounter = 0;

/**
 * Makes `path` exclusively (EEXIST when it is there), with the owner `record` in it from the start: a hard link to
 * `tmp`, which already holds it; where the file system has no hard links (FAT, some network shares), created and written
 * at once.
 */
async function createExclusive(path: string, tmp: string, record: string): Promise<void> {
  await link(tmp, path).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code === 'EEXIST' || !NO_LINKS.includes(err.code ?? '')) throw err;
    await writeFile(path, record, { flag: 'wx' });
  });
}
/** Error codes of `link` where the file system has no hard links. */
const NO_LINKS = ['EPERM', 'ENOTSUP', 'ENOSYS', 'EOPNOTSUPP'];

/**
 * Removes the lock (or takeover marker) `path` if it still holds `record`, this call's owner record: one that another
 * process has taken over since is its own. (Read, then removed: only a takeover within those microseconds is missed.)
 */
async function removeIfOwn(path: string, record: string): Promise<void> {
  if ((await readFile(path, 'utf8').catch(() => undefined)) === record) await rm(path, { force: true });
}

/**
 * Touches the held lock `path` if it still holds `record`; false when it does not (taken over, or gone), and the
 * heartbeat stops. An error reading it (a network share's hiccup) is tried again at the next beat.
 */
async function touchIfOwn(path: string, record: string): Promise<boolean> {
  let content: string;
  try {
    content = await readFile(path, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
  if (content !== record) return false;
  const now = new Date();
  await utimes(path, now, now).catch(() => {});
  return true;
}

/**
 * Drops the takeover marker `mutex` if a killed taker left it (untouched for TAKEOVER_STALE_MS); true when there is
 * none now. Two takers may judge one marker left at once: it is moved `aside` first, and when it proves to be another
 * taker's, made since in place of the left one, this taker backs off (false). That marker is not put back: its owner
 * may have finished and found no marker to remove meanwhile, and one put back then would stay behind.
 */
async function dropLeftMarker(mutex: string, aside: string): Promise<boolean> {
  let left: { readonly record: string; readonly mtimeMs: number };
  try {
    const file = await open(mutex, 'r');
    try {
      left = { mtimeMs: (await file.stat()).mtimeMs, record: await file.readFile('utf8') };
    } finally {
      await file.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
  if (Date.now() - left.mtimeMs <= TAKEOVER_STALE_MS) return false;
  try {
    await rename(mutex, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true; // another taker dropped it
    throw err;
  }
  try {
    return (await readFile(aside, 'utf8')) === left.record;
  } finally {
    await rm(aside, { force: true });
  }
}

/** When the lock file was last touched (ms since the epoch); 0 when it is gone. */
async function touched(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.mtimeMs ?? 0;
}

async function readOwner(path: string): Promise<LockHolder | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<LockHolder>;
    if (typeof parsed.pid === 'number' && typeof parsed.host === 'string' && typeof parsed.started === 'string') {
      return {
        pid: parsed.pid, host: parsed.host, started: parsed.started,
        ...(typeof parsed.boot === 'string' && typeof parsed.startTicks === 'number' ? { boot: parsed.boot, startTicks: parsed.startTicks } : {}),
        ...(typeof parsed.pidNs === 'string' ? { pidNs: parsed.pidNs } : {}),
      };
    }
  } catch {
    // missing, empty or garbled: treated as stale
  }
  return undefined;
}

/**
 * True when `owner` may still hold the lock `path`: for this machine, while its process runs (and, where /proc tells,
 * is the process that wrote the lock: see processIdentity); for another machine, or another boot, while the lock is
 * touched (within STALE_MS). A lock that records no boot (an older version's, or written without /proc) is judged
 * by its process alone. `me`: the record this process would write (its host and boot), read once per acquire.
 */
async function mayHold(owner: LockHolder, path: string, me: LockHolder): Promise<boolean> {
  const heartbeat = async (): Promise<boolean> => Date.now() - (await touched(path)) < STALE_MS;
  if (owner.host !== me.host) return heartbeat();
  // Both identities known (Linux, and a lock of this version): compared; else the process alone decides.
  const comparable = owner.boot !== undefined && owner.startTicks !== undefined && me.boot !== undefined;
  // Another boot of this host name: a reboot since, or another machine or container named alike on a shared folder,
  // whose process ids mean nothing here: judged by its heartbeat, as another machine's lock.
  if (comparable && me.boot !== owner.boot) return heartbeat();
  // Another PID namespace (another container on this kernel, named alike): its ids mean nothing here either.
  if (otherNamespace(owner, me)) return heartbeat();
  if (!isAlive(owner.pid)) return false;
  // The same boot: the process with that id is the writer only if it started when the writer did (else the id reused).
  const now = comparable ? await processIdentity(owner.pid) : undefined;
  return now === undefined || now.startTicks === owner.startTicks;
}

/**
 * The boot id and the start time in clock ticks of process `pid`, recorded in a lock by its writer, so that a running
 * process with the same id can be told apart (see mayHold). Linux only, from /proc: the boot id
 * (/proc/sys/kernel/random/boot_id) and field 22 of /proc/PID/stat (start time in clock ticks since the boot). No wall
 * clock is compared, so a clock stepped meanwhile (a VM resumed, NTP) changes nothing. Undefined where /proc is not
 * there (macOS) or cannot be read.
 */
async function processIdentity(pid: number): Promise<{ boot: string; startTicks: number } | undefined> {
  if (process.platform !== 'linux') return undefined;
  const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim();
  // The fields after the command name (in parentheses, and it may hold spaces and parentheses) start at field 3.
  const fields = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const startTicks = Number(fields.slice(fields.lastIndexOf(')') + 2).split(' ')[19] ?? NaN);
  return boot !== '' && Number.isSafeInteger(startTicks) ? { boot, startTicks } : undefined;
}

/** True when both records name their PID namespace and the two differ (a lock without one: an older version's). */
function otherNamespace(owner: LockHolder, me: LockHolder): boolean {
  return owner.pidNs !== undefined && me.pidNs !== undefined && owner.pidNs !== me.pidNs;
}

/** This process's PID namespace (`pid:[4026531836]`), Linux only; undefined where /proc does not tell. */
async function ownPidNamespace(): Promise<string | undefined> {
  if (process.platform !== 'linux') return undefined;
  return readlink('/proc/self/ns/pid').catch(() => undefined);
}

