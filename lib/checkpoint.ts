// Saving and loading models in the tfjs layers format (model.json + weights.bin), with optimizer state, atomically.
import { open, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { LayersModel, Optimizer, Variable, io } from '@tensorflow/tfjs';
import { CacheError, ConfigError, messageOf, quote } from './errors.js';
import { ensureFolder, exists, isAlive, isRootedAnywhere, outputError, sha256 } from './fsx.js';
import { loadTf } from './tf.js';

type NamedTensor = Awaited<ReturnType<Optimizer['getWeights']>>[number];

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';
export const OPTIMIZER_JSON = 'optimizer.json';
export const OPTIMIZER_BIN = 'optimizer.bin';

/** The temporary names of a folder swap: `DIR.pneumotype-tmp-PID` (the new folder) and `DIR.pneumotype-old-PID`. */
const SWAP_NAME = /^(.*)\.pneumotype-(old|tmp)-(\d+)$/;
const swapPath = (dir: string, kind: 'old' | 'tmp', pid: number): string => `${dir}.pneumotype-${kind}-${pid}`;

/**
 * Finishes or undoes a folder swap of {@link writeDirAtomic} that a killed process left half done, and removes what
 * dead writers left beside `dir`. The swap renames `DIR` to `DIR.pneumotype-old-PID`, then the complete
 * `DIR.pneumotype-tmp-PID` to `DIR`: with `DIR` missing, a `.tmp` beside its `.old` is complete and goes in; an
 * `.old` alone is put back. Names of any other form beside `DIR` (a user's `model.old-2023`) are never touched.
 * Returns what it did, for the caller to report ('' when there was nothing to do).
 *
 * @example await recoverDirSwap('runs/a/checkpoints/last') // "finished the interrupted swap of …"
 */
export async function recoverDirSwap(dirGiven: string): Promise<string> {
  const dir = resolve(dirGiven); // `model/` is `model`: its swap names sit beside it, not inside
  const parent = dirname(dir);
  const base = basename(dir);
  const strays = (await readdir(parent).catch(() => [] as string[]))
    .map((name) => SWAP_NAME.exec(name))
    .filter((m): m is RegExpExecArray => m !== null && m[1] === base)
    .map((m) => ({ path: join(parent, m[0]), kind: m[2] as 'old' | 'tmp', pid: Number(m[3]) }))
    // This process's own id counts as left too: nothing of it is being written now, and a restarted container (PID 1
    // again, its SageMaker checkpoints copied back) finds its earlier life's leftovers under that id.
    .filter((x) => x.pid === process.pid || !isAlive(x.pid));
  if (strays.length === 0) return '';
  let done = '';
  if (!(await exists(dir))) {
    const old = strays.find((x) => x.kind === 'old');
    const tmp = old && strays.find((x) => x.kind === 'tmp' && x.pid === old.pid);
    const back = tmp ?? old;
    if (back) {
      await rename(back.path, dir);
      done = tmp ? `finished the interrupted swap of ${quote(dir)}` : `put back ${quote(dir)} from ${quote(back.path)}`;
    }
  }
  for (const x of strays) await rm(x.path, { recursive: true, force: true });
  return done;
}

/**
 * Throws unless `dir` is absent, empty or a model folder: only those are ever replaced (`--out` pointed at a dataset,
 * a run or a file is refused). {@link writeDirAtomic} checks it; commands check it first, before their work.
 *
 * @example await checkReplaceable('models/calibrated')
 */
export async function checkReplaceable(dir: string): Promise<void> {
  const present = await stat(dir).catch(() => undefined);
  if (present && !(present.isDirectory() && ((await exists(join(dir, MODEL_JSON))) || (await readdir(dir)).length === 0))) {
    throw new ConfigError(`${quote(dir)} exists and is not a model folder (no ${MODEL_JSON}): choose another output folder; nothing was replaced`, { path: dir });
  }
}

/**
 * Writes a folder atomically: build in `DIR.pneumotype-tmp-PID`, flush its files and itself to disk, then swap it in
 * and flush the parent folder's entries; the old one is removed only afterwards. A power loss at any point leaves the
 * old folder or the new one, complete (with {@link recoverDirSwap} finishing a swap cut between its two renames). A
 * write that fails (a full disk) is an OutputError naming `dir`, and leaves the old folder as it was.
 */
export async function writeDirAtomic(dirGiven: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const dir = resolve(dirGiven);
  await recoverDirSwap(dir);
  await checkReplaceable(dir);
  const tmp = swapPath(dir, 'tmp', process.pid);
  const old = swapPath(dir, 'old', process.pid);
  const fail = async (err: unknown): Promise<unknown> => {
    await rm(tmp, { recursive: true, force: true });
    return outputError(dir, err, dirname(dir));
  };
  await ensureFolder(dirname(dir), dir);
  await rm(tmp, { recursive: true, force: true });
  await ensureFolder(tmp, dir);
  try {
    await fill(tmp);
    // Every file's data and the folder's entries on disk before the swap: renames can reach the disk before the data.
    await syncTree(tmp);
  } catch (err) {
    throw await fail(err);
  }
  const had = await exists(dir);
  try {
    if (had) await rename(dir, old);
  } catch (err) {
    throw await fail(err);
  }
  try {
    await rename(tmp, dir);
  } catch (err) {
    if (had) await rename(old, dir).catch(() => {}); // the old folder back in its place (recoverDirSwap would, too)
    throw await fail(err);
  }
  // Both renames on disk before the old folder goes.
  await syncPath(dirname(dir), true);
  if (had) await rm(old, { recursive: true, force: true });
}

/** Flushes every file under `dir` (folders included, deepest first), then `dir`'s own entries. */
async function syncTree(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) await syncTree(join(dir, e.name));
    else if (e.isFile()) await syncPath(join(dir, e.name), false);
  }
  await syncPath(dir, true);
}

