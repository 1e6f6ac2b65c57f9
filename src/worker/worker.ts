/**
 * The dedicated worker script of WorkerEngine (src/worker/client.ts): it hosts nibble's Engine and
 * answers the page's requests. Built into the package beside dist/worker.js; a custom worker script
 * can do the same with `exposeEngine()` from src/worker/host.ts.
 */
import { exposeEngine } from './host.ts';

exposeEngine();
