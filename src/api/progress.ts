/**
 * Load progress over every phase of Engine.load: download (or cache reads), GPU quantization and
 * pipeline compilation, each with its share of `fraction`, which never decreases and reaches 1 with
 * the 'done' event, emitted once the model can generate.
 *
 * The loader (src/loader/weights.ts) reports 'metadata', 'cache', 'weights' and 'quantize' per
 * model (a draft model is a second one); its own end-of-weights 'done' is not passed on. Compile
 * progress comes from the Runtime (`onCompile`): every pipeline compiled anew while a model's graph
 * is built (a reload or a draft reuses the device's compiled ones), settled when it is built.
 */
import type { Runtime } from '../kernels/runtime.ts';
import type { LoadProgress } from '../loader/weights.ts';

/** Shares of the whole load (phases with no work give theirs to the others). */
const SHARE = { download: 0.55, quantize: 0.2, compile: 0.25 };

interface ModelState {
  cache: { done: number; total: number };
  weights: { done: number; total: number };
  quantize: { done: number; total: number };
  tensorsDone: number;
  tensorsTotal: number;
  finished: boolean;
}

export class LoadProgressTracker {
  private readonly onProgress: ((p: LoadProgress) => void) | undefined;
  private readonly models: ModelState[];
  private fraction = 0;
  private building = false;
  private pipelinesMade = 0;
  private pipelinesDone = 0;
  private sealed = false;
  private ended = false;
  private rt: Runtime | null = null;

  constructor(onProgress: ((p: LoadProgress) => void) | undefined, models: number) {
    this.onProgress = onProgress;
    this.models = Array.from({ length: models }, () => ({
      cache: { done: 0, total: 0 },
      weights: { done: 0, total: 0 },
      quantize: { done: 0, total: 0 },
      tensorsDone: 0,
      tensorsTotal: 0,
      finished: false,
    }));
  }

  /** Counts the pipelines `rt` compiles from now on until detach() (Runtime.onCompile). */
  attach(rt: Runtime): void {
    this.rt = rt;
    rt.onCompile = (compiled) => {
      // quantizer pipelines (made while the weights load) are waited for by 'quantize'
      if (!this.building || this.ended) return;
      this.pipelinesMade++;
      compiled.then(
        () => {
          this.pipelinesDone++;
          try {
            if (this.sealed) this.compileEvent();
          } catch {
            // a throwing onProgress cannot fail the load from here
          }
        },
        () => {},
      );
    };
  }

  detach(): void {
    if (this.rt) this.rt.onCompile = null;
    this.rt = null;
    this.ended = true;
  }

  /** The onProgress of model `i`'s loader. */
  loader(i: number): (p: LoadProgress) => void {
    return (p) => {
      if (this.ended) return;
      const m = this.models[i]!;
      m.tensorsDone = p.tensorsDone;
      m.tensorsTotal = p.tensorsTotal;
      if (p.phase === 'metadata') this.building = false;
      else if (p.phase === 'cache') m.cache = { done: p.bytesDone, total: p.bytesTotal };
      else if (p.phase === 'weights') m.weights = { done: p.bytesDone, total: p.bytesTotal };
      else if (p.phase === 'quantize') m.quantize = { done: p.bytesDone, total: p.bytesTotal };
      else if (p.phase === 'done') {
        // the weights are built; the graph (its pipelines) comes next
        m.finished = true;
        this.building = true;
        return;
      }
      this.emit(p);
    };
  }

  /** Every model's graph is built: the compile phase's total is known. */
  seal(): void {
    this.sealed = true;
    if (this.pipelinesMade > 0) this.compileEvent();
  }

  /** The model can generate. */
  done(): void {
    if (this.ended) return;
    const t = this.totals();
    this.emit({ phase: 'done', bytesDone: t.bytes, bytesTotal: t.bytes, tensorsDone: t.tensorsTotal, tensorsTotal: t.tensorsTotal }, 1);
    this.ended = true;
  }

  private totals() {
    let bytes = 0;
    let bytesDone = 0;
    let tensorsDone = 0;
    let tensorsTotal = 0;
    for (const m of this.models) {
      bytes += m.cache.total + m.weights.total;
      bytesDone += m.cache.done + m.weights.done;
      tensorsDone += m.tensorsDone;
      tensorsTotal += m.tensorsTotal;
    }
    return { bytes, bytesDone, tensorsDone, tensorsTotal };
  }

  private compileEvent(): void {
    if (this.ended) return;
    const t = this.totals();
    this.emit({
      phase: 'compile',
      bytesDone: t.bytesDone,
      bytesTotal: t.bytes,
      tensorsDone: t.tensorsDone,
      tensorsTotal: t.tensorsTotal,
      pipelinesDone: this.pipelinesDone,
      pipelinesTotal: this.pipelinesMade,
    });
  }

  private current(): number {
    const n = this.models.length;
    let download = 0;
    let quantize = 0;
    let quantizeWork = false;
    for (const m of this.models) {
      const bytes = m.cache.total + m.weights.total;
      download += m.finished ? 1 : bytes > 0 ? (m.cache.done + m.weights.done) / bytes : 0;
      if (m.quantize.total > 0) quantizeWork = true;
      quantize += m.finished ? 1 : m.quantize.total > 0 ? m.quantize.done / m.quantize.total : 0;
    }
    const compileWork = !this.sealed || this.pipelinesMade > 0;
    const compile = this.sealed ? (this.pipelinesMade > 0 ? this.pipelinesDone / this.pipelinesMade : 1) : 0;
    // a phase known to have no work gives its share to the others
    const sq = quantizeWork || !this.models.every((m) => m.finished) ? SHARE.quantize : 0;
    const sc = compileWork ? SHARE.compile : 0;
    const total = SHARE.download + sq + sc;
    return (SHARE.download * (download / n) + sq * (quantize / n) + sc * compile) / total;
  }

  private emit(p: LoadProgress, fraction?: number): void {
    if (!this.onProgress) return;
    // never backwards; 1 only with 'done'
    this.fraction = Math.max(this.fraction, fraction ?? Math.min(0.99, this.current()));
    this.onProgress({ ...p, fraction: this.fraction });
  }
}