/**
 * fsync of a file or a folder. A folder that cannot be opened or flushed where the platform does not allow it
 * (Windows, some network file systems) is left as it is; a file that cannot be flushed is an error.
 */
async function syncPath(path: string, folder: boolean): Promise<void> {
  const unsupported = (err: unknown): boolean => folder && ['EISDIR', 'EPERM', 'EACCES', 'EINVAL', 'ENOTSUP', 'EBADF'].includes((err as NodeJS.ErrnoException).code ?? '');
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    // A file opened for writing: Windows refuses to flush a handle opened read-only (EPERM); a folder opens read-only.
    handle = await open(path, folder ? 'r' : 'r+');
  } catch (err) {
    if (unsupported(err)) return;
    throw err;
  }
  try {
    await handle.sync();
  } catch (err) {
    if (!unsupported(err)) throw err;
  } finally {
    await handle.close();
  }
}

/** The topology and weights of `model` in memory, as `model.save` hands them to a save handler. */
export async function modelArtifacts(model: LayersModel): Promise<io.ModelArtifacts | undefined> {
  const tf = loadTf();
  let artifacts: io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return artifacts;
}

/** What saveModel writes, and where. */
export interface SaveModelOptions {
  /** The folder to write (swapped in whole, atomically). */
  readonly dir: string;
  readonly model: LayersModel;
  /** Its state is saved too (optimizer.json, optimizer.bin), for a resume. */
  readonly optimizer?: Optimizer | undefined;
  /** JSON files by name (`pneumotype.json`, say). */
  readonly extra?: Readonly<Record<string, unknown>>;
  /** Binary files written as they are, in the same atomic folder (the weight average of a run, say). */
  readonly extraBinary?: Readonly<Record<string, Uint8Array>>;
}

/**
 * Saves `model` as `DIR/model.json` + `DIR/weights.bin` (loadable with tf.loadLayersModel in Node and browsers), plus
 * the optimizer's state when given and any extra JSON files, all in one atomic folder swap.
 *
 * @example await saveModel({ dir: 'runs/a/checkpoints/best', model, extra: { 'pneumotype.json': card } })
 */
