// The offline recipe (scripts/setup-tfjs.mjs): the wheel's extraction and which damage sends it to download again; how a
// binding that loads, fails or dies of SIGILL (a CPU without AVX) is told apart; which paths gyp's Makefile can take.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';
import AdmZip from 'adm-zip';

interface SetupScript {
  readonly WHEEL_DAMAGE: RegExp;
  extractWheel(wheel: string, deps: string, binding: string): { readonly ok: boolean; readonly out: string };
  bindingLoads(dir: string): { readonly ok: boolean; readonly version?: string; readonly noAvx?: boolean; readonly reason?: string };
  cpuLacksAvx(cpuinfo?: string): boolean;
  makeSafe(path: string): boolean;
  installerFailure(out: string): string;
  normalInstall(dir: string, flavour: 'cpu' | 'gpu'): boolean;
}
// A non-literal specifier: the script is plain JavaScript, typed by the interface above.
const script = pathToFileURL(join(import.meta.dirname, '..', 'scripts', 'setup-tfjs.mjs')).href;
const { WHEEL_DAMAGE, bindingLoads, cpuLacksAvx, extractWheel, installerFailure, makeSafe, normalInstall } = (await import(script)) as SetupScript;

let tmp: string;
let binding: string;
/** Bytes that deflate but not to nothing, so that damage lands inside compressed data. */
const LIB = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919 + (i >> 5)) % 251));
const HEADERS: Record<string, string> = {
  'tensorflow/c/c_api.h': '#include "tensorflow/c/tf_status.h"\n#include <stdint.h>\n',
  'tensorflow/c/tf_status.h': '// status\n',
  'tensorflow/c/eager/c_api.h': '#include "tensorflow/c/c_api.h"\n',
  'tensorflow/core/unused.h': '// not included by anything the binding uses\n',
};

/** A wheel-shaped zip: the two libraries and an include tree, `without` one of its members. */
function wheel(without?: string): Buffer {
  const zip = new AdmZip();
  const members: Record<string, Buffer> = {
    'tensorflow/libtensorflow_cc.so.2': LIB,
    'tensorflow/libtensorflow_framework.so.2': LIB.subarray(0, 50_000),
    ...Object.fromEntries(Object.entries(HEADERS).map(([h, text]) => [`tensorflow/include/${h}`, Buffer.from(text)])),
  };
  for (const [name, data] of Object.entries(members)) if (name !== without) zip.addFile(name, data);
  return zip.toBuffer();
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-setup-'));
  binding = join(tmp, 'binding');
  await mkdir(binding);
  await writeFile(join(binding, 'tfjs_backend.cc'), '#include "tensorflow/c/eager/c_api.h"\n');
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('a whole wheel: both libraries and the include closure of the headers the binding uses', async () => {
  const path = join(tmp, 'whole.whl');
  await writeFile(path, wheel());
  const deps = join(tmp, 'deps-whole');
  const r = extractWheel(path, deps, binding);
  assert.ok(r.ok, r.out);
  assert.deepEqual(readFileSync(join(deps, 'lib', 'libtensorflow_cc.so.2')), LIB);
  assert.deepEqual(readdirSync(join(deps, 'lib')).sort(), ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2']);
  for (const h of ['tensorflow/c/c_api.h', 'tensorflow/c/tf_status.h', 'tensorflow/c/eager/c_api.h']) {
    assert.equal(await readFile(join(deps, 'include', h), 'utf8'), HEADERS[h], h);
  }
  assert.equal(existsSync(join(deps, 'include', 'tensorflow/core/unused.h')), false);
});

test('a wheel cut short or with damaged bytes is recognised as damaged; a wheel without a library is not', async () => {
  const whole = wheel();
  const at = whole.indexOf(Buffer.from('tensorflow/libtensorflow_cc.so.2')) + 200; // inside its compressed data
  const flipped = Buffer.from(whole);
  for (let i = at; i < at + 64; i++) flipped[i] = (flipped[i] ?? 0) ^ 0xa5;
  const cases = {
    'cut short': whole.subarray(0, Math.floor(whole.length * 0.6)),
    'damaged bytes': flipped,
    'empty': Buffer.alloc(0),
  };
  for (const [what, bytes] of Object.entries(cases)) {
    const path = join(tmp, `${what}.whl`);
    await writeFile(path, bytes);
    const r = extractWheel(path, join(tmp, `deps-${what}`), binding);
    assert.equal(r.ok, false, what);
    assert.match(r.out, WHEEL_DAMAGE, `${what}: ${r.out}`);
  }
  // Another wheel (one without the library): downloading it again would not help, so it is not "damaged".
  const path = join(tmp, 'other.whl');
  await writeFile(path, wheel('tensorflow/libtensorflow_framework.so.2'));
  const r = extractWheel(path, join(tmp, 'deps-other'), binding);
  assert.equal(r.ok, false);
  assert.match(r.out, /KeyError: "There is no item named 'tensorflow\/libtensorflow_framework.so.2' in the archive"/);
  assert.doesNotMatch(r.out, WHEEL_DAMAGE);
});

/** A package folder whose binding (found through a stand-in node-pre-gyp, as tfjs-node's is) runs `body`. */
async function fakePackage(name: string, body: string): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(join(dir, 'node_modules', '@mapbox', 'node-pre-gyp'), { recursive: true });
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name, version: '0.0.0' }));
  await writeFile(join(dir, 'node_modules', '@mapbox', 'node-pre-gyp', 'index.js'), `exports.find = () => ${JSON.stringify(join(dir, 'binding.js'))};\n`);
  await writeFile(join(dir, 'binding.js'), body);
  return dir;
}

