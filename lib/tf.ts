// The only module that imports TensorFlow.js: picks the backend (GPU, CPU or pure JS) once and hands out `tf`.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { BackendError, quote, messageOf } from './errors.js';

/** The TensorFlow.js API (the union package; tfjs-node and tfjs-node-gpu re-export it with native kernels). */
export type Tf = typeof import('@tensorflow/tfjs');

export type BackendChoice = 'auto' | 'gpu' | 'cpu' | 'js';

/** What was picked and why: `pneumotype doctor` prints it. */
export interface BackendInfo {
  /** The package that provides `tf`. */
  readonly package: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node' | '@tensorflow/tfjs';
  /** tf.getBackend(): 'tensorflow' for native, 'cpu' for pure JS. */
  readonly backend: string;
  readonly requested: BackendChoice;
  readonly tfjsVersion: string;
  /** libtensorflow version of the native binding, when native. */
  readonly libtensorflowVersion: string | undefined;
  /** An NVIDIA driver is visible on this machine. */
  readonly gpuVisible: boolean;
  /** One line per candidate tried, in order, with the reason it was or was not taken. */
  readonly reasons: readonly string[];
}

const require = createRequire(import.meta.url);
let loaded: { tf: Tf; info: BackendInfo } | undefined;

function gpuVisible(): boolean {
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl');
}

function parseChoice(value: string | undefined): BackendChoice {
  const v = (value ?? 'auto').trim().toLowerCase() || 'auto';
  if (v === 'auto' || v === 'gpu' || v === 'cpu' || v === 'js') return v;
  throw new BackendError(
    `PNEUMOTYPE_BACKEND=${quote(value)} is not a backend: expected one of "auto", "gpu", "cpu", "js"`,
  );
}

function libtensorflowVersion(tf: Tf): string | undefined {
  const versions = (tf as unknown as { version: Record<string, string> }).version;
  const backend = tf.backend() as unknown as { binding?: { TF_Version?: string } };
  return backend.binding?.TF_Version ?? versions['tfjs-node'];
}

/**
 * Loads TensorFlow.js once and returns it. `PNEUMOTYPE_BACKEND` (auto, gpu, cpu, js) or `options.backend` forces a
 * backend; `auto` tries tfjs-node-gpu when a GPU is visible, then tfjs-node, then pure JS with a loud warning.
 *
 * @example const tf = loadTf(); tf.tidy(() => tf.ones([2, 2]).sum().dataSync())
 */
export function loadTf(options: { backend?: BackendChoice } = {}): Tf {
  return loadTfWithInfo(options).tf;
}

/** Like {@link loadTf}, and says what was picked and why. */
export function loadTfWithInfo(options: { backend?: BackendChoice; gpuVisible?: boolean } = {}): { tf: Tf; info: BackendInfo } {
  if (loaded) return loaded;
  const requested = options.backend ?? parseChoice(process.env.PNEUMOTYPE_BACKEND);
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2'; // silence libtensorflow's start-up chatter
  // `gpuVisible` overrides the driver check: a test takes the GPU path on a machine without one.
  const gpu = options.gpuVisible ?? gpuVisible();
  const reasons: string[] = [];
  const candidates: BackendInfo['package'][] =
    requested === 'gpu'
      ? ['@tensorflow/tfjs-node-gpu']
      : requested === 'cpu'
        ? ['@tensorflow/tfjs-node']
        : requested === 'js'
          ? ['@tensorflow/tfjs']
          : ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs'];
  for (const pkg of candidates) {
    if (pkg === '@tensorflow/tfjs-node-gpu' && requested === 'auto' && !gpu) {
      reasons.push(`${pkg}: skipped, no NVIDIA GPU visible`);
      continue;
    }
    let tf: Tf;
    try {
      tf = require(pkg) as Tf;
    } catch (err) {
      const why = messageOf(err).split('\n')[0] ?? '';
      reasons.push(`${pkg}: not usable (${why})`);
      if (requested !== 'auto') {
        throw new BackendError(
          `PNEUMOTYPE_BACKEND=${quote(requested)} asks for ${pkg}, which does not load: ${why}. ` +
            (pkg === '@tensorflow/tfjs-node-gpu'
              ? `It is not a dependency: install it with \`npm install --no-save ${pkg}@4.22.0 && node scripts/setup-tfjs.mjs\`, which needs CUDA 11.2 and cuDNN 8.1 (environment.md), and see \`npx pneumotype doctor\`.`
              : 'Run `npm install` (its postinstall sets native TensorFlow up) and see `npx pneumotype doctor`.'),
          { cause: err },
        );
      }
      continue;
    }
    if (pkg === '@tensorflow/tfjs') {
      tf.setBackend('cpu');
      reasons.push(`${pkg}: loaded (pure JavaScript)`);
      if (requested === 'auto') {
        process.emitWarning(
          'pneumotype is using the pure-JavaScript TensorFlow.js backend: training will be 10-100x slower. ' +
            'Run `npm install` to set up @tensorflow/tfjs-node, and `npx pneumotype doctor` to see why it failed.',
          { code: 'PNEUMOTYPE_PURE_JS' },
        );
      }
    } else {
      reasons.push(`${pkg}: loaded`);
    }
    const info: BackendInfo = {
      package: pkg,
      backend: tf.getBackend(),
      requested,
      tfjsVersion: tf.version.tfjs,
      libtensorflowVersion: pkg === '@tensorflow/tfjs' ? undefined : libtensorflowVersion(tf),
      gpuVisible: gpu,
      reasons,
    };
    loaded = { tf, info };
    return loaded;
  }
  throw new BackendError(`no TensorFlow.js backend loads: ${reasons.join('; ')}`);
}
