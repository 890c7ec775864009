// Worker thread of lib/dataset.ts: augments one batch of pixels at a time, so the main thread can train meanwhile.
import { parentPort } from 'node:worker_threads';
import { augmentBatch, type CheckedAugment } from './augment.js';

/** A batch to augment: its pixels (transferred, and transferred back), and what to do with them. */
export interface AugmentJob {
  readonly id: number;
  readonly x: Float32Array;
  readonly size: number;
  readonly options: CheckedAugment;
  readonly seed: number;
}

parentPort?.on('message', (job: AugmentJob) => {
  try {
    augmentBatch(job.x, job.size, job.options, job.seed);
    parentPort?.postMessage({ id: job.id, x: job.x }, [job.x.buffer as ArrayBuffer]);
  } catch (err) {
    parentPort?.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) });
  }
});
