// Faster training on native TensorFlow (tfjs-node): patches a model's layer instances to run fused native ops.
//
// tfjs-layers builds batch normalisation, ReLU gradients and the stem convolution's gradient out of many small ops;
// the tfjs-node backend can run any TensorFlow op by name, so here the `call` of selected layer INSTANCES is replaced
// (while training only) by one wrapped in tf.customGrad around the native fused op and its native gradient:
// - BatchNormalization: FusedBatchNormV3 / FusedBatchNormGradV3; the moving statistics follow tfjs-layers exactly
//   (moving = moving - (moving - batchStat) * (1 - momentum), with the biased batch variance).
// - ReLU (and ReLU(maxValue 6), Activation('relu')): Relu / ReluGrad (Relu6 / Relu6Grad) instead of tfjs's Step chain.
// - Conv2D: the plain conv2d op, whose gradient is per input, so that nothing is computed for the image at the stem
//   (tf.fused.conv2d always computes the input gradient).
// - MaxPooling2D: oneDNN's max pooling with its workspace (_MklNativeMaxPool / _MklNativeMaxPoolGrad, what TensorFlow's
//   graph rewrite uses; its eager mode does not) instead of Eigen's MaxPoolGrad, which recomputes the argmax. Only
//   where libtensorflow has these kernels (checked once with a tiny pooling).
// - Adam (tf.train.adam), when passed as `optimizer`: one native ResourceApplyAdam per variable instead of ~14 ops
//   with ~6 scalar uploads. The variable and its moments are mirrored in TensorFlow resource variables; after every
//   step the results are read back into the tfjs variables, so getWeights/setWeights, checkpoints and the model see
//   the usual state. ResourceApplyAdam's epsilon sits outside the bias correction; passing epsilon * sqrt(1 - beta2^t)
//   makes its update tfjs's exactly (up to float rounding).
// Nothing about the model changes: no custom classes, the same weights and model.json; inference (training false)
// runs the original code. On any other backend the patch is a no-op.
import type { LayersModel, Optimizer, Tensor, Tensor4D, Variable } from '@tensorflow/tfjs';
import { loadTf, type Tf } from './tf.js';

/** Which kinds of layers to patch (all true by default). */
export interface FastTrainingOptions {
  readonly batchNorm?: boolean;
  readonly relu?: boolean;
  readonly conv?: boolean;
  readonly maxPool?: boolean;
  /** Also run this optimizer's updates natively, when it is a tf.train.adam (left alone otherwise). */
  readonly optimizer?: Optimizer;
}

/** The kind of patch a layer gets. */
export type FastLayerKind = 'batchNorm' | 'relu' | 'relu6' | 'conv' | 'maxPool';

/** One layer of the model as {@link planFastTraining} sees it. */
export interface FastLayerPlan {
  readonly name: string;
  readonly className: string;
  /**
   * The patch it gets, or null when it keeps its original call. maxPool also needs libtensorflow's oneDNN kernels,
   * which enableFastTraining checks (without them the layer keeps its call).
   */
  readonly kind: FastLayerKind | null;
  /** Why it keeps its original call (only for classes that could be patched). */
  readonly reason?: string;
}

/** What {@link planFastTraining} decided for a model. */
export interface FastTrainingPlan {
  readonly layers: readonly FastLayerPlan[];
  /** The layers that get a patch. */
  readonly patched: number;
}

type Layer = LayersModel['layers'][number];
type CallFn = (inputs: Tensor | Tensor[], kwargs: Record<string, unknown>) => Tensor | Tensor[];

/** A tfjs-node eager-op attribute. */
interface OpAttr {
  readonly name: string;
  readonly type: number;
  readonly value: unknown;
}

/** The part of tfjs-node's NodeJSKernelBackend used here (checked at run time: it is not public API). */
interface NativeBackend {
  readonly binding: {
    readonly TF_ATTR_TYPE: number;
    readonly TF_ATTR_FLOAT: number;
    readonly TF_ATTR_BOOL: number;
    readonly TF_ATTR_STRING: number;
    readonly TF_ATTR_INT: number;
    readonly TF_ATTR_SHAPE: number;
    readonly TF_FLOAT: number;
  };
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: Tensor[]): Tensor;
  executeMultipleOutputs(name: string, attrs: OpAttr[], inputs: Tensor[], numOutputs: number): Tensor[];
}

