// The error vocabulary: one base class, one subclass per failing concern, messages that quote the bad value and path.
import { inspect, type InspectOptionsStylized } from 'node:util';

/** Options shared by every pneumotype error. */
export interface ErrorDetails {
  /** The low-level error this one wraps. */
  cause?: unknown;
  /** The file, URL or archive entry the error is about. */
  path?: string;
}

/** The stable, machine-readable `code` of each error class (ConfigError and its UsageError: `ERR_CONFIG`). */
export type ErrorCode =
  | 'ERR_CONFIG' | 'ERR_FETCH' | 'ERR_INTEGRITY' | 'ERR_ARCHIVE' | 'ERR_LABEL' | 'ERR_IMAGE' | 'ERR_CACHE' | 'ERR_OUTPUT'
  | 'ERR_AUGMENT' | 'ERR_BACKEND' | 'ERR_BUSY' | 'ERR_TRAINING' | 'ERR_UPLOAD';

/**
 * Base class of every error pneumotype throws. `code` is stable and machine-readable; `message` is for people and
 * always quotes the offending value and the file, URL or entry it came from.
 *
 * @example
 * try { await fetchDataset({ source: 'v9' }) } catch (e) { if (e instanceof PneumotypeError) console.error(e.code) }
 */
export class PneumotypeError extends Error {
  readonly code: ErrorCode;
  readonly path: string | undefined;
  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.code = code;
    this.path = details.path;
  }

  /**
   * How `console.log`, `util.inspect` and a notebook show it (tslab prints a failed cell's error with
   * `console.error`): `Name [code]: message`, without the stack frames and the wrapped error, which say nothing to
   * someone whose input was refused and pushed the message off the screen. With PNEUMOTYPE_DEBUG set, the stack and
   * the cause as well. `err.stack` and `err.cause` are there either way.
   */
  [inspect.custom](_depth: number, options: InspectOptionsStylized): string {
    const head = `${this.name} [${this.code}]: ${this.message}`;
    if (!process.env.PNEUMOTYPE_DEBUG) return head;
    const frames = (this.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
    const cause = this.cause === undefined ? [] : [`[cause]: ${inspect(this.cause, { ...options, depth: 4 }).replace(/\n/g, '\n  ')}`];
    return [head, ...frames, ...cause].join('\n');
  }
}

/** A bad option, argument or environment value. */
export class ConfigError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_CONFIG', message, details);
  }
}

/** A command line that cannot run as written: an option missing or malformed (the CLI exits with status 2). */
export class UsageError extends ConfigError {}

/** A download that failed: network error, HTTP status, server that changed the file mid-way. */
export class FetchError extends PneumotypeError {
  readonly url: string;
  readonly status: number | undefined;
  constructor(message: string, details: ErrorDetails & { url: string; status?: number }) {
    super('ERR_FETCH', message, { ...details, path: details.path ?? details.url });
    this.url = details.url;
    this.status = details.status;
  }
}

/** Content that does not match what was expected (length, SHA-256, a source that changed). */
export class IntegrityError extends PneumotypeError {
  readonly expected: string;
  readonly actual: string;
  constructor(message: string, details: ErrorDetails & { expected: string; actual: string }) {
    super('ERR_INTEGRITY', message, details);
    this.expected = details.expected;
    this.actual = details.actual;
  }
}

/** A zip archive that is unsafe (path traversal, links, bombs) or broken (CRC, truncation). */
export class ArchiveError extends PneumotypeError {
  readonly entry: string | undefined;
  constructor(message: string, details: ErrorDetails & { entry?: string }) {
    super('ERR_ARCHIVE', message, details);
    this.entry = details.entry;
  }
}

/** File names that do not carry a label, a layout that is not the dataset's, or a source that changed. */
export class LabelError extends PneumotypeError {
  readonly files: readonly string[];
  constructor(message: string, details: ErrorDetails & { files?: readonly string[] } = {}) {
    super('ERR_LABEL', message, details);
    this.files = details.files ?? [];
  }
}

/** An image that cannot be decoded, is truncated, or is too large to decode safely. */
export class ImageError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_IMAGE', message, details);
  }
}

/** A prepared cache that is missing, stale or corrupt. */
export class CacheError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_CACHE', message, details);
  }
}

/**
 * An output that cannot be written: a full disk, a permission, a file where a folder has to go or a folder where a
 * file has to go. The system's error is the cause; what was written before is kept.
 */
export class OutputError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_OUTPUT', message, details);
  }
}

/** Training batches that could not be made: an augmentation worker thread that failed or stopped. */
export class AugmentError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_AUGMENT', message, details);
  }
}

/** Who holds a lock file: its process, machine and start time. */
export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  readonly started: string;
  /**
   * Linux: the kernel's boot id and the process's start time in clock ticks since that boot (/proc), which together
   * tell the process that wrote the lock from a later one given the same id (after a reboot, a container restart).
   */
  readonly boot?: string;
  readonly startTicks?: number;
  /**
   * Linux: the process's PID namespace (`pid:[N]`, /proc/self/ns/pid). Containers on one kernel share the boot id, and
   * may share a host name; their process ids mean nothing to each other.
   */
  readonly pidNs?: string;
}

/** Work that another process is doing right now (the same download, cache or training run): see its lock file. */
export class BusyError extends PneumotypeError {
  /** The other process, when it is another (undefined: this process is already doing it). */
  readonly holder: LockHolder | undefined;
  constructor(message: string, details: ErrorDetails & { holder?: LockHolder } = {}) {
    super('ERR_BUSY', message, details);
    this.holder = details.holder;
  }
}

/** TensorFlow.js backend that cannot be loaded. */
export class BackendError extends PneumotypeError {
  constructor(message: string, details: ErrorDetails = {}) {
    super('ERR_BACKEND', message, details);
  }
}

/** Quotes a value for an error message: strings in double quotes, everything else as JSON. */
export function quote(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint' || (typeof value === 'number' && !Number.isFinite(value))) return `${value}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The longest delay a Node timer keeps: a longer one fires at once (with a warning on stderr). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Checks that an option is a whole number of at least `min`, or throws the project's ConfigError for it.
 *
 * @example checkInteger('batchSize', options.batchSize, 1) // "batchSize 0 is not valid: expected an integer of at least 1"
 */
export function checkInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new ConfigError(`${name} ${quote(value)} is not valid: expected an integer of at least ${min}`);
}

/**
 * An error and the errors it wraps (`cause`), outermost first, a few levels deep: where fetch's "fetch failed" keeps the
 * reason (a refused connection, a certificate).
 *
 * @example causeChain(new Error('a', { cause: new Error('b') })).map(messageOf) // ['a', 'b']
 */
export function causeChain(err: unknown, depth = 5): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && chain.length < depth; e = (e as { cause?: unknown }).cause) {
    chain.push(e);
    if (typeof e !== 'object') break;
  }
  return chain;
}

/** The message of an unknown thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