export async function saveModel(options: SaveModelOptions): Promise<void> {
  const tf = loadTf();
  const artifacts = await modelArtifacts(options.model);
  if (!artifacts?.weightData || !artifacts.weightSpecs) throw new ConfigError('the model produced no weights to save');
  const weightData = tf.io.concatenateArrayBuffers(
    Array.isArray(artifacts.weightData) ? artifacts.weightData : [artifacts.weightData],
  );
  const modelJson = {
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
    convertedBy: null,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs }],
  };
  let optimizerState: { specs: io.WeightsManifestEntry[]; data: ArrayBuffer; className: string; betaPowers?: number[] } | undefined;
  if (options.optimizer) {
    const weights: NamedTensor[] = await options.optimizer.getWeights();
    try {
      const encoded = await tf.io.encodeWeights(weights);
      const powers = betaPowersOf(options.optimizer);
      optimizerState = {
        specs: encoded.specs,
        data: tf.io.concatenateArrayBuffers(Array.isArray(encoded.data) ? encoded.data : [encoded.data]),
        className: options.optimizer.getClassName(),
        ...(powers ? { betaPowers: powers.map((v) => v.dataSync()[0] as number) } : {}),
      };
    } finally {
      // getWeights hands out the optimizer's live variables, plus a fresh `iter` scalar: dispose only the latter.
      tf.dispose(weights.map((w) => w.tensor).filter((t) => !(t instanceof tf.Variable)));
    }
  }
  await writeDirAtomic(options.dir, async (tmp) => {
    await writeFile(join(tmp, MODEL_JSON), `${JSON.stringify(modelJson)}\n`);
    await writeFile(join(tmp, WEIGHTS_BIN), Buffer.from(weightData));
    if (optimizerState) {
      const { className, specs, betaPowers } = optimizerState;
      await writeFile(join(tmp, OPTIMIZER_JSON), `${JSON.stringify({ className, specs, ...(betaPowers ? { betaPowers } : {}) })}\n`);
      await writeFile(join(tmp, OPTIMIZER_BIN), Buffer.from(optimizerState.data));
    }
    for (const [name, value] of Object.entries(options.extra ?? {})) {
      await writeFile(join(tmp, name), `${JSON.stringify(value, null, 2)}\n`);
    }
    for (const [name, bytes] of Object.entries(options.extraBinary ?? {})) await writeFile(join(tmp, name), bytes);
  });
}

/** Bytes per value of the weight dtypes a model.json names (quantized weights: their stored dtype). */
const DTYPE_BYTES: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

/**
 * The bytes a weights manifest's entries take, as stored; undefined where a dtype's size is not fixed (strings).
 *
 * @example weightsManifestBytes([{ name: 'k', shape: [3, 3, 1, 16], dtype: 'float32' }]) // 576
 */
export function weightsManifestBytes(specs: readonly io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const spec of specs) {
    const per = DTYPE_BYTES[spec.quantization?.dtype ?? spec.dtype];
    if (per === undefined || !Array.isArray(spec.shape)) return undefined;
    total += spec.shape.reduce((a, b) => a * b, 1) * per;
  }
  return total;
}

/**
 * `DIR/model.json` and its weights as tfjs model artifacts, read from disk (any backend, no file:// handler needed).
 * Weights files must lie inside `DIR` and hold exactly the bytes model.json describes: nothing else is read.
 */
export async function readModelArtifacts(dir: string): Promise<io.ModelArtifacts> {
  const path = join(dir, MODEL_JSON);
  let json: { modelTopology: object; weightsManifest: { paths: string[]; weights: io.WeightsManifestEntry[] }[] };
  try {
    json = JSON.parse(await readFile(path, 'utf8')) as typeof json;
  } catch (err) {
    throw new CacheError(`cannot read the model ${quote(path)} (${messageOf(err)})`, { path, cause: err });
  }
  const specs: io.WeightsManifestEntry[] = [];
  const files: string[] = [];
  const root = await realpath(dir).catch(() => resolve(dir));
  for (const group of json.weightsManifest ?? []) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      // By name (../x, /x, C:x) and where it leads (a link out of the folder): never read from outside it.
      const named = typeof p === 'string' && p !== '' && !isRootedAnywhere(p) && isInside(root, resolve(root, p));
      const real = named ? await realpath(join(dir, p)).catch(() => resolve(root, p)) : '';
      if (!named || !isInside(root, real)) {
        throw new CacheError(`the model ${quote(path)} names the weights file ${quote(p)}, outside its folder: expected a file inside ${quote(dir)}`, { path });
      }
      files.push(join(dir, p));
    }
  }
  const unreadable = (f: string) => (err: unknown): never => {
    throw new CacheError(`cannot read the weights ${quote(f)} of ${quote(path)} (${messageOf(err)})`, { path: f, cause: err });
  };
  const sizes = await Promise.all(files.map((f) => stat(f).then((s) => s.size, unreadable(f))));
  const expected = weightsManifestBytes(specs);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (expected !== undefined && total !== expected) {
    // More is refused too (tfjs would ignore the rest): a weights file far larger than described would be read whole.
    const why = total < expected ? 'a file cut short, or from another model' : 'files from another model, or with something appended';
    throw new CacheError(`the weights of ${quote(path)} hold ${total} bytes, but its model.json describes ${expected}: ${why}`, { path });
  }
  const buffers: Buffer[] = [];
  for (const weights of files) buffers.push(await readFile(weights).catch(unreadable(weights)));
  return { modelTopology: json.modelTopology, weightSpecs: specs, weightData: arrayBufferOf(Buffer.concat(buffers)) };
}

