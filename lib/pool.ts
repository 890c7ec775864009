// Bounded concurrency: a map with at most N promises in flight (results in input order), or at most N calls at once.
import { checkInteger } from './errors.js';

/**
 * Runs `fn` over `items` with at most `limit` calls in flight; results come back in input order. After the first
 * failure (or once `signal` aborts) no new call starts; the calls in flight finish, then the first error is thrown.
 * A `limit` that is not a whole number of at least 1 (NaN, 0, 2.5) is a ConfigError naming it as `concurrency`.
 *
 * @example const sizes = await mapPool(files, 2, async (f) => (await stat(f)).size)
 */
export async function mapPool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<R[]> {
  checkInteger('concurrency', limit, 1);
  const out = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined && !signal?.aborted) {
      const i = next++;
      try {
        out[i] = await fn(items[i] as T, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.error;
  signal?.throwIfAborted();
  return out;
}

/**
 * Runs at most `limit` calls of the function it returns at once; the others wait their turn, in order. A call that
 * throws frees its slot too.
 *
 * @example const decoding = slots(4); const pixels = await decoding(() => decodeGray(body, { size: 128 }))
 */
export function slots(limit: number): (<T>(fn: () => Promise<T>) => Promise<T>) & { readonly limit: number } {
  let active = 0;
  const waiting: (() => void)[] = [];
  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active < limit) active++;
    else await new Promise<void>((take) => waiting.push(take)); // a finished call hands its slot over
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
  return Object.assign(run, { limit });
}
