import { NibbleError } from '../errors.ts';

/** JSON.parse of a model file's text; a syntax error is 'bad-config' naming `what` (the file, and where it is). */
export function parseJsonText(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new NibbleError('bad-config', `${what} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}