/** The bytes of a Buffer as an ArrayBuffer of their own (a Buffer may be a view into a larger, pooled one), as tfjs takes them. */
export function arrayBufferOf(buf: Buffer): ArrayBuffer {
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
}

/** Whether `path` lies inside folder `root` (both resolved): not `..`, not `../x`, not on another drive. */
function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/** Loads `DIR/model.json` + its weights from disk (any backend, no file:// handler needed). */
export async function loadLayersModelFromDir(dir: string): Promise<LayersModel> {
  return layersModelFromArtifacts(await readModelArtifacts(dir), dir);
}

/** The SHA-256 of a model's weights as {@link readModelArtifacts} reads them: which trained (and calibrated) model it is. */
export function weightsDigest(artifacts: io.ModelArtifacts): string {
  const data = artifacts.weightData;
  const buffers = data === undefined ? [] : Array.isArray(data) ? data : [data];
  return sha256(Buffer.concat(buffers.map((b) => new Uint8Array(b))));
}

/** A layers model from artifacts read from `dir` (named in the error when the weights do not fit). */
export async function layersModelFromArtifacts(artifacts: io.ModelArtifacts, dir: string): Promise<LayersModel> {
  const tf = loadTf();
  try {
    return await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (err) {
    // A weights file cut short or from another model: tfjs names a shape, not the file.
    throw new CacheError(`cannot load the model in ${quote(dir)}: its model.json and weights do not fit (${messageOf(err)})`, { path: dir, cause: err });
  }
}

/**
 * The names of `model`'s trainable variables in the order in which tfjs's `optimizer.minimize` visits them in this
 * process, the order of an optimizer's slots: the order in which the variables were made. A model built in code and
 * the same model loaded from disk make them in different orders (a ResNet's projection shortcut before or after its
 * block's first convolution), so saved slots are matched by name ({@link alignSlots}), never by position.
 *
 * @example minimizeOrder(model) // ['stem_conv/kernel', 'stem_bn/gamma', ...]
 */
export function minimizeOrder(model: LayersModel): string[] {
  const tf = loadTf();
  const mine = new Set(model.trainableWeights.map((w) => (w.read() as unknown as { name: string }).name));
  return Object.values(tf.engine().registeredVariables).filter((v) => v.trainable && mine.has(v.name)).map((v) => v.name);
}

/**
 * `model`'s trainable variables in {@link minimizeOrder}: the list to give `optimizer.minimize`. Without one, minimize
 * takes every trainable variable of the process that the loss depends on, and tfjs-layers makes the variables of a
 * layer created or loaded with `trainable: false` trainable too (the layer only hides them from `trainableWeights`):
 * the fixed blur filters of an anti-aliased ResNet and the transfer model's gray-to-RGB filter would be trained.
 *
 * @example optimizer.minimize(loss, true, trainableVariables(model))
 */
export function trainableVariables(model: LayersModel): Variable[] {
  const byName = new Map(model.trainableWeights.map((w) => w.read() as Variable).map((v) => [v.name, v]));
  return minimizeOrder(model).map((name) => byName.get(name) as Variable);
}

/** A variable's name without the suffix that makes it unique in its process (`stem_conv/kernel_1` → `stem_conv/kernel`). */
const stem = (name: string): string => name.replace(/_\d+$/, '');

/**
 * Puts an optimizer's saved weights (`iter`, then one block of slots per kind: Adam's `…/m` then `…/v`, momentum's
 * `…/momentum`) in the order `order` (variable names, see {@link minimizeOrder}), matching each slot to its variable
 * by name. Pure: the tensors are carried along. Throws a ConfigError naming `path` when a variable has no slot.
 *
 * @example alignSlots(named, minimizeOrder(model), 'runs/a/checkpoints/last/optimizer.json')
 */
export function alignSlots<T extends { name: string }>(named: readonly T[], order: readonly string[], path: string): T[] {
  const wanted = order.map(stem);
  const [iter, slots] = [named.filter((n) => n.name === 'iter'), named.filter((n) => n.name !== 'iter')];
  if (slots.length === 0 || new Set(wanted).size !== wanted.length) return [...named];
  const kinds = [...new Set(slots.map((s) => s.name.slice(s.name.lastIndexOf('/') + 1)))];
  const aligned = kinds.flatMap((kind) => {
    const byVariable = new Map(slots.filter((s) => s.name.endsWith(`/${kind}`)).map((s) => [stem(s.name.slice(0, -kind.length - 1)), s]));
    if (byVariable.size !== wanted.length) {
      throw new ConfigError(`the optimizer state ${quote(path)} holds ${byVariable.size} "${kind}" slots, but the model has ${wanted.length} trainable weights`, { path });
    }
    return wanted.map((name) => {
      const slot = byVariable.get(name);
      if (!slot) throw new ConfigError(`the optimizer state ${quote(path)} has no "${kind}" slot for the weight ${quote(name)}`, { path });
      return slot;
    });
  });
  return [...iter, ...aligned];
}

/** Adam's running beta powers (accBeta1, accBeta2: float32 variables tfjs keeps outside getWeights), if it has them. */
function betaPowersOf(optimizer: Optimizer): Variable[] | undefined {
  const o = optimizer as unknown as { accBeta1?: unknown; accBeta2?: unknown };
  const tf = loadTf();
  return o.accBeta1 instanceof tf.Variable && o.accBeta2 instanceof tf.Variable ? [o.accBeta1, o.accBeta2] : undefined;
}

/**
 * Restores an optimizer's state saved by {@link saveModel} for `model` (its slots matched to the model's weights by
 * name); returns false when the folder holds none.
 */
export async function loadOptimizerState(dir: string, optimizer: Optimizer, model: LayersModel): Promise<boolean> {
  const tf = loadTf();
  if (!(await exists(join(dir, OPTIMIZER_JSON)))) return false;
  const damaged = (file: string) => (err: unknown): never => {
    throw new CacheError(`the optimizer state ${quote(join(dir, file))} cannot be read (${messageOf(err)})`, { path: join(dir, file), cause: err });
  };
  const meta = await readFile(join(dir, OPTIMIZER_JSON), 'utf8')
    .then((text) => JSON.parse(text) as { className: string; specs: io.WeightsManifestEntry[]; betaPowers?: unknown })
    .catch(damaged(OPTIMIZER_JSON));
  if (meta.className !== optimizer.getClassName()) {
    throw new ConfigError(`the checkpoint ${quote(dir)} holds ${meta.className} state, but the run uses ${optimizer.getClassName()}`, { path: dir });
  }
  const bin = await readFile(join(dir, OPTIMIZER_BIN)).catch(damaged(OPTIMIZER_BIN));
  let map: ReturnType<typeof tf.io.decodeWeights>;
  try {
    map = tf.io.decodeWeights(arrayBufferOf(bin), meta.specs);
  } catch (err) {
    damaged(OPTIMIZER_BIN)(err);
  }
  const named = meta.specs.map((s) => ({ name: s.name, tensor: map[s.name] as NonNullable<(typeof map)[string]> }));
  try {
    await optimizer.setWeights(alignSlots(named, minimizeOrder(model), join(dir, OPTIMIZER_JSON)));
    // setWeights computes Adam's beta powers as beta^(t+1), where training multiplied them step by step in float32:
    // the saved products make a resumed run continue exactly (older checkpoints have none, and resume as before).
    // Taken only where each is what the step count makes it, up to float32 rounding (1 - power within 0.1 %): a file
    // edited by hand or damaged falls back to setWeights's values, as an older checkpoint does.
    const powers = betaPowersOf(optimizer);
    const saved = meta.betaPowers;
    if (powers && Array.isArray(saved) && saved.length === powers.length) {
      const computed = powers.map((v) => v.dataSync()[0] as number);
      const plausible = saved.every((v, i) => {
        const c = computed[i] as number;
        return typeof v === 'number' && v >= 0 && v < 1 && Math.abs(v - c) <= 1e-3 * (1 - c);
      });
      if (plausible) tf.tidy(() => powers.forEach((variable, i) => variable.assign(tf.scalar(saved[i] as number))));
    }
  } finally {
    tf.dispose(named.map((n) => n.tensor)); // the optimizer's variables hold their own references
  }
  return true;
}
