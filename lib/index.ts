// The public API of pneumotype: what notebooks and other programs import.
export * from './config.js';
export * from './errors.js';
export { ProgressTracker, type Progress, type ProgressCallback } from './progress.js';
export { createRng, shuffled, type Rng } from './random.js';
export { loadTf, loadTfWithInfo, type BackendInfo, type BackendChoice, type Tf } from './tf.js';
export { readManifest, writeManifest, type ManifestRow } from './manifest.js';
