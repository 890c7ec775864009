// File-system helpers shared by every step: atomic writes, streaming hashes, existence checks, listings.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * Writes a file atomically: data goes to `PATH.<pid>.<n>.tmp`, is flushed, then renamed over `PATH`, so readers see the
 * old file or the new one, never half of it.
 *
 * @example await writeFileAtomic('data/labeled/summary.json', JSON.stringify(summary, null, 2))
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
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
    throw err;
  }
}
let tmpCounter = 0;

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