test('a binding that loads gives its version; one that fails gives its error; SIGILL (no AVX) is told apart', async () => {
  assert.deepEqual(bindingLoads(await fakePackage('loads', "exports.TF_Version = '2.21.0';\n")), { ok: true, version: '2.21.0' });
  const fails = bindingLoads(await fakePackage('fails', "throw new Error('libtensorflow.so.2: cannot open shared object file');\n"));
  assert.equal(fails.ok, false);
  assert.equal(fails.noAvx, undefined);
  assert.match(fails.reason ?? '', /Error: libtensorflow\.so\.2: cannot open shared object file/);
  // What a stock libtensorflow does on a CPU without AVX: the loading process dies of "Illegal instruction".
  assert.deepEqual(bindingLoads(await fakePackage('sigill', "process.kill(process.pid, 'SIGILL');\n")), {
    ok: false,
    noAvx: true,
    reason: 'killed by SIGILL ("Illegal instruction": this CPU lacks AVX, which libtensorflow is built for)',
  });
});

test('cpuLacksAvx reads the first flags line of /proc/cpuinfo (x86-64 Linux only)', { skip: process.arch !== 'x64' || process.platform !== 'linux' }, () => {
  assert.equal(cpuLacksAvx('processor : 0\nflags : fpu sse sse2 pni ssse3\n'), true);
  assert.equal(cpuLacksAvx('processor : 0\nflags : fpu sse sse2 avx avx2\n'), false);
  assert.equal(cpuLacksAvx('flags\t\t: fpu avx512f\n'), true, 'avx512f alone is not the avx flag');
  assert.equal(cpuLacksAvx('processor : 0\n'), false, 'no flags line: nothing known, nothing refused');
});

test('makeSafe: a path gyp can write unquoted into a Makefile (the binding is built in such a temporary folder)', () => {
  for (const p of ['/home/ci/pneumotype/node_modules/@tensorflow/tfjs-node', '/tmp/pneumotype-tfjs-build-Ab1_x', '/opt/node-v20.20.2+x,y~']) {
    assert.equal(makeSafe(p), true, p);
  }
  for (const p of ['/home/me/My Projects/pneumotype', '/home/zoë/pneumotype', '/a#b', '/a$b', '/a:b', '/a=b', '/a%b', "/a'b", '/a"b', '/a\\b', '/a\tb', '']) {
    assert.equal(makeSafe(p), false, JSON.stringify(p));
  }
});

