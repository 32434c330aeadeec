/**
 * Unicode normalisation puts each run of combining marks in canonical order by an insertion sort, in time that grows
 * with the square of the run: 8,000 marks of two classes in a 16 KB login held the event loop 0.1-1 s (found from
 * outside). UAX #15's stream-safe text holds at most 30 in a row, more than any script is written with; a text with a
 * longer run is never normalised, and refused wherever normalising it would be the next step.
 */
export const MAX_COMBINING_RUN = 30;

// Marks, and the two letters that NFKC makes marks of (the half-width katakana voiced sound marks, U+FF9E and U+FF9F,
// become U+3099 and U+309A): the characters whose decompositions begin with a non-starter (review).
const LONG_COMBINING_RUN = new RegExp(`[\\p{M}\\uFF9E\\uFF9F]{${MAX_COMBINING_RUN + 1}}`, 'u');

/** Whether the text holds more than MAX_COMBINING_RUN combining marks in a row: in linear time. */
export const hasLongCombiningRun = (text: string): boolean => LONG_COMBINING_RUN.test(text);