/** The internals of a tfjs-layers BatchNormalization instance read at call time. */
interface BatchNormInternals {
  readonly axis: number;
  readonly momentum: number;
  readonly epsilon: number;
  readonly center: boolean;
  readonly scale: boolean;
  readonly gamma?: LayerVariable;
  readonly beta?: LayerVariable;
  readonly movingMean: LayerVariable;
  readonly movingVariance: LayerVariable;
}

interface LayerVariable {
  read(): Tensor;
  write(value: Tensor): unknown;
}

interface PoolInternals {
  readonly poolSize: number[];
  readonly strides: number[];
  readonly padding: string;
}

interface ConvInternals {
  readonly kernel: LayerVariable;
  readonly bias?: LayerVariable | null;
  readonly strides: number[];
  readonly padding: string;
  readonly dilationRate: number[];
  readonly activation?: { apply(x: Tensor): Tensor; getClassName(): string } | null;
}

/** Layers patched by a live enableFastTraining. */
const active = new WeakSet<Layer>();

/**
 * Replaces the `call` of one layer instance by `make(original)` (the layer's own call, bound to it) and returns the
 * function that puts the original back: an own property restored, or the class's method shown again. The model's
 * classes, weights and saved form are untouched.
 *
 * @example const restore = replaceLayerCall(layer, (original) => (x, kwargs) => original(x, { ...kwargs, training: false }))
 */
export function replaceLayerCall(layer: Layer, make: (original: CallFn) => CallFn): () => void {
  const target = layer as unknown as { call: CallFn };
  const own = Object.prototype.hasOwnProperty.call(layer, 'call');
  const before = target.call;
  target.call = make((inputs, kwargs) => before.call(layer, inputs, kwargs));
  return () => {
    if (own) target.call = before;
    else Reflect.deleteProperty(layer, 'call');
  };
}

function config(layer: Layer): Record<string, unknown> {
  return layer.getConfig() as Record<string, unknown>;
}

function activationName(layer: Layer): string | undefined {
  const a = (layer as unknown as { activation?: { getClassName?: () => string } }).activation;
  return typeof a?.getClassName === 'function' ? a.getClassName() : undefined;
}

/** The patch a layer can take, or the reason it cannot (undefined for classes never patched). */
function classify(layer: Layer, options: FastTrainingOptions): { kind: FastLayerKind } | { reason: string } | undefined {
  const className = layer.getClassName();
  if (className === 'BatchNormalization') {
    if (options.batchNorm === false) return { reason: 'batchNorm patches are turned off' };
    if (!layer.trainable) return { reason: 'the layer is frozen (it normalises with its moving statistics: holdFrozenBatchNorms of lib/transfer.ts)' };
    const c = config(layer);
    const axis = c.axis;
    if (axis !== -1 && axis !== 3) return { reason: `axis ${JSON.stringify(axis)} is not the last one of a 4-D input` };
    if (typeof c.momentum !== 'number' || typeof c.epsilon !== 'number') return { reason: 'momentum or epsilon is not a number' };
    if (!layer.built) return { reason: 'the layer is not built' };
    return { kind: 'batchNorm' };
  }
  if (className === 'ReLU' || className === 'Activation') {
    if (options.relu === false) return { reason: 'relu patches are turned off' };
    if (className === 'Activation') {
      const name = activationName(layer);
      return name === 'relu' ? { kind: 'relu' } : { reason: `activation ${JSON.stringify(name)} is not relu` };
    }
    const maxValue = config(layer).maxValue;
    if (maxValue === undefined || maxValue === null) return { kind: 'relu' };
    if (maxValue === 6) return { kind: 'relu6' };
    return { reason: `maxValue ${JSON.stringify(maxValue)} is neither unset nor 6` };
  }
  if (className === 'MaxPooling2D') {
    if (options.maxPool === false) return { reason: 'maxPool patches are turned off' };
    const c = config(layer);
    if (c.dataFormat !== 'channelsLast') return { reason: `dataFormat ${JSON.stringify(c.dataFormat)} is not channelsLast` };
    if (c.padding !== 'same' && c.padding !== 'valid') return { reason: `padding ${JSON.stringify(c.padding)} is not same or valid` };
    return { kind: 'maxPool' };
  }
  if (className === 'Conv2D') {
    if (options.conv === false) return { reason: 'conv patches are turned off' };
    const c = config(layer);
    if (c.dataFormat !== 'channelsLast') return { reason: `dataFormat ${JSON.stringify(c.dataFormat)} is not channelsLast` };
    if (c.padding !== 'same' && c.padding !== 'valid') return { reason: `padding ${JSON.stringify(c.padding)} is not same or valid` };
    if (!layer.built) return { reason: 'the layer is not built' };
    return { kind: 'conv' };
  }
  return undefined;
}