test('PNEUMOTYPE_REQUIRE_GPU=1 (the SageMaker installer): exit status 3 while @tensorflow/tfjs-node-gpu is not ready', {
  skip: existsSync(join(process.cwd(), 'node_modules', '@tensorflow', 'tfjs-node-gpu')) ? 'the GPU package is installed here' : false,
}, () => {
  // This checkout has no GPU package: the CPU package's check passes, the GPU one does not.
  const script = join(process.cwd(), 'scripts', 'setup-tfjs.mjs');
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, PNEUMOTYPE_REQUIRE_GPU: '1', PNEUMOTYPE_SKIP_TFJS_SETUP: '' } });
  assert.equal(r.status, 3, r.stdout + r.stderr);
  assert.ok((r.stdout + r.stderr).includes('PNEUMOTYPE_REQUIRE_GPU=1 and @tensorflow/tfjs-node-gpu is not ready: exit status 3'));
  const plain = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, PNEUMOTYPE_SKIP_TFJS_SETUP: '' } });
  assert.equal(plain.status, 0, 'without it, a missing GPU package never fails an install');
});

test('postinstall-build: builds with TypeScript when installed; without it keeps a built dist/, else fails saying what to do', async () => {
  const project = join(tmp, 'omit-dev');
  await mkdir(join(project, 'scripts'), { recursive: true });
  await writeFile(join(project, 'scripts', 'postinstall-build.mjs'), await readFile(join(import.meta.dirname, '..', 'scripts', 'postinstall-build.mjs')));
  const run = (): { status: number | null; stderr: string } => {
    const r = spawnSync(process.execPath, [join(project, 'scripts', 'postinstall-build.mjs')], { cwd: project, encoding: 'utf8' });
    return { status: r.status, stderr: r.stderr };
  };
  // npm ci --omit=dev on a fresh clone: no TypeScript, nothing built.
  assert.deepEqual(run(), {
    status: 1,
    stderr:
      `[pneumotype] cannot build ${join(project, 'dist', 'index.js')}: TypeScript is a dev dependency and this install omitted them ` +
      '(--omit=dev, NODE_ENV=production). Install once with dev dependencies (npm ci), which builds dist/, then remove them with ' +
      '`npm prune --omit=dev`\n',
  });
  // The same after a full install had built dist/.
  await mkdir(join(project, 'lib'));
  await writeFile(join(project, 'lib', 'index.ts'), 'export {};\n');
  await mkdir(join(project, 'dist'));
  await writeFile(join(project, 'dist', 'index.js'), 'export {};\n');
  await writeFile(join(project, 'dist', 'cli.js'), 'export {};\n');
  const kept = '[pneumotype] TypeScript is not installed (dev dependencies omitted): using the dist/ built before\n';
  assert.deepEqual(run(), { status: 0, stderr: kept });
  // A source changed since (a git pull before the install, say): kept, with a warning.
  const later = new Date(Date.now() + 60_000);
  await utimes(join(project, 'lib', 'index.ts'), later, later);
  assert.deepEqual(run(), {
    status: 0,
    stderr: `${kept}[pneumotype] warning: dist/ is older than 1 source file(s) (${join('lib', 'index.ts')}): it may not match this checkout; ` +
      'install with dev dependencies (npm ci) to build it again\n',
  });
  // With TypeScript: its compiler runs on tsconfig.json, and its exit status is the script's.
  await mkdir(join(project, 'node_modules', 'typescript', 'bin'), { recursive: true });
  await writeFile(
    join(project, 'node_modules', 'typescript', 'bin', 'tsc'),
    "process.stderr.write(`tsc ${process.argv.slice(2).map((a) => a.replace(process.cwd(), '.')).join(' ')}\\n`); process.exit(2);\n",
  );
  assert.deepEqual(run(), { status: 2, stderr: 'tsc -p ./tsconfig.json\n' });
});

