// The only module that imports TensorFlow.js: picks the backend (GPU, CPU or pure JS) once and hands out `tf`.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, join } from 'node:path';
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
  /** An NVIDIA GPU is visible on this machine (the driver on Linux, or WSL2's /dev/dxg). */
  readonly gpuVisible: boolean;
  /** One line per candidate tried, in order, with the reason it was or was not taken. */
  readonly reasons: readonly string[];
}

const require = createRequire(import.meta.url);
let loaded: { tf: Tf; info: BackendInfo } | undefined;

/** An NVIDIA driver on Linux, or WSL2's GPU device (setup-tfjs.mjs asks nvidia-smi as well). */
function gpuVisible(): boolean {
  return existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl') || existsSync('/dev/dxg');
}

/**
 * The CUDA libraries that libtensorflow-gpu 2.9.1 (tfjs-node-gpu 4.22, built for CUDA 11.2 and cuDNN 8) opens when it
 * starts: the runtime, cuDNN and the math libraries its GPU kernels call. They are not linked in: with any one of them
 * missing ("Cannot dlopen some GPU libraries") the binding loads all the same and TensorFlow quietly runs on the CPU.
 */
export const CUDA_LIBRARIES = [
  'libcudart.so.11.0', 'libcudnn.so.8', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10', 'libcurand.so.10', 'libcusolver.so.11', 'libcusparse.so.11',
] as const;

/** Where the dynamic loader looks, in its order: what `findLibraries` searches. */
export interface LibrarySearch {
  /** LD_LIBRARY_PATH. */
  readonly ldLibraryPath: string | undefined;
  /** `ldconfig -p` output (the linker cache), or '' when it cannot be read. */
  readonly ldconfig: string;
  readonly exists: (path: string) => boolean;
}

const DEFAULT_LIBRARY_DIRS = ['/lib', '/usr/lib', '/lib64', '/usr/lib64', '/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu'];

/**
 * Where the dynamic loader would find each library (LD_LIBRARY_PATH, then the linker cache, then the default folders),
 * or undefined.
 *
 * @example findLibraries(['libcudnn.so.8'], { ldLibraryPath: '/opt/cuda/lib', ldconfig: '', exists: existsSync })
 */
export function findLibraries(names: readonly string[], search: LibrarySearch): Record<string, string | undefined> {
  const dirs = (search.ldLibraryPath ?? '').split(delimiter).filter((d) => d !== '');
  const cached = new Map<string, string>();
  for (const m of search.ldconfig.matchAll(/^\s*(\S+) \(([^)]*)\) => (\S+)\s*$/gm)) {
    const [, name, flags, path] = m;
    if (name !== undefined && path !== undefined && !cached.has(name) && (process.arch !== 'x64' || (flags ?? '').includes('x86-64'))) cached.set(name, path);
  }
  return Object.fromEntries(
    names.map((name) => [
      name,
      dirs.map((d) => join(d, name)).find(search.exists) ?? cached.get(name) ?? DEFAULT_LIBRARY_DIRS.map((d) => join(d, name)).find(search.exists),
    ]),
  );
}

/** Where this machine's loader finds each of {@link CUDA_LIBRARIES} (undefined: not found); an empty record off Linux. */
export function cudaLibraryPaths(): Record<string, string | undefined> {
  if (process.platform !== 'linux') return {};
  let ldconfig = '';
  for (const cmd of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const r = spawnSync(cmd, ['-p'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0) {
      ldconfig = r.stdout;
      break;
    }
  }
  return findLibraries(CUDA_LIBRARIES, { ldLibraryPath: process.env.LD_LIBRARY_PATH, ldconfig, exists: existsSync });
}

/**
 * Whether this CPU lacks AVX, which libtensorflow (the npm download and the pip wheel alike) is built for: loading it
 * there kills the process with "Illegal instruction", past any catch. Known only on x86-64 Linux (/proc/cpuinfo);
 * false elsewhere and where the flags cannot be read. `cpuinfo` replaces the file's text (tests).
 *
 * @example cpuLacksAvx('flags : fpu sse sse2 pni') // true on x86-64
 */
export function cpuLacksAvx(cpuinfo?: string): boolean {
  if (process.arch !== 'x64') return false;
  let text = cpuinfo;
  if (text === undefined) {
    if (process.platform !== 'linux') return false;
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return false;
    }
  }
  const flags = /^flags\s*:(.*)$/m.exec(text)?.[1];
  return flags !== undefined && !flags.trim().split(/\s+/).includes('avx');
}

const NO_AVX =
  'this CPU has no AVX instructions, which libtensorflow is built for: loading it would kill the process ' +
  '("Illegal instruction")';

function requestFor(pkg: BackendInfo['package']): BackendChoice {
  return pkg === '@tensorflow/tfjs-node-gpu' ? 'gpu' : pkg === '@tensorflow/tfjs-node' ? 'cpu' : 'js';
}

