#!/usr/bin/env node
// Makes @tensorflow/tfjs-node (and tfjs-node-gpu where a GPU is present) load: normal install first, else the offline recipe.
//
// Run from `postinstall` (npm denies the packages' own install scripts through `allowScripts`, so this script decides).
// For each TensorFlow.js native package that is installed:
//   1. its binding already loads                        -> nothing to do (idempotent re-runs take < 1 s)
//   2. the package's own installer (downloads libtensorflow 2.9.1 and a prebuilt binding; needs the internet)
//   3. offline recipe (CPU package only): libtensorflow from the `tensorflow-cpu` pip wheel into deps/, then build
//      the binding with node-gyp against Node's own headers, in a temporary folder (see buildBinding: a checkout path
//      with a space cannot go into gyp's Makefile), and copy it into the package.
// Environment: PNEUMOTYPE_TF_WHEEL=path/to/tensorflow_cpu-*.whl uses that wheel instead of `pip download` (else it
// is cached in $XDG_CACHE_HOME/pneumotype/wheels, a damaged one set aside as .bad and fetched again);
// PNEUMOTYPE_TF_WHEEL_VERSION (default 2.21.0); PNEUMOTYPE_PYTHON (default python3, else python);
// PNEUMOTYPE_SKIP_TFJS_SETUP=1 skips everything.
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, lstatSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const WHEEL_VERSION = process.env.PNEUMOTYPE_TF_WHEEL_VERSION ?? '2.21.0';
const log = (msg) => process.stderr.write(`[pneumotype setup] ${msg}\n`);