test("installerFailure: one line when the package's installer cannot reach its download host, its last lines otherwise", () => {
  // What tfjs-node 4.22's scripts/install.js prints offline (abridged).
  const offline = [
    '* Downloading libtensorflow',
    'https://storage.googleapis.com/tensorflow/libtensorflow/libtensorflow-cpu-linux-x86_64-2.9.1.tar.gz',
    "      throw er; // Unhandled 'error' event",
    'Error: getaddrinfo ENOTFOUND storage.googleapis.com',
    '    at GetAddrInfoReqWrap.onlookupall [as oncomplete] (node:dns:122:26)',
    "  code: 'ENOTFOUND',",
    "  hostname: 'storage.googleapis.com'",
    '}',
    'Node.js v20.20.2',
  ].join('\n');
  assert.equal(installerFailure(offline), "the package's own installer could not reach storage.googleapis.com (ENOTFOUND: no network?)");
  assert.equal(installerFailure('a\nb\nc\nd\ne\nf\ng: gyp failed\n'), "the package's own installer failed:\n    b\n    c\n    d\n    e\n    f\n    g: gyp failed");
  assert.equal(installerFailure('Error: connect ECONNREFUSED 10.0.0.1:443\n    at TCPConnectWrap.afterConnect'), "the package's own installer could not reach 10.0.0.1:443 (ECONNREFUSED: no network?)");
  // Other network words are no verdict: a reset in a stack line, a timeout warning before a build error.
  const reset = 'Error: read ECONNRESET\n    at TLSSocket.socketOnEnd (node:_tls_wrap:1)';
  assert.equal(installerFailure(reset), `the package's own installer failed:\n    ${reset.split('\n').join('\n    ')}`);
  const build = 'npm WARN ETIMEDOUT fetching tfjs-node@4.22.0\ngyp ERR! build error';
  assert.equal(installerFailure(build), `the package's own installer failed:\n    ${build.split('\n').join('\n    ')}`);
});

test("the package's own installer cannot lose a deps/ folder: put back when it fails, replaced when it succeeds", async () => {
  // tfjs-node's scripts/install.js deletes deps/ before it downloads; offline, the download then fails.
  const pkg = async (name: string, install: string): Promise<string> => {
    const dir = join(tmp, `installer-${name}`);
    await mkdir(join(dir, 'scripts'), { recursive: true });
    await mkdir(join(dir, 'deps', 'lib'), { recursive: true });
    await writeFile(join(dir, 'deps', 'lib', 'libtensorflow.so.2'), 'built by hand');
    await writeFile(join(dir, 'scripts', 'install.js'), install);
    return dir;
  };
  const failing = await pkg('fails', "require('fs').rmSync('deps', { recursive: true, force: true });\n" +
    "console.error('Error: getaddrinfo ENOTFOUND storage.googleapis.com'); process.exit(1);\n");
  assert.equal(normalInstall(failing, 'cpu'), false);
  assert.equal(readFileSync(join(failing, 'deps', 'lib', 'libtensorflow.so.2'), 'utf8'), 'built by hand');
  assert.deepEqual(readdirSync(failing).sort(), ['deps', 'scripts']);
  // An installer that half-writes a new deps/ before failing: the old one comes back whole.
  const half = await pkg('half', "const fs = require('fs'); fs.rmSync('deps', { recursive: true, force: true }); fs.mkdirSync('deps');\n" +
    "fs.writeFileSync('deps/partial', ''); process.exit(1);\n");
  assert.equal(normalInstall(half, 'gpu'), false);
  assert.deepEqual(readdirSync(join(half, 'deps')), ['lib']);
  const ok = await pkg('succeeds', "const fs = require('fs'); fs.rmSync('deps', { recursive: true, force: true });\n" +
    "fs.mkdirSync('deps/lib', { recursive: true }); fs.writeFileSync('deps/lib/libtensorflow.so.2', 'downloaded');\n");
  assert.equal(normalInstall(ok, 'cpu'), true);
  assert.equal(readFileSync(join(ok, 'deps', 'lib', 'libtensorflow.so.2'), 'utf8'), 'downloaded');
  assert.deepEqual(readdirSync(ok).sort(), ['deps', 'scripts']);
  // A copy left aside by a run that was killed mid-install is put back first (and the installer's leftovers dropped).
  const killed = await pkg('killed', 'process.exit(1);\n');
  await rm(join(killed, 'deps'), { recursive: true });
  await mkdir(join(killed, 'deps.before-install', 'lib'), { recursive: true });
  await writeFile(join(killed, 'deps.before-install', 'lib', 'libtensorflow.so.2'), 'set aside');
  await mkdir(join(killed, 'deps'));
  assert.equal(normalInstall(killed, 'cpu'), false);
  assert.equal(readFileSync(join(killed, 'deps', 'lib', 'libtensorflow.so.2'), 'utf8'), 'set aside');
  assert.deepEqual(readdirSync(killed).sort(), ['deps', 'scripts']);
});
