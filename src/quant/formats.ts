/** Registers every weight format nibble ships (import for its side effects). */
import './f32.ts';
