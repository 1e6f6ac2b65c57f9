/**
 * Stop strings over streamed text. Text arrives in pieces (one per token, or fewer when a
 * character spans several tokens); a stop string may start in one piece and end in a later one.
 * `push` returns the text that is safe to show: everything before the earliest stop string once
 * one appears, and otherwise everything except the longest tail that could still be the start
 * of a stop string (held back until the next piece decides). The stop string itself and any text
 * after it are never emitted.
 */
export class StopStringMatcher {
  private readonly stops: string[];
  private held = '';
  /** The stop string that matched (after which push returns ''). */
  matched: string | null = null;

  constructor(stops: readonly string[]) {
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
  }

  get active(): boolean {
    return this.stops.length > 0;
  }

  push(text: string): string {
    if (this.matched !== null) return '';
    if (!this.stops.length) return text;
    const buf = this.held + text;
    // earliest occurrence wins; at one index, the longest stop string
    let at = -1;
    let which: string | null = null;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > which!.length))) {
        at = i;
        which = s;
      }
    }
    if (which !== null) {
      this.matched = which;
      this.held = '';
      return buf.slice(0, at);
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let l = Math.min(s.length - 1, buf.length); l > hold; l--) {
        if (buf.endsWith(s.slice(0, l))) {
          hold = l;
          break;
        }
      }
    }
    this.held = buf.slice(buf.length - hold);
    return buf.slice(0, buf.length - hold);
  }

  /** At the end of generation: the held-back tail (it did not turn into a stop string). */
  flush(): string {
    if (this.matched !== null) return '';
    const t = this.held;
    this.held = '';
    return t;
  }
}