/**
 * "was killed by SIGILL" where loading `pkg` kills a child process (an instruction the CPU lacks), "did not finish
 * within 120 s" where the test load outlived its time; undefined where it loads or throws (said in-process).
 */
function childLoadDies(pkg: string): string | undefined {
  let path: string;
  try {
    path = require.resolve(pkg);
  } catch {
    return undefined; // not installed: the load below says so
  }
  const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path)})`], { stdio: 'ignore', timeout: 120_000 });
  // spawnSync's timeout ends the child with SIGTERM: that is no verdict on the CPU.
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') return 'did not finish within 120 s';
  return r.signal ? `was killed by ${r.signal}` : undefined;
}

function missingCudaLibraries(): string[] {
  const found = cudaLibraryPaths();
  return Object.keys(found).filter((name) => found[name] === undefined);
}

function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
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
 * backend; `auto` tries tfjs-node-gpu when a GPU is visible and the loader finds the CUDA 11 libraries it needs
 * ({@link CUDA_LIBRARIES}), then tfjs-node, then pure JS with a loud warning.
 *
 * @example const tf = loadTf(); tf.tidy(() => tf.ones([2, 2]).sum().dataSync())
 */
export function loadTf(options: { backend?: BackendChoice } = {}): Tf {
  return loadTfWithInfo(options).tf;
}

/**
 * Like {@link loadTf}, and says what was picked and why. `gpuVisible`, `cudaMissing` and `noAvx` replace the checks of
 * this machine (the driver; the CUDA libraries the loader finds; the CPU's AVX), so that tests can take every path
 * anywhere.
 */
export function loadTfWithInfo(
  options: { backend?: BackendChoice; gpuVisible?: boolean; cudaMissing?: readonly string[]; noAvx?: boolean } = {},
): { tf: Tf; info: BackendInfo } {
  if (loaded) return loaded;
  const requested = options.backend ?? parseChoice(process.env.PNEUMOTYPE_BACKEND);
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2'; // quiets most of libtensorflow's log lines (absl's start-up lines remain)
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
  const noAvx = options.noAvx ?? cpuLacksAvx();
  for (const pkg of candidates) {
    if (pkg === '@tensorflow/tfjs-node-gpu' && requested === 'auto' && !gpu) {
      reasons.push(`${pkg}: skipped, no NVIDIA GPU visible`);
      continue;
    }
    if (pkg !== '@tensorflow/tfjs' && noAvx) {
      if (requested === 'auto') {
        reasons.push(`${pkg}: skipped, ${NO_AVX}; set PNEUMOTYPE_BACKEND=${requestFor(pkg)} to try a libtensorflow built without AVX`);
        continue;
      }
      // Asked for by name: tried in a child process first, where a libtensorflow built without AVX loads and the
      // stock one dies instead of this process.
      const died = childLoadDies(pkg);
      if (died !== undefined) {
        throw new BackendError(
          `PNEUMOTYPE_BACKEND=${quote(requested)} asks for ${pkg}, but ${NO_AVX}: a test load in a child process ${died}. ` +
            'Use a libtensorflow built without AVX (environment.md), a machine whose CPU has AVX, or PNEUMOTYPE_BACKEND=js (slow).',
        );
      }
    }
    // Installed and wanted: without the CUDA runtime it would load and run on the CPU, calling itself the GPU backend.
    const cudaMissing = pkg === '@tensorflow/tfjs-node-gpu' && installed(pkg) ? (options.cudaMissing ?? missingCudaLibraries()) : [];
    const noCuda =
      cudaMissing.length === 0
        ? undefined
        : `${cudaMissing.length > 1 ? `${cudaMissing.slice(0, -1).join(', ')} and ${cudaMissing.at(-1)}` : cudaMissing[0]} not found (LD_LIBRARY_PATH, the linker cache, /usr/lib): libtensorflow-gpu would run on the CPU; ` +
          'install CUDA 11.2 and cuDNN 8.1 (environment.md)';
    if (noCuda !== undefined && requested === 'auto') {
      reasons.push(`${pkg}: skipped, ${noCuda}, or set PNEUMOTYPE_BACKEND=gpu to try it anyway`);
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
            (noAvx
              ? `Native TensorFlow was not tried: ${NO_AVX} (environment.md).`
              : 'Run `npm install` to set up @tensorflow/tfjs-node, and `npx pneumotype doctor` to see why it failed.'),
          { code: 'PNEUMOTYPE_PURE_JS' },
        );
      }
    } else if (noCuda !== undefined) {
      reasons.push(`${pkg}: loaded, but ${noCuda}`);
      process.emitWarning(`pneumotype loaded @tensorflow/tfjs-node-gpu as asked, but ${noCuda}.`, { code: 'PNEUMOTYPE_NO_CUDA' });
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
