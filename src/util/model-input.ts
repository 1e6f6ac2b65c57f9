/**
 * What a caller passes as a model, read without the engine: a Hub id, or picked Files. Imports
 * nothing but NibbleError, so the page side of WorkerEngine shares it with the sources.
 */
import { NibbleError, show } from '../errors.ts';

const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

/** Whether `model` reads as a Hub repo id ("org/name") rather than a URL or path. */
export function isHubId(model: string): boolean {
  return HUB_ID.test(model) && !model.startsWith('.');
}

/**
 * The path of a picked file inside the model folder. A directory pick gives
 * `webkitRelativePath` = "<picked folder>/sub/file"; the picked folder is the model root, so
 * its name is dropped. Plain file picks have an empty webkitRelativePath: use the name.
 */
function relativePath(f: File): string {
  const rel = (f as { webkitRelativePath?: string }).webkitRelativePath;
  if (rel) {
    const slash = rel.indexOf('/');
    return slash >= 0 ? rel.slice(slash + 1) : rel;
  }
  return f.name;
}

/**
 * Picked Files as the model folder's paths → Blobs, and a description naming the picked folder
 * (shared with WorkerEngine, which maps them on the page: a File's webkitRelativePath does not
 * survive the trip to a worker).
 */
export function pickedFiles(files: ArrayLike<File>): { blobs: Map<string, Blob>; description: string } {
  const blobs = new Map<string, Blob>();
  let folder: string | undefined;
  for (const f of Array.from(files)) {
    if (!(f instanceof Blob)) throw new NibbleError('bad-argument', `model files must be File objects, got ${show(f)}`);
    blobs.set(relativePath(f), f);
    const rel = (f as { webkitRelativePath?: string }).webkitRelativePath;
    if (rel && rel.includes('/')) folder ??= rel.slice(0, rel.indexOf('/'));
  }
  return { blobs, description: folder ? `picked folder "${folder}"` : 'picked files' };
}