/** Directory of an installed package, or undefined. */
function packageDir(name) {
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

/** Tries to load the package's native binding in a child process (a broken .so can abort the process). */
export function bindingLoads(dir) {
  const code = `
    const binary = require(${JSON.stringify(join(dir, 'node_modules/@mapbox/node-pre-gyp'))});
    const p = binary.find(${JSON.stringify(join(dir, 'package.json'))});
    const b = require(p);
    process.stdout.write(String(b.TF_Version));`;
  const fallback = `
    let binary; try { binary = require('@mapbox/node-pre-gyp'); } catch { binary = require(require.resolve('@mapbox/node-pre-gyp', {paths: [${JSON.stringify(dir)}]})); }
    const p = binary.find(${JSON.stringify(join(dir, 'package.json'))});
    process.stdout.write(String(require(p).TF_Version));`;
  const script = existsSync(join(dir, 'node_modules/@mapbox/node-pre-gyp')) ? code : fallback;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  if (r.status === 0 && r.stdout) return { ok: true, version: r.stdout.trim() };
  // libtensorflow on a CPU without AVX: the loader dies of SIGILL, and no install of the same build can help.
  if (r.signal === 'SIGILL') return { ok: false, noAvx: true, reason: 'killed by SIGILL ("Illegal instruction": this CPU lacks AVX, which libtensorflow is built for)' };
  const lines = `${r.stderr ?? ''}`.split('\n').filter((l) => /Error|error:/.test(l));
  return { ok: false, reason: lines.slice(0, 3).join(' | ') || (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`) };
}

function run(cmd, args, opts = {}) {
  // The packages' installers call node-pre-gyp by name: npm puts node_modules/.bin on PATH, `node scripts/…` does not.
  const path = [join(root, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter);
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', env: { ...process.env, PATH: path }, ...opts });
  // Why a command gave nothing to show: not found, killed by the time limit or a signal.
  const why = r.error?.code === 'ENOENT'
    ? `\`${cmd}\` not found`
    : r.error?.code === 'ETIMEDOUT'
      ? `\`${cmd}\` timed out after ${Math.round((opts.timeout ?? 0) / 1000)} s`
      : r.error
        ? `\`${cmd}\` failed: ${r.error.message}`
        : r.signal
          ? `\`${cmd}\` was killed by ${r.signal}`
          : '';
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}${why ? `\n${why}` : ''}`;
  return { ok: r.status === 0, out, status: r.status, error: r.error };
}

/** The Python to use: PNEUMOTYPE_PYTHON, else the first of python3 and python that runs. */
let python;
function pythonCommand() {
  if (python) return python;
  const candidates = process.env.PNEUMOTYPE_PYTHON ? [process.env.PNEUMOTYPE_PYTHON] : ['python3', 'python'];
  python = candidates.find((py) => run(py, ['--version'], { timeout: 30_000 }).ok) ?? candidates[0];
  return python;
}

function tail(text, n = 6) {
  return text.trim().split('\n').slice(-n).join('\n    ');
}

/**
 * Step 2: the package's own installer. It deletes the package's deps/ before it downloads (`download` mode), so a
 * deps/ that was there (a libtensorflow put in by hand, say one built without AVX or for another CUDA) is moved aside
 * first and put back when the installer fails: nothing is lost offline. A copy left aside by an interrupted run is put
 * back before anything else.
 */
export function normalInstall(dir, flavour) {
  const deps = join(dir, 'deps');
  const aside = join(dir, 'deps.before-install');
  for (const f of readdirSync(dir)) if (f.startsWith('deps.discard-')) rmSync(join(dir, f), { recursive: true, force: true });
  if (existsSync(aside)) {
    rmSync(deps, { recursive: true, force: true });
    renameSync(aside, deps);
  }
  const had = existsSync(deps);
  if (had) renameSync(deps, aside);
  log(`${flavour}: trying the package's own installer (downloads libtensorflow; needs the internet)`);
  // `download` always: without it the installer reuses a deps/lib/libtensorflow that an interrupted run left half-written.
  const r = run(process.execPath, ['scripts/install.js', flavour, 'download'], {
    cwd: dir,
    timeout: 15 * 60_000,
  });
  if (!r.ok) log(`${flavour}: ${installerFailure(r.out.trim() || `exit status ${r.status}, no output`)}`);
  if (had) {
    if (r.ok) {
      // Renamed before it is deleted: a run killed while deleting must not find a half-deleted copy to put back.
      const discard = join(dir, `deps.discard-${process.pid}`);
      renameSync(aside, discard);
      rmSync(discard, { recursive: true, force: true });
    } else {
      rmSync(deps, { recursive: true, force: true });
      renameSync(aside, deps);
      log(`${flavour}: the package's deps/ folder is as it was before the installer ran`);
    }
  }
  return r.ok;
}

/**
 * One line for the usual offline failure (the download host not reached), the installer's last lines otherwise.
 *
 * @example installerFailure("Error: getaddrinfo ENOTFOUND storage.googleapis.com\n  code: 'ENOTFOUND'") // "the package's own installer could not reach storage.googleapis.com (ENOTFOUND: no network?)"
 */
export function installerFailure(out) {
  // Node's own words for a host not reached, in the installer's last lines (its crash): "getaddrinfo ENOTFOUND host",
  // "connect ECONNREFUSED 1.2.3.4:443". Anything else (a build error, say) is shown as it came.
  const last = out.trim().split('\n').slice(-40).join('\n');
  const unreachable = /\bgetaddrinfo (ENOTFOUND|EAI_AGAIN) (\S+)|\bconnect (ECONNREFUSED|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH) (\S+)/.exec(last);
  if (unreachable) {
    const [code, host] = unreachable[1] !== undefined ? [unreachable[1], unreachable[2]] : [unreachable[3], unreachable[4]];
    return `the package's own installer could not reach ${host} (${code}: no network?)`;
  }
  return `the package's own installer failed:\n    ${tail(out)}`;
}

/** Finds or downloads the tensorflow-cpu wheel; returns its path and whether it is ours to replace (from the cache). */
function findWheel() {
  if (process.env.PNEUMOTYPE_TF_WHEEL) {
    if (!existsSync(process.env.PNEUMOTYPE_TF_WHEEL)) {
      throw new Error(`PNEUMOTYPE_TF_WHEEL="${process.env.PNEUMOTYPE_TF_WHEEL}" does not exist`);
    }
    return { wheel: process.env.PNEUMOTYPE_TF_WHEEL, cached: false };
  }
  const cacheRoot = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const cache = join(cacheRoot, 'pneumotype', 'wheels');
  mkdirSync(cache, { recursive: true });
  const isWheel = (f) => f.startsWith(`tensorflow_cpu-${WHEEL_VERSION}-`) && f.endsWith('.whl');
  const found = readdirSync(cache).find(isWheel);
  if (found) return { wheel: join(cache, found), cached: true };
  // pip writes the wheel under its final name as it goes: into a folder of its own first, moved into the cache
  // only once pip has finished, so an interrupted download never passes for a wheel.
  const staging = join(cache, `.download-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  log(`downloading tensorflow-cpu==${WHEEL_VERSION} with pip into ${cache}`);
  const r = run(pythonCommand(), ['-m', 'pip', 'download', '--no-deps', '--retries', '0', '--only-binary=:all:', '-d', staging,
    `tensorflow-cpu==${WHEEL_VERSION}`], { timeout: 20 * 60_000 });
  try {
    if (!r.ok) throw new Error(`pip download tensorflow-cpu==${WHEEL_VERSION} failed:\n    ${tail(r.out)}`);
    const wheel = existsSync(staging) ? readdirSync(staging).find(isWheel) : undefined;
    if (!wheel) throw new Error(`pip reported success but no tensorflow_cpu-${WHEEL_VERSION}-*.whl is in ${staging}`);
    renameSync(join(staging, wheel), join(cache, wheel));
    return { wheel: join(cache, wheel), cached: true };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

// Copies the two shared libraries and the include closure of the C API headers that the binding uses (following
// quoted #include lines inside the wheel's include tree), writing each file through a .part rename.
const EXTRACT_PY = `
import sys, zipfile, os, re, shutil
wheel, deps, binding = sys.argv[1], sys.argv[2], sys.argv[3]
INC = 'tensorflow/include/'
ROOTS = ['tensorflow/c/c_api.h', 'tensorflow/c/eager/c_api.h', 'tensorflow/c/c_api_experimental.h',
         'tensorflow/c/eager/c_api_experimental.h']
INCLUDE = re.compile(r'^\\s*#\\s*include\\s*"([^"]+)"', re.M)
def write(z, name, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with z.open(name) as src, open(dest + '.part', 'wb') as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(dest + '.part', dest)
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for lib in ('libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'):
        write(z, 'tensorflow/' + lib, os.path.join(deps, 'lib', lib))
    for f in os.listdir(binding):
        with open(os.path.join(binding, f), encoding='utf-8', errors='replace') as fh:
            ROOTS += INCLUDE.findall(fh.read())
    todo, seen = [r for r in ROOTS if INC + r in names], set()
    while todo:
        h = todo.pop()
        if h in seen:
            continue
        seen.add(h)
        text = z.read(INC + h).decode('utf-8', 'replace')
        for inc in INCLUDE.findall(text):
            if INC + inc in names and inc not in seen:
                todo.append(inc)
    for h in sorted(seen):
        write(z, INC + h, os.path.join(deps, 'include', h))
    print(len(seen), 'headers')
`;

/** What Python's zipfile says of a wheel cut short or with damaged bytes (tested in test/setup-tfjs.test.ts). */
export const WHEEL_DAMAGE = /BadZipFile|Bad CRC-32|Error -3 while decompressing/;

/** Extracts libtensorflow and the headers that the binding in `binding` includes from `wheel` into `deps`. */
export function extractWheel(wheel, deps, binding) {
  return run(pythonCommand(), ['-c', EXTRACT_PY, wheel, deps, binding], { timeout: 10 * 60_000 });
}

function link(target, path) {
  try {
    lstatSync(path);
    rmSync(path);
  } catch {
    /* absent */
  }
  symlinkSync(target, path);
}

/** Step 3: libtensorflow from the pip wheel + node-gyp build of the binding. */
function offlineRecipe(dir) {
  const staging = join(dir, 'deps.staging');
  for (let attempt = 1; ; attempt++) {
    const { wheel, cached } = findWheel();
    rmSync(staging, { recursive: true, force: true });
    log(`extracting libtensorflow and the C API headers from ${wheel}`);
    const x = extractWheel(wheel, staging, join(dir, 'binding'));
    if (x.ok) break;
    // A damaged wheel in our cache (cut short, a full disk) is set aside, never deleted, and downloaded again once.
    if (cached && attempt === 1 && WHEEL_DAMAGE.test(x.out)) {
      renameSync(wheel, `${wheel}.bad`);
      log(`${wheel} is not a whole wheel (${tail(x.out, 1)}); moved to ${wheel}.bad, downloading it again`);
      continue;
    }
    throw new Error(`extracting ${wheel} failed:\n    ${tail(x.out)}`);
  }
  const lib = join(staging, 'lib');
  link('libtensorflow_cc.so.2', join(lib, 'libtensorflow.so.2'));
  link('libtensorflow_cc.so.2', join(lib, 'libtensorflow.so'));
  link('libtensorflow_framework.so.2', join(lib, 'libtensorflow_framework.so'));
  rmSync(join(dir, 'deps'), { recursive: true, force: true });
  renameSync(staging, join(dir, 'deps'));

  buildBinding(dir);
}

/** A path that gyp can write unquoted into a Makefile: no space, `$`, `#`, `:`, `=`, `%`, quote, backslash or non-ASCII. */
export const makeSafe = (path) => /^[\w./+,@~-]+$/.test(path);

/**
 * Builds the binding with node-gyp in a temporary folder and copies tfjs_binding.node into the package's lib/napi-v8.
 * binding.gyp names its headers and libraries as absolute `<(module_root_dir)/deps/...` paths, which gyp writes
 * unquoted into the Makefile, so a package path with a space (a checkout in "My Projects") cannot build in place. The
 * temporary folder holds a copy of binding/ and binding.gyp and a `deps` link to the package's deps/; the binding
 * finds libtensorflow at run time through its rpath, $ORIGIN/../../deps/lib, relative to where it is copied to.
 */
function buildBinding(dir) {
  const napi = 8;
  const gyp =
    process.env.npm_config_node_gyp ??
    [join(dirname(process.env.npm_execpath ?? ''), '../node_modules/node-gyp/bin/node-gyp.js'),
      join(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')].find(existsSync);
  if (!gyp) throw new Error('node-gyp not found (it ships with npm); run this script through `npm install`');
  const nodedir = process.env.npm_config_nodedir || resolve(dirname(process.execPath), '..');
  const base = [tmpdir(), '/tmp'].find((d) => makeSafe(d) && existsSync(d));
  if (!base) throw new Error(`the temporary folder "${tmpdir()}" has a space or another character that gyp's Makefile cannot take; set TMPDIR to one without`);
  // The package goes one level down: binding.gyp also includes its parent folder (include_dirs '..'), which must be
  // this empty one, not the shared temporary folder where a stray tensorflow/ could shadow deps/include.
  const top = mkdtempSync(join(base, 'pneumotype-tfjs-build-'));
  const work = join(top, 'package');
  try {
    mkdirSync(work);
    cpSync(join(dir, 'binding'), join(work, 'binding'), { recursive: true });
    copyFileSync(join(dir, 'binding.gyp'), join(work, 'binding.gyp'));
    symlinkSync(join(dir, 'deps'), join(work, 'deps'));
    // Node's headers go into the Makefile too (-I): through a link when Node's own folder is not make-safe either.
    const headers = makeSafe(nodedir) ? nodedir : join(work, 'node');
    if (headers !== nodedir) symlinkSync(nodedir, headers);
    const built = join(work, 'lib', `napi-v${napi}`);
    log(`building the binding with node-gyp in ${work} (nodedir ${nodedir})`);
    const b = run(process.execPath, [gyp, 'rebuild', `--nodedir=${headers}`, '--module_name=tfjs_binding',
      `--module_path=${built}`, `--napi_build_version=${napi}`, '-j', 'max'], { cwd: work, timeout: 20 * 60_000 });
    if (!b.ok) throw new Error(`node-gyp build of the tfjs-node binding failed:\n    ${tail(b.out, 12)}`);
    const from = join(built, 'tfjs_binding.node');
    if (!existsSync(from)) throw new Error(`node-gyp reported success but wrote no ${from}`);
    // Through a .part rename: a binding cut short never passes for one, and the copy replaces (never writes into) a
    // file that may be hard-linked elsewhere.
    const modulePath = join(dir, 'lib', `napi-v${napi}`);
    const dest = join(modulePath, 'tfjs_binding.node');
    mkdirSync(modulePath, { recursive: true });
    copyFileSync(from, `${dest}.part`);
    renameSync(`${dest}.part`, dest);
  } finally {
    rmSync(top, { recursive: true, force: true });
  }
}

/** An NVIDIA GPU, as lib/tf.ts sees one (the driver on Linux, WSL2's GPU device), or as nvidia-smi does. */
function gpuVisible() {
  return ['/proc/driver/nvidia/version', '/dev/nvidiactl', '/dev/dxg'].some(existsSync) || run('nvidia-smi', ['-L'], { timeout: 30_000 }).ok;
}

/** True on an x86-64 Linux CPU without AVX, which libtensorflow is built for (lib/tf.ts's cpuLacksAvx, for this script). */
export function cpuLacksAvx(cpuinfo) {
  if (process.arch !== 'x64' || process.platform !== 'linux') return false;
  let text = cpuinfo;
  try {
    text ??= readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return false;
  }
  const flags = /^flags\s*:(.*)$/m.exec(text)?.[1];
  return flags !== undefined && !flags.trim().split(/\s+/).includes('avx');
}

/** Whether @tensorflow/tfjs-node-gpu is installed and its binding loads (set by setup() for the 'gpu' flavour). */
let gpuReady = false;

function setup(name, flavour) {
  const dir = packageDir(name);
  if (!dir) {
    if (flavour === 'gpu' && gpuVisible()) {
      log(`${name}: an NVIDIA GPU is visible but the GPU package is not installed (a plain \`npm install\` removes one ` +
        `installed with --no-save): \`npm install --no-save ${name}@4.22.0 && node scripts/setup-tfjs.mjs\` (environment.md)`);
    }
    return true;
  }
  const first = bindingLoads(dir);
  if (first.ok) {
    log(`${name}: binding loads (libtensorflow ${first.version}); nothing to do`);
    if (flavour === 'gpu') gpuReady = true;
    return true;
  }
  // Before any download: on such a CPU no libtensorflow of ours loads (one built without AVX, put in by hand, does).
  if (cpuLacksAvx()) {
    log(`${name}: this CPU has no AVX instructions, which libtensorflow is built for; nothing downloaded or built. ` +
      'pneumotype will use the slow pure-JavaScript backend (environment.md: a libtensorflow built without AVX)');
    return false;
  }
  const noAvx = (r) => {
    if (r.noAvx) {
      log(`${name}: the binding does not load: ${r.reason}. Reinstalling cannot help; pneumotype will use the slow ` +
        'pure-JavaScript backend (environment.md: a libtensorflow built without AVX)');
    }
    return r.noAvx === true;
  };
  if (noAvx(first)) return false;
  if (flavour === 'gpu' && !gpuVisible()) {
    log(`${name}: installed but no NVIDIA GPU is visible (driver, nvidia-smi); skipped, the CPU backend will be used`);
    return true;
  }
  if (normalInstall(dir, flavour)) {
    const installed = bindingLoads(dir);
    if (installed.ok) {
      log(`${name}: ready through its own installer`);
      if (flavour === 'gpu') gpuReady = true;
      return true;
    }
    if (noAvx(installed)) return false;
  }
  if (flavour === 'gpu') {
    log(`${name}: could not be set up (needs the internet, CUDA 11.2 and cuDNN 8.1); the CPU backend will be used`);
    return true;
  }
  try {
    offlineRecipe(dir);
  } catch (err) {
    log(`${name}: the offline recipe failed: ${err.message}`);
    log(`${name}: NOT READY. Neither the package's own installer (needs the internet) nor the offline recipe ` +
      `(needs pip with tensorflow-cpu==${WHEEL_VERSION}, python3, g++ and make) worked. ` +
      'pneumotype will fall back to the slow pure-JavaScript backend. See environment.md.');
    return false;
  }
  const last = bindingLoads(dir);
  if (noAvx(last)) return false;
  if (!last.ok) {
    log(`${name}: built, but the binding still does not load: ${last.reason}`);
    return false;
  }
  log(`${name}: ready through the offline recipe (libtensorflow ${last.version} from tensorflow-cpu ${WHEEL_VERSION})`);
  return true;
}

// Run as a script (node resolves symlinks in the script's own URL: /tmp is /private/tmp on macOS), not imported by a test.
const isMain = process.argv[1] !== undefined && existsSync(process.argv[1]) && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (!isMain) {
  // Imported (by a test): nothing runs.
} else if (process.env.PNEUMOTYPE_SKIP_TFJS_SETUP === '1') {
  log('PNEUMOTYPE_SKIP_TFJS_SETUP=1: skipped');
} else {
  const cpu = setup('@tensorflow/tfjs-node', 'cpu');
  setup('@tensorflow/tfjs-node-gpu', 'gpu');
  // The SageMaker installer asks whether the GPU package it just installed is ready (exit status 3 when it is not),
  // so that it marks the step done only then.
  if (process.env.PNEUMOTYPE_REQUIRE_GPU === '1' && !gpuReady) {
    log('PNEUMOTYPE_REQUIRE_GPU=1 and @tensorflow/tfjs-node-gpu is not ready: exit status 3');
    process.exitCode = 3;
  }
  // By default never fail `npm install`: the library falls back to pure JS with a loud warning and
  // `pneumotype doctor` explains. CI sets PNEUMOTYPE_REQUIRE_NATIVE=1 (CI=true does the same) so that a broken recipe fails loudly.
  if (!cpu && (process.env.PNEUMOTYPE_REQUIRE_NATIVE === '1' || process.env.CI === 'true')) {
    log('PNEUMOTYPE_REQUIRE_NATIVE=1 and native TensorFlow is not ready: failing');
    process.exitCode = 1;
  } else if (!cpu) {
    log('continuing without native TensorFlow');
  }
}
