/**
 * The hub mirror's view of its folder (src/node/hub-server.ts): repos `<root>/<org>/<name>`, their
 * files, hashes and fake commits, and the containment rule: nothing is served or listed whose real
 * path (symlinks resolved) lies outside the root, nor any file or folder whose name starts with ".".
 */
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isInside } from './static.ts';

export interface Repo {
  /** `org/name` */
  id: string;
  /** Its folder's real path. */
  dir: string;
}

export interface RepoFile {
  rfilename: string;
  size: number;
  mtimeMs: number;
}

function hashFile(path: string, kind: 'sha256' | 'git', size: number): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash(kind === 'sha256' ? 'sha256' : 'sha1');
    if (kind === 'git') h.update(`blob ${size}\0`);
    const rs = createReadStream(path, { highWaterMark: 1 << 20 });
    rs.on('data', (c) => h.update(c));
    rs.on('error', rej);
    rs.on('end', () => res(h.digest('hex')));
  });
}

/** A single path segment that names something servable (not hidden, no separators, no NUL). */
export function safeName(s: string | undefined): s is string {
  return !!s && !s.startsWith('.') && !s.includes('\\') && !s.includes('\0') && !s.includes('/');
}

/** Decoded URL segments of a file path → its safe segments; null if any is hidden, `..` or odd. */
export function safeFileSegments(parts: string[]): string[] | null {
  const out: string[] = [];
  for (const p of parts) {
    for (const s of p.split('/')) {
      if (s === '') continue;
      if (s.startsWith('.') || s.includes('\\') || s.includes('\0')) return null; // hidden, '..', odd
      out.push(s);
    }
  }
  return out.length > 0 ? out : null;
}

export class RepoFolder {
  readonly root: string;
  private readonly realRoot: string;
  /** `${kind}:${path}` → the hash of the file at (size, mtime) `key`. */
  private readonly hashes = new Map<string, { key: string; value: Promise<string> }>();
  private readonly commits = new Map<string, { at: number; value: Promise<string> }>();

  constructor(root: string, realRoot: string) {
    this.root = root;
    this.realRoot = realRoot;
  }

  static async open(root: string): Promise<RepoFolder> {
    return new RepoFolder(root, await realpath(root));
  }

  /** The real path of `p` if it exists and lies inside the root, else null. */
  async inRoot(p: string): Promise<string | null> {
    try {
      const real = await realpath(p);
      return isInside(real, this.realRoot) ? real : null;
    } catch {
      return null;
    }
  }

  async findRepo(org: string | undefined, name: string | undefined): Promise<Repo | null> {
    if (!safeName(org) || !safeName(name)) return null;
    const dir = await this.inRoot(join(this.root, org, name));
    if (!dir) return null; // missing, or a symlinked repo pointing out of the mirror
    try {
      if ((await stat(dir)).isDirectory()) return { id: `${org}/${name}`, dir };
    } catch {
      // missing
    }
    return null;
  }

  /** The token of a gated repo (its `.gated` file), or null when it is not gated. */
  async gateToken(repo: Repo): Promise<string | null> {
    try {
      return (await readFile(join(repo.dir, '.gated'), 'utf8')).trim();
    } catch {
      return null;
    }
  }

  /** A repo file's real path and stats, or null when it is missing, not a file or outside the root. */
  async file(repo: Repo, parts: string[]): Promise<{ abs: string; st: Stats } | null> {
    const abs = await this.inRoot(join(repo.dir, ...parts));
    if (!abs) return null;
    try {
      const st = await stat(abs);
      return st.isFile() ? { abs, st } : null;
    } catch {
      return null;
    }
  }

  /** sha256 or git blob sha1 of a file, computed once per (path, size, mtime). */
  fileHash(path: string, st: Stats, kind: 'sha256' | 'git'): Promise<string> {
    const cacheKey = `${kind}:${path}`;
    const key = `${st.size}:${st.mtimeMs}`;
    const hit = this.hashes.get(cacheKey);
    if (hit && hit.key === key) return hit.value;
    const value = hashFile(path, kind, st.size);
    this.hashes.set(cacheKey, { key, value });
    value.catch(() => this.hashes.delete(cacheKey));
    return value;
  }

  /** Every servable file below `dir`, sorted by name. */
  async listFiles(dir: string): Promise<RepoFile[]> {
    const out: RepoFile[] = [];
    const walk = async (d: string, prefix: string) => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        if (e.name.startsWith('.')) continue;
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p, `${prefix}${e.name}/`);
        else await this.addFile(out, p, `${prefix}${e.name}`);
      }
    };
    await walk(dir, '');
    return out.sort((a, b) => (a.rfilename < b.rfilename ? -1 : a.rfilename > b.rfilename ? 1 : 0));
  }

  private async addFile(out: RepoFile[], p: string, rfilename: string): Promise<void> {
    try {
      const real = await this.inRoot(p);
      if (!real) return; // a symlink out of the mirror: not listed
      const st = await stat(real);
      if (st.isFile()) out.push({ rfilename, size: st.size, mtimeMs: st.mtimeMs });
    } catch {
      // vanished while listing
    }
  }

  /** Fake commit sha: sha1 over the repo id and its file listing (names, sizes, mtimes); cached 1 s. */
  repoCommit(repo: Repo): Promise<string> {
    const hit = this.commits.get(repo.dir);
    const now = Date.now();
    if (hit && now - hit.at < 1000) return hit.value;
    const value = this.listFiles(repo.dir).then((files) => {
      const h = createHash('sha1').update(`nibble-hub\0${repo.id}\0`);
      for (const f of files) h.update(`${f.rfilename}\0${f.size}\0${Math.floor(f.mtimeMs)}\n`);
      return h.digest('hex');
    });
    this.commits.set(repo.dir, { at: now, value });
    value.catch(() => this.commits.delete(repo.dir));
    return value;
  }
}