/**
 * Which layers of `model` {@link enableFastTraining} patches, and why the others of a patchable class are left alone
 * (pure: looks at the layers' configurations only, whatever the backend).
 *
 * @example planFastTraining(model).layers.filter((l) => l.kind === 'batchNorm').length
 */
export function planFastTraining(model: LayersModel, options: FastTrainingOptions = {}): FastTrainingPlan {
  const layers: FastLayerPlan[] = model.layers.map((layer) => {
    const c = classify(layer, options);
    const base = { name: layer.name, className: layer.getClassName() };
    if (c === undefined) return { ...base, kind: null };
    return 'kind' in c ? { ...base, kind: c.kind } : { ...base, kind: null, reason: c.reason };
  });
  return { layers, patched: layers.filter((l) => l.kind !== null).length };
}

/** The native backend, when tfjs runs on tfjs-node (or tfjs-node-gpu) and exposes what the patches need. */
function nativeBackend(tf: Tf): NativeBackend | undefined {
  if (tf.getBackend() !== 'tensorflow') return undefined;
  const b = tf.backend() as unknown as Partial<NativeBackend>;
  const binding = b.binding as Partial<NativeBackend['binding']> | undefined;
  const ok =
    typeof b.executeSingleOutput === 'function' &&
    typeof b.executeMultipleOutputs === 'function' &&
    [binding?.TF_ATTR_TYPE, binding?.TF_ATTR_FLOAT, binding?.TF_ATTR_BOOL, binding?.TF_ATTR_STRING, binding?.TF_ATTR_INT, binding?.TF_ATTR_SHAPE, binding?.TF_FLOAT].every(
      (v) => typeof v === 'number',
    );
  return ok ? (b as NativeBackend) : undefined;
}

/** What Activation and pooling layers do first in their call (a test hook of tfjs-layers; usually unset). */
function callHook(layer: Layer, inputs: Tensor | Tensor[], kwargs: Record<string, unknown>): void {
  (layer as unknown as { invokeCallHook?: (i: Tensor | Tensor[], k: Record<string, unknown>) => void }).invokeCallHook?.(inputs, kwargs);
}

function exactlyOne(inputs: Tensor | Tensor[]): Tensor | undefined {
  if (!Array.isArray(inputs)) return inputs;
  return inputs.length === 1 ? inputs[0] : undefined;
}

/** Per backend: whether the oneDNN max pooling kernels work (see Patcher.mklMaxPoolWorks). */
const mklChecked = new WeakMap<object, boolean>();

/** Builds the patched `call` of each kind; `original` is the layer's own call, used for anything not handled. */
class Patcher {
  private readonly floatType: OpAttr[];
  constructor(
    private readonly tf: Tf,
    private readonly backend: NativeBackend,
  ) {
    const b = backend.binding;
    this.floatType = [{ name: 'T', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT }];
  }

  /** The backend is still the native one (someone may have switched backends since the patch). */
  private usable(x: Tensor | undefined): x is Tensor {
    return x !== undefined && x.dtype === 'float32' && this.tf.getBackend() === 'tensorflow';
  }

