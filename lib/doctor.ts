// Environment diagnosis for `pneumotype doctor`: which TensorFlow.js backend was picked and why, versions, GPU, training engine.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, totalmem, platform, arch } from 'node:os';
import sharp from 'sharp';
import { DEFAULTS, PRESETS, presetAlias, type PresetName } from './config.js';
import { messageOf } from './errors.js';
import { graphBackendProblem } from './graph-train.js';
import { cudaLibraryPaths, loadTfWithInfo, type BackendInfo } from './tf.js';

export interface DoctorReport {
  /** pneumotype's own version (package.json). */
  readonly pneumotype: string;
  readonly node: string;
  readonly platform: string;
  readonly cpu: { readonly model: string; readonly cores: number };
  readonly memoryGiB: number;
  readonly tensorflow: BackendInfo | { readonly error: string };
  readonly installed: Readonly<Record<string, string | null>>;
  readonly sharp: { readonly libvips: string; readonly sharp: string };
  /** nvidia-smi's line per GPU; on Linux, where the loader finds the CUDA 11 runtime that tfjs-node-gpu needs (null: not found). */
  readonly gpu: { readonly nvidiaSmi: string | null; readonly cudaLibraries: Readonly<Record<string, string | null>> };
  /** How `train` runs its steps here by default (graphOps of DEFAULTS, the cpu and gpu presets). */
  readonly training: { readonly engine: 'graph' | 'ops'; readonly note: string };
  readonly env: Readonly<Record<string, string | null>>;
}

const require = createRequire(import.meta.url);

/**
 * pneumotype's own version, from the package.json beside lib/ and dist/.
 *
 * @example pneumotypeVersion() // '0.1.0'
 */
export function pneumotypeVersion(): string {
  return (require('../package.json') as { version: string }).version;
}

function versionOf(pkg: string): string | null {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return null;
  }
}

/**
 * Collects what pneumotype runs on: Node, CPU, memory, the TensorFlow.js backend (with the reasons for the choice),
 * the installed native packages, sharp/libvips versions and any NVIDIA GPU. Loads TensorFlow.js.
 *
 * @example const report = await diagnose(); report.tensorflow
 */
export async function diagnose(): Promise<DoctorReport> {
  let tensorflow: DoctorReport['tensorflow'];
  try {
    tensorflow = loadTfWithInfo().info;
  } catch (err) {
    tensorflow = { error: messageOf(err) };
  }
  const smi = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  let problem: string | undefined = 'error' in tensorflow ? 'TensorFlow.js did not load' : undefined;
  if (problem === undefined) {
    try {
      problem = graphBackendProblem();
    } catch (err) {
      problem = messageOf(err);
    }
  }
  // The preset that PNEUMOTYPE_PRESET names may train op by op (smoke does).
  const named = presetAlias(process.env.PNEUMOTYPE_PRESET);
  const presetOps = named !== undefined && Object.hasOwn(PRESETS, named) && PRESETS[named as PresetName].graphOps === false;
  const training: DoctorReport['training'] = problem !== undefined
    ? { engine: 'ops', note: `op by op (no graph step: ${problem})` }
    : presetOps
      ? { engine: 'ops', note: `op by op (PNEUMOTYPE_PRESET=${named} trains so; --graph runs one TensorFlow graph per step)` }
      : { engine: 'graph', note: `one TensorFlow graph per step (lib/graph-train.ts), stall guard ${DEFAULTS.stallSeconds} s; --eager trains op by op` };
  const pkgs = ['@tensorflow/tfjs', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'sharp', 'yauzl', 'node-fetch'];
  return {
    pneumotype: pneumotypeVersion(),
    node: process.version,
    platform: `${platform()} ${arch()}`,
    cpu: { model: cpus()[0]?.model ?? 'unknown', cores: availableParallelism() },
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    tensorflow,
    installed: Object.fromEntries(pkgs.map((p) => [p, versionOf(p)])),
    sharp: { libvips: sharp.versions.vips, sharp: versionOf('sharp') ?? 'unknown' },
    gpu: {
      nvidiaSmi: smi.status === 0 ? smi.stdout.trim() : null,
      cudaLibraries: Object.fromEntries(Object.entries(cudaLibraryPaths()).map(([name, path]) => [name, path ?? null])),
    },
    training,
    env: Object.fromEntries(
      ['PNEUMOTYPE_BACKEND', 'PNEUMOTYPE_SOURCE', 'PNEUMOTYPE_PRESET', 'CUDA_VISIBLE_DEVICES', 'HTTPS_PROXY'].map((k) => [k, withoutCredentials(process.env[k]) ?? null]),
    ),
  };
}

/**
 * A URL (a proxy's, a source's) without its user name, password and query (a presigned URL's signature): doctor's
 * output is what people paste into bug reports. Anything else comes back as it is.
 *
 * @example withoutCredentials('http://alice:s3cret@proxy:3128') // 'http://***@proxy:3128/'
 */
export function withoutCredentials(value: string | undefined): string | undefined {
  if (value === undefined) return value;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value);
  // A proxy may be given without its scheme (`user:pass@host:3128`): fetch adds http://, and so does this. Only with a
  // colon before the @ (a password): `chest@2024.zip` is a file name.
  if (!scheme && !/^[^/\s@]*:[^/\s@]*@/.test(value)) return value;
  try {
    const url = new URL(scheme ? value : `http://${value}`);
    const user = url.username !== '' || url.password !== '';
    const query = url.search !== '' || url.hash !== '';
    if (!user && !query) return value;
    url.username = '';
    url.password = '';
    url.search = '';
    url.hash = '';
    const shown = user ? url.href.replace('//', '//***@') : url.href;
    return `${scheme ? shown : shown.replace(/^http:\/\//, '')}${query ? '?***' : ''}`;
  } catch {
    // Not a URL after all (a typo in a port, say): the part before the last @ of its authority is masked all the same,
    // and any query; a password must not reach a bug report because a URL was malformed.
    return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/?#\s]*@/i, (_m, s: string | undefined) => `${s ?? ''}***@`).replace(/[?#].*$/, '?***');
  }
}
