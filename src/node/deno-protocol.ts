/**
 * The Deno host's wire protocol (src/deno/main.ts ↔ src/node/deno.ts): JSON lines over the
 * process's stdin and stdout, one message a line. The jobs and their replies are the runner's
 * (src/runner.ts); a job's `id` pairs it with its reply, so jobs may overlap (`abort` during `chat`).
 */
import type { Job, Reply, RunnerEvent } from '../runner.ts';

/** Host → Deno: one job. */
export interface JobMessage {
  id: number;
  job: Job;
}

/** Deno → host: `ready` once (the runner is loaded), then each job's `reply` and the jobs' events. */
export type HostMessage = { ready: true } | { id: number; reply: Reply<unknown> } | { event: RunnerEvent } | { fatal: string };

/** Every protocol line on stdout starts with this (anything else there is ignored as log output). */
export const LINE_PREFIX = '\u0001nibble ';
