// File-system helpers shared by every step: atomic writes, streaming hashes, existence checks, listings.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { messageOf, OutputError, PneumotypeError, quote } from './errors.js';

/**
 * Writes a file atomically: data goes to `PATH.<pid>.<n>.tmp`, is flushed, then renamed over `PATH`, so readers see the
 * old file or the new one, never half of it. A failure (a full disk, a folder at `PATH`) is an OutputError naming
 * `PATH`, and leaves the old file as it was.
 *
 * @example await writeFileAtomic('data/labeled/summary.json', JSON.stringify(summary, null, 2))
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await ensureFolder(dirname(path), path);
  const tmp = `${path}.${process.pid}.${tmpCounter++}.tmp`;
  try {
    const handle = await open(tmp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw await outputError(path, err);
  }
  await removeStrayTemporaries(path);
}
let tmpCounter = 0;

/**
 * Removes the temporary files `PATH.PID.N.tmp` (of {@link writeFileAtomic}, and of lock files) that processes no longer
 * running left beside `path` (killed mid-write: a Ctrl-C, a SIGKILL): those of no live process here, untouched for
 * STRAY_AGE_MS (a process of another machine or container sharing the folder, whose id means nothing here, writes its
 * temporary file and renames it within milliseconds). Best effort: one that cannot be removed stays.
 */
export async function removeStrayTemporaries(path: string): Promise<void> {
  const base = basename(path);
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(`${base}.`) || !name.endsWith('.tmp')) continue;
    const pid = /^\.(\d+)\.\d+\.tmp$/.exec(name.slice(base.length))?.[1];
    if (pid === undefined || Number(pid) === process.pid || isAlive(Number(pid))) continue;
    const stray = join(dirname(path), name);
    const age = Date.now() - ((await stat(stray).catch(() => undefined))?.mtimeMs ?? Date.now());
    if (age > STRAY_AGE_MS) await rm(stray, { force: true }).catch(() => {});
  }
}
/** How long a temporary file of a writer that runs nowhere here stays untouched before it counts as left. */
export const STRAY_AGE_MS = 5 * 60_000;

/** True when a process with this id runs on this machine (EPERM: it runs as another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates folder `dir` (and its parents) for the output `forPath`; one that cannot be made (a file in the way, a
 * permission) is an OutputError naming the output and what is in the way.
 *
 * @example await ensureFolder('runs/a', 'runs/a/history.json')
 */
export async function ensureFolder(dir: string, forPath: string = dir): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw await outputError(forPath, err, dir);
  }
}

/**
 * Refuses, before any work, an output file that could not be written at `path`: a folder there, or a file where one
 * of its folders has to go. (A permission or a full disk shows only when writing.)
 *
 * @example await checkOutputFile('eval.json') // before scoring 624 images
 */
export async function checkOutputFile(path: string): Promise<void> {
  if ((await stat(path).catch(() => undefined))?.isDirectory()) {
    throw new OutputError(`${quote(path)} is a folder: expected the path of a file to write`, { path });
  }
  const blocker = await fileInTheWay(dirname(path));
  if (blocker !== undefined) {
    throw new OutputError(`${quote(path)} cannot be written: ${quote(blocker)} is a file, not a folder`, { path });
  }
}

/** The nearest existing ancestor of `dir` (itself included) when that is not a folder; undefined when it is one. */
async function fileInTheWay(dir: string): Promise<string | undefined> {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const s = await stat(d).catch(() => undefined);
    if (s) return s.isDirectory() ? undefined : d;
    if (dirname(d) === d) return undefined;
  }
}

/**
 * The OutputError for a failed write of `path` (into `folder`, by default its own): the system's error in words that
 * say what to do, quoted, and as the cause. Any other error (a PneumotypeError, a bug) is returned as it is.
 */
export async function outputError(path: string, err: unknown, folder = dirname(path)): Promise<unknown> {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  // Only the system's errors (ENOSPC, EACCES, ...): ours say what they are already, and a bug stays a bug.
  if (err instanceof PneumotypeError || typeof code !== 'string' || !/^E[A-Z]+$/.test(code)) return err;
  const system = `(${messageOf(err)})`;
  const blocker = code === 'ENOTDIR' || code === 'EEXIST' ? await fileInTheWay(folder) : undefined;
  const [what, advice] =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? ['the disk is full', 'make room and run it again']
      : code === 'EISDIR' || (code === 'EEXIST' && blocker === undefined)
        ? ['a folder is in its place', 'give the path of a file']
        : blocker !== undefined
          ? [`${quote(blocker)} is a file, not a folder`, 'choose another path']
          : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
            ? ['this process may not write there', 'choose a place you can write to']
            : ['', ''];
  const message = what === '' ? `${quote(path)} cannot be written ${system}` : `${quote(path)} cannot be written: ${what} ${system}; ${advice}`;
  return new OutputError(message, { path, cause: err });
}

/**
 * Whether a relative path read from a file (a manifest row, a model.json's weights path) is in fact rooted, here or on
 * Windows: `/x`, or a drive such as `C:x`. Such a path never lies inside the folder it was meant to be relative to.
 *
 * @example isRootedAnywhere('C:weights.bin') // true
 */
export function isRootedAnywhere(path: string): boolean {
  return isAbsolute(path) || /^[A-Za-z]:/.test(path);
}

/** Writes JSON (2-space indented, trailing newline) atomically. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * The JSON in the file at `path`; a missing, unreadable or garbled file is the error `fail` makes of the cause.
 *
 * @example await readJsonFile<ModelCard>(path, (err) => new CacheError(`${path} is damaged`, { cause: err }))
 */
export async function readJsonFile<T>(path: string, fail: (err: unknown) => Error): Promise<T> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    throw fail(err);
  }
}

/** SHA-256 of a whole file, streamed, as lowercase hex. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** SHA-256 of a buffer as lowercase hex. */
export function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Size of a file, or undefined when it does not exist. */
export async function fileSize(path: string): Promise<number | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** True when the path exists (file or folder). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Relative paths (posix separators, sorted) of every file under `root`, following symbolic links to files and to
 * folders (a folder reached twice, through a link cycle or two links, is listed once). A link that leads nowhere
 * is left out and, with `onSkipped`, named with the reason.
 */
export async function listFiles(root: string, options: { onSkipped?: (path: string, reason: string) => void } = {}): Promise<string[]> {
  const files: string[] = [];
  const seen = new Set<string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    const real = await realpath(dir);
    if (seen.has(real)) return;
    seen.add(real);
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const path = rel === '' ? e.name : `${rel}/${e.name}`;
      const kind = e.isSymbolicLink()
        ? await stat(join(dir, e.name)).catch((err: unknown) => {
            const code = (err as NodeJS.ErrnoException).code;
            const reason = code === 'ENOENT' ? 'a symbolic link that leads nowhere' : code === 'ELOOP' ? 'a symbolic link loop' : `a symbolic link that cannot be followed (${code ?? 'unreadable'})`;
            options.onSkipped?.(path, reason);
            return undefined;
          })
        : e;
      if (kind?.isDirectory()) await walk(join(dir, e.name), path);
      else if (kind?.isFile()) files.push(path);
    }
  };
  await walk(root, '');
  return files.sort();
}

/** The nearest folder from `start` up whose package.json is pneumotype's, or undefined. */
export function projectRoot(start: string): string | undefined {
  let dir = resolve(start);
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'pneumotype') return dir;
      } catch {
        // not a readable package.json: keep looking up
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}