  private batchNormAttrs(epsilon: number, forward: boolean): OpAttr[] {
    const b = this.backend.binding;
    return [
      { name: 'T', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
      { name: 'U', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
      { name: 'epsilon', type: b.TF_ATTR_FLOAT, value: epsilon },
      ...(forward ? [{ name: 'exponential_avg_factor', type: b.TF_ATTR_FLOAT, value: 1 }] : []),
      { name: 'data_format', type: b.TF_ATTR_STRING, value: 'NHWC' },
      { name: 'is_training', type: b.TF_ATTR_BOOL, value: true },
    ];
  }

  batchNorm(layer: Layer, original: CallFn): CallFn {
    const { tf, backend } = this;
    const bn = layer as unknown as BatchNormInternals;
    return (inputs, kwargs) => {
      const x = exactlyOne(inputs);
      const channels = x?.shape[3];
      if (kwargs.training !== true || !this.usable(x) || x.rank !== 4 || channels === undefined) return original(inputs, kwargs);
      const { momentum, epsilon } = bn;
      const gamma = bn.scale && bn.gamma ? bn.gamma.read() : undefined;
      const beta = bn.center && bn.beta ? bn.beta.read() : undefined;
      const count = x.size / channels;
      const forwardAttrs = this.batchNormAttrs(epsilon, true);
      const backwardAttrs = this.batchNormAttrs(epsilon, false);
      return tf.tidy(() => {
        const scale = gamma ?? tf.ones([channels]);
        const offset = beta ?? tf.zeros([channels]);
        const params = [...(gamma ? [gamma] : []), ...(beta ? [beta] : [])];
        const op = tf.customGrad((...args) => {
          const save = args.pop() as (tensors: Tensor[]) => void;
          const input = args[0] as Tensor;
          const [y, mean, variance, r1, r2, r3] = backend.executeMultipleOutputs(
            'FusedBatchNormV3',
            forwardAttrs,
            [input, scale, offset, bn.movingMean.read(), bn.movingVariance.read()],
            6,
          ) as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
          // The moving statistics as tfjs-layers updates them: its variance is the biased one, FusedBatchNorm's
          // batch_variance the unbiased one (times n / (n - 1)). Runs inside customGrad's forward: not on the tape.
          const decay = 1 - momentum;
          const update = (variable: LayerVariable, value: Tensor): void => {
            const orig = variable.read();
            variable.write(tf.sub(orig, tf.mul(tf.sub(orig, value), decay)));
          };
          update(bn.movingMean, mean);
          update(bn.movingVariance, count > 1 ? tf.mul(variance, (count - 1) / count) : variance);
          save([input, scale, r1, r2, r3]);
          return {
            value: y,
            gradFunc: (dy: Tensor, saved: Tensor[]) => {
              const [dx, dScale, dOffset, r4, r5] = backend.executeMultipleOutputs(
                'FusedBatchNormGradV3',
                backwardAttrs,
                [dy, ...saved],
                5,
              ) as [Tensor, Tensor, Tensor, Tensor, Tensor];
              tf.dispose([r4, r5, ...(gamma ? [] : [dScale]), ...(beta ? [] : [dOffset])]);
              return [dx, ...(gamma ? [dScale] : []), ...(beta ? [dOffset] : [])];
            },
          };
        });
        return op(x, ...params);
      });
    };
  }

  relu(layer: Layer, original: CallFn, six: boolean): CallFn {
    const { tf, backend, floatType } = this;
    const [forward, backward] = six ? ['Relu6', 'Relu6Grad'] : ['Relu', 'ReluGrad'];
    const op = tf.customGrad((...args) => {
      const save = args.pop() as (tensors: Tensor[]) => void;
      const y = backend.executeSingleOutput(forward, floatType, [args[0] as Tensor]);
      // ReluGrad/Relu6Grad accept the op's outputs in place of its inputs: (0, 6) maps to (0, 6).
      save([y]);
      return { value: y, gradFunc: (dy: Tensor, saved: Tensor[]) => backend.executeSingleOutput(backward, floatType, [dy, saved[0] as Tensor]) };
    });
    return (inputs, kwargs) => {
      const x = exactlyOne(inputs);
      if (kwargs.training !== true || !this.usable(x)) return original(inputs, kwargs);
      callHook(layer, inputs, kwargs);
      return op(x);
    };
  }

  private poolAttrs(pool: PoolInternals): OpAttr[] | undefined {
    const b = this.backend.binding;
    const [ph, pw] = pool.poolSize;
    const [sh, sw] = pool.strides;
    if (ph === undefined || pw === undefined || sh === undefined || sw === undefined) return undefined;
    return [
      ...this.floatType,
      { name: 'ksize', type: b.TF_ATTR_INT, value: [1, ph, pw, 1] },
      { name: 'strides', type: b.TF_ATTR_INT, value: [1, sh, sw, 1] },
      { name: 'padding', type: b.TF_ATTR_STRING, value: pool.padding === 'same' ? 'SAME' : 'VALID' },
      { name: 'data_format', type: b.TF_ATTR_STRING, value: 'NHWC' },
      { name: 'workspace_enabled', type: b.TF_ATTR_BOOL, value: true },
      // The oneDNN kernels are registered under this label; eager mode finds them only when asked for it.
      { name: '_kernel', type: b.TF_ATTR_STRING, value: 'MklNameChangeOp' },
    ];
  }

  /** oneDNN max pooling with workspace, forward and backward. */
  private mklMaxPool(attrs: OpAttr[]): (x: Tensor) => Tensor {
    const { tf, backend } = this;
    return tf.customGrad((...args) => {
      const save = args.pop() as (tensors: Tensor[]) => void;
      const x = args[0] as Tensor;
      // The workspace is uint8 in TensorFlow (tfjs labels it int32); it only travels back to the gradient op.
      const [y, workspace] = backend.executeMultipleOutputs('_MklNativeMaxPool', attrs, [x], 2) as [Tensor, Tensor];
      save([x, y, workspace]);
      return {
        value: y,
        gradFunc: (dy: Tensor, saved: Tensor[]) => {
          const [input, output, ws] = saved as [Tensor, Tensor, Tensor];
          return backend.executeSingleOutput('_MklNativeMaxPoolGrad', attrs, [input, output, dy, ws]);
        },
      };
    }) as (x: Tensor) => Tensor;
  }

  /** Whether libtensorflow has the oneDNN pooling kernels and they agree with MaxPool/MaxPoolGrad (tried once). */
  mklMaxPoolWorks(): boolean {
    const cached = mklChecked.get(this.backend);
    if (cached !== undefined) return cached;
    const { tf } = this;
    const attrs = this.poolAttrs({ poolSize: [3, 3], strides: [2, 2], padding: 'same' });
    let ok = false;
    try {
      ok = attrs !== undefined && tf.tidy(() => {
        const x = tf.tensor4d(Array.from({ length: 2 * 5 * 5 * 2 }, (_, i) => Math.sin(i * 1.7)), [2, 5, 5, 2]);
        const dy = tf.tensor4d(Array.from({ length: 2 * 3 * 3 * 2 }, (_, i) => Math.cos(i)), [2, 3, 3, 2]);
        const pool = this.mklMaxPool(attrs);
        const [y, dx] = [pool(x), tf.grad((t: Tensor) => pool(t).mul(dy).sum())(x)];
        const [yRef, dxRef] = [tf.maxPool(x as Tensor4D, 3, 2, 'same'), tf.grad((t: Tensor) => tf.maxPool(t as Tensor4D, 3, 2, 'same').mul(dy).sum())(x)];
        const diff = Math.max(y.sub(yRef).abs().max().dataSync()[0] ?? 1, dx.sub(dxRef).abs().max().dataSync()[0] ?? 1);
        return diff < 1e-6;
      });
    } catch {
      ok = false;
    }
    mklChecked.set(this.backend, ok);
    return ok;
  }

  maxPool(layer: Layer, original: CallFn): CallFn {
    const attrs = this.poolAttrs(layer as unknown as PoolInternals);
    const pool = attrs ? this.mklMaxPool(attrs) : undefined;
    return (inputs, kwargs) => {
      const x = exactlyOne(inputs);
      if (kwargs.training !== true || !pool || !this.usable(x) || x.rank !== 4) return original(inputs, kwargs);
      callHook(layer, inputs, kwargs);
      return pool(x);
    };
  }

  conv(layer: Layer, original: CallFn): CallFn {
    const { tf } = this;
    const conv = layer as unknown as ConvInternals;
    return (inputs, kwargs) => {
      const x = exactlyOne(inputs);
      if (kwargs.training !== true || !this.usable(x) || x.rank !== 4) return original(inputs, kwargs);
      const [sh, sw] = conv.strides;
      const [dh, dw] = conv.dilationRate;
      if (sh === undefined || sw === undefined || dh === undefined || dw === undefined) return original(inputs, kwargs);
      return tf.tidy(() => {
        // tf.conv2d, not tf.fused.conv2d: its gradient is per input, so the image's is never computed.
        let y: Tensor = tf.conv2d(x as Tensor4D, conv.kernel.read() as Tensor4D, [sh, sw], conv.padding === 'same' ? 'same' : 'valid', 'NHWC', [dh, dw]);
        if (conv.bias) y = tf.add(y, conv.bias.read());
        if (conv.activation && conv.activation.getClassName() !== 'linear') y = conv.activation.apply(y);
        return y;
      });
    };
  }
}

/** The internals of a tfjs AdamOptimizer read and updated here and in lib/graph-train.ts (the names of tfjs-core 4.x). */
export interface AdamInternals {
  learningRate: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly accBeta1: Variable;
  readonly accBeta2: Variable;
  /** Steps taken (undefined before the first). */
  iterations_?: number;
  accumulatedFirstMoment: Array<{ originalName: string; variable: Variable } | undefined>;
  accumulatedSecondMoment: Array<{ originalName: string; variable: Variable } | undefined>;
  incrementIterations(): void;
  applyGradients(gradients: Record<string, Tensor> | Array<{ name: string; tensor: Tensor }>): void;
}

/** The TensorFlow resource variables mirroring one tfjs variable and its two moments. */
interface AdamSlot {
  readonly name: string;
  readonly handles: [value: Tensor, m: Tensor, v: Tensor];
  /** What each resource holds: the tfjs tensors' data last written to or read from it. */
  synced: [value: object | undefined, m: object | undefined, v: object | undefined];
}

let resourceCounter = 0;

/** Adam through ResourceApplyAdam; see the header of this file. */
class NativeAdam {
  private readonly slots: Array<AdamSlot | undefined> = [];
  private readonly floatDtype: OpAttr[];
  private readonly applyAttrs: OpAttr[];

  constructor(
    private readonly tf: Tf,
    private readonly backend: NativeBackend,
    private readonly adam: AdamInternals,
  ) {
    const b = backend.binding;
    this.floatDtype = [{ name: 'dtype', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT }];
    this.applyAttrs = [
      { name: 'T', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
      { name: 'use_locking', type: b.TF_ATTR_BOOL, value: false },
      { name: 'use_nesterov', type: b.TF_ATTR_BOOL, value: false },
    ];
  }

  private handle(shape: number[]): Tensor {
    const b = this.backend.binding;
    return this.backend.executeSingleOutput(
      'VarHandleOp',
      [
        { name: 'container', type: b.TF_ATTR_STRING, value: '' },
        { name: 'shared_name', type: b.TF_ATTR_STRING, value: `pneumotype_fast_adam_${++resourceCounter}` },
        ...this.floatDtype,
        { name: 'shape', type: b.TF_ATTR_SHAPE, value: shape },
      ],
      [],
    );
  }

  private write(handle: Tensor, value: Tensor): void {
    this.backend.executeMultipleOutputs('AssignVariableOp', this.floatDtype, [handle, value], 0);
  }

  private read(handle: Tensor): Tensor {
    return this.backend.executeSingleOutput('ReadVariableOp', this.floatDtype, [handle]);
  }

  private destroy(slot: AdamSlot): void {
    const b = this.backend.binding;
    for (const h of slot.handles) {
      this.backend.executeMultipleOutputs('DestroyResourceOp', [{ name: 'ignore_lookup_error', type: b.TF_ATTR_BOOL, value: true }], [h], 0);
    }
    this.tf.dispose(slot.handles);
  }

  /** Mirrors of `value` and its moments, (re)written from the tfjs side wherever something else changed that. */
  private slot(i: number, name: string, tensors: [Variable, Variable, Variable]): AdamSlot {
    let slot = this.slots[i];
    if (slot && slot.name !== name) {
      this.destroy(slot);
      slot = undefined;
    }
    if (!slot) {
      const shape = tensors[0].shape;
      const handles: AdamSlot['handles'] = [this.handle(shape), this.handle(shape), this.handle(shape)];
      for (const h of handles) this.tf.keep(h);
      slot = { name, handles, synced: [undefined, undefined, undefined] };
      this.slots[i] = slot;
    }
    for (let k = 0; k < 3; k++) {
      const t = tensors[k] as Variable;
      if (slot.synced[k] !== t.dataId) {
        this.write(slot.handles[k] as Tensor, t);
        slot.synced[k] = t.dataId;
      }
    }
    return slot;
  }

  /** tfjs-core's AdamOptimizer.applyGradients, with the update of each variable as one native op. */
  applyGradients(gradients: Record<string, Tensor> | Array<{ name: string; tensor: Tensor }>): void {
    const { tf, adam } = this;
    const names = Array.isArray(gradients) ? gradients.map((g) => g.name) : Object.keys(gradients);
    tf.tidy(() => {
      const lr = tf.scalar(adam.learningRate);
      const beta1 = tf.scalar(adam.beta1);
      const beta2 = tf.scalar(adam.beta2);
      const epsilon = tf.mul(tf.sqrt(tf.sub(1, adam.accBeta2)), adam.epsilon);
      names.forEach((name, i) => {
        const value = tf.engine().registeredVariables[name];
        if (!value) return;
        const first = (adam.accumulatedFirstMoment[i] ??= { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) });
        const second = (adam.accumulatedSecondMoment[i] ??= { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) });
        const gradient = Array.isArray(gradients) ? gradients[i]?.tensor : gradients[name];
        if (!gradient) return;
        const tensors: [Variable, Variable, Variable] = [value, first.variable, second.variable];
        const slot = this.slot(i, name, tensors);
        this.backend.executeMultipleOutputs(
          'ResourceApplyAdam',
          this.applyAttrs,
          [...slot.handles, adam.accBeta1, adam.accBeta2, lr, beta1, beta2, epsilon, gradient],
          0,
        );
        tensors.forEach((t, k) => {
          const next = this.read(slot.handles[k] as Tensor);
          t.assign(next);
          slot.synced[k] = t.dataId;
        });
      });
      adam.accBeta1.assign(tf.mul(adam.accBeta1, adam.beta1));
      adam.accBeta2.assign(tf.mul(adam.accBeta2, adam.beta2));
    });
    adam.incrementIterations();
  }

  dispose(): void {
    for (const slot of this.slots) if (slot) this.destroy(slot);
    this.slots.length = 0;
  }

  /** Whether ResourceApplyAdam runs here and gives tfjs's update (tried once per backend on a 2-element variable). */
  static works(tf: Tf, backend: NativeBackend): boolean {
    const cached = adamChecked.get(backend);
    if (cached !== undefined) return cached;
    let ok = false;
    const scratch = tf.train.adam(0.1, 0.8, 0.9, 1e-3);
    const reference = tf.train.adam(0.1, 0.8, 0.9, 1e-3);
    const a = tf.tidy(() => tf.variable(tf.tensor1d([0.5, -1]), true, `pneumotype_fast_adam_probe_${++resourceCounter}`));
    const b = tf.tidy(() => tf.variable(tf.tensor1d([0.5, -1]), true, `pneumotype_fast_adam_probe_${++resourceCounter}`));
    let native: NativeAdam | undefined;
    try {
      native = new NativeAdam(tf, backend, scratch as unknown as AdamInternals);
      for (const g of [[0.3, -0.2], [-0.1, 0.4]]) {
        tf.tidy(() => {
          native?.applyGradients({ [a.name]: tf.tensor1d(g) });
          reference.applyGradients([{ name: b.name, tensor: tf.tensor1d(g) }]);
        });
      }
      const [x, y] = [a.dataSync(), b.dataSync()];
      ok = x.every((v, i) => Math.abs(v - (y[i] ?? Number.NaN)) < 1e-6);
    } catch {
      ok = false;
    } finally {
      native?.dispose();
      tf.dispose([a, b]);
      scratch.dispose();
      reference.dispose();
    }
    adamChecked.set(backend, ok);
    return ok;
  }
}

const adamChecked = new WeakMap<object, boolean>();

/** The optimizer as an Adam whose internals are as expected, or undefined. */
export function adamOf(optimizer: Optimizer): AdamInternals | undefined {
  const o = optimizer as unknown as Partial<AdamInternals> & { getClassName?: () => string };
  if (o.getClassName?.() !== 'Adam') return undefined;
  const ok =
    typeof o.learningRate === 'number' && typeof o.beta1 === 'number' && typeof o.beta2 === 'number' && typeof o.epsilon === 'number' &&
    o.accBeta1 !== undefined && o.accBeta2 !== undefined && Array.isArray(o.accumulatedFirstMoment) && Array.isArray(o.accumulatedSecondMoment) &&
    typeof o.incrementIterations === 'function' && typeof o.applyGradients === 'function';
  return ok ? (o as AdamInternals) : undefined;
}

/** Optimizers patched by a live enableFastTraining. */
const activeOptimizers = new WeakSet<object>();

/** Replaces the optimizer's applyGradients by {@link NativeAdam}'s; returns the undo, or undefined when not an Adam. */
function patchAdam(tf: Tf, backend: NativeBackend, optimizer: Optimizer): (() => void) | undefined {
  const adam = adamOf(optimizer);
  if (!adam || activeOptimizers.has(optimizer) || !NativeAdam.works(tf, backend)) return undefined;
  const native = new NativeAdam(tf, backend, adam);
  const own = Object.prototype.hasOwnProperty.call(optimizer, 'applyGradients');
  const before = adam.applyGradients;
  activeOptimizers.add(optimizer);
  adam.applyGradients = (gradients) => {
    // Someone switched backends: the tfjs update (the moments are always in the tfjs variables).
    if (tf.getBackend() !== 'tensorflow') return before.call(adam, gradients);
    native.applyGradients(gradients);
  };
  return () => {
    activeOptimizers.delete(optimizer);
    if (own) adam.applyGradients = before;
    else Reflect.deleteProperty(optimizer, 'applyGradients');
    native.dispose();
  };
}

/**
 * Makes training `model` faster on native TensorFlow (tfjs-node): the `call` of its BatchNormalization, ReLU,
 * Conv2D and MaxPooling2D layer instances (see {@link planFastTraining}) is replaced by one that runs fused native
 * ops while `training` is true, and the original otherwise; with `optimizer` (a tf.train.adam), its update runs as one
 * native op per variable. Forward values, gradients, moving statistics and updates match the original within float
 * rounding; the model's classes, weights and saved format and the optimizer's state do not change. A no-op (returning
 * a no-op) on other backends. Returns the undo function, which restores the originals and frees the native mirrors
 * of the optimizer's variables: call it before disposing the optimizer.
 *
 * @example
 * const undo = enableFastTraining(model, { optimizer });
 * try { optimizer.minimize(() => loss(model.apply(xs, { training: true }))); } finally { undo(); }
 */
export function enableFastTraining(model: LayersModel, options: FastTrainingOptions = {}): () => void {
  const tf = loadTf();
  const backend = nativeBackend(tf);
  if (!backend) return () => {};
  const patcher = new Patcher(tf, backend);
  const restores: Array<() => void> = [];
  for (const layer of model.layers) {
    if (active.has(layer)) continue;
    const c = classify(layer, options);
    if (c === undefined || !('kind' in c)) continue;
    if (c.kind === 'maxPool' && !patcher.mklMaxPoolWorks()) continue;
    const restore = replaceLayerCall(layer, (original) =>
      c.kind === 'batchNorm'
        ? patcher.batchNorm(layer, original)
        : c.kind === 'conv'
          ? patcher.conv(layer, original)
          : c.kind === 'maxPool'
            ? patcher.maxPool(layer, original)
            : patcher.relu(layer, original, c.kind === 'relu6'));
    active.add(layer);
    restores.push(() => {
      active.delete(layer);
      restore();
    });
  }
  const undoAdam = options.optimizer ? patchAdam(tf, backend, options.optimizer) : undefined;
  let undone = false;
  return () => {
    if (undone) return;
    undone = true;
    undoAdam?.();
    for (const restore of restores) restore();
  };
}
