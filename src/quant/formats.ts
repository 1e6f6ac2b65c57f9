/** Registers every weight format nibble ships (import for its side effects). */
import './f32.ts';
import './f16.ts';
import './int8.ts';
import './nf4.ts';
